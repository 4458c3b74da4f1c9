package boot

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultAskDir is where systemd's password requests appear.
const DefaultAskDir = "/run/systemd/ask-password"

// AskRequest is one ask.* file of systemd's password agent protocol.
type AskRequest struct {
	File     string    // the ask.* file
	ID       string    // Id=, e.g. "cryptsetup:/dev/sda2"
	Socket   string    // Socket=: the SOCK_DGRAM socket to answer on
	NotAfter time.Time // NotAfter= on the wall clock; zero means no limit
	Message  string
}

// ParseAsk reads an ask file. NotAfter= is CLOCK_MONOTONIC microseconds;
// it is converted to a wall-clock time.
func ParseAsk(r io.Reader) (AskRequest, error) {
	var q AskRequest
	sc := bufio.NewScanner(r)
	section := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "Ask" {
			continue
		}
		switch k {
		case "Id":
			q.ID = v
		case "Socket":
			q.Socket = v
		case "Message":
			q.Message = v
		case "NotAfter":
			us, err := strconv.ParseUint(v, 10, 64)
			if err == nil && us > 0 {
				q.NotAfter = monotonicToWall(time.Duration(us) * time.Microsecond)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return q, err
	}
	if q.Socket == "" {
		return q, fmt.Errorf("ask file has no Socket=")
	}
	return q, nil
}

func monotonicToWall(at time.Duration) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Time{}
	}
	now := time.Duration(ts.Nano())
	return time.Now().Add(at - now)
}

// Agent is a systemd password agent for bound volumes: it watches Dir for
// ask.* files whose Id= is "cryptsetup:<device or volume>", recovers the
// volume's key from its bindings and answers with one datagram
// "+passphrase" on the request's socket. Requests for other things, and
// volumes without bindings, are left to the other agents (the console
// prompt, plymouth).
type Agent struct {
	Dir       string        // "" means DefaultAskDir
	Crypttab  string        // to find volumes named in Id=; "" means /etc/crypttab
	Recoverer Recoverer     // nil means TokenRecoverer{}
	Deadline  time.Duration // per request, also bounded by NotAfter=; 0 means DefaultDeadline
	Poll      time.Duration // how often Dir is scanned; 0 means 250ms
	// Idle makes Run return after that long without any ask file (so a
	// path unit can start the agent again); 0 means never.
	Idle time.Duration
	// Behind, when not zero, keeps a request going after Deadline: the
	// reason it was not answered is logged once, and tether tries again,
	// waiting up to MaxRetryBackoff between attempts, while the request
	// is still there (the prompt beside it not answered) and for at most
	// Behind; negative is for as long as the request lasts. It is the
	// initramfs's "race the prompt" (tether.retry=).
	Behind time.Duration
	// Net, if set, is asked first why a volume whose bindings need the
	// network was not opened: "no DHCP lease on enp0s4 after 20s" says
	// more than the server's address that could not be reached.
	Net *EarlyNet
	Log *log.Logger

	mu       sync.Mutex
	seen     map[string]bool // ask files taken up
	attempts map[string]int  // answers sent per Id
}

// maxAnswers bounds how often one Id is answered: if systemd asks again,
// the key we sent did not open the volume, and asking the server again
// will not change that.
const maxAnswers = 2

func (a *Agent) logf(format string, args ...any) {
	l := a.Log
	if l == nil {
		l = log.Default()
	}
	l.Printf(format, args...)
}

// Run answers requests until ctx is done. With once, it takes up the
// requests present now, answers them and returns.
func (a *Agent) Run(ctx context.Context, once bool) error {
	dir := a.Dir
	if dir == "" {
		dir = DefaultAskDir
	}
	poll := a.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	lastSeen := time.Now()
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "ask.*"))
		if len(files) > 0 {
			lastSeen = time.Now()
		} else if a.Idle > 0 && time.Since(lastSeen) > a.Idle {
			return nil
		}
		for _, f := range files {
			if a.take(f) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a.answer(ctx, f)
				}()
			}
		}
		if once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

func (a *Agent) take(f string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen, a.attempts = map[string]bool{}, map[string]int{}
	}
	if a.seen[f] {
		return false
	}
	a.seen[f] = true
	return true
}

func (a *Agent) answer(ctx context.Context, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		return // answered or withdrawn meanwhile
	}
	q, err := ParseAsk(strings.NewReader(string(data)))
	if err != nil {
		a.logf("askpass: %s: %v", file, err)
		return
	}
	q.File = file
	target, ok := strings.CutPrefix(q.ID, "cryptsetup:")
	if !ok {
		return // not a volume: leave it to other agents
	}
	a.mu.Lock()
	a.attempts[q.ID]++
	n := a.attempts[q.ID]
	a.mu.Unlock()
	if n > maxAnswers {
		a.logf("askpass: %s: asked again after %d answers: the recovered key does not open it; leaving it to the prompt", q.ID, maxAnswers)
		return
	}
	deadline := a.Deadline
	if deadline <= 0 {
		deadline = DefaultDeadline
	}
	until := time.Now().Add(deadline)
	if !q.NotAfter.IsZero() && q.NotAfter.Before(until) {
		until = q.NotAfter
	}
	parent := ctx
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	// Stop when the request goes away (answered by another agent, timed out).
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(file); err != nil {
				cancel()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	start := time.Now()
	try := func(ctx context.Context) (Key, error) {
		dev, err := a.device(target)
		if err != nil {
			return Key{}, err
		}
		r := a.Recoverer
		if r == nil {
			r = TokenRecoverer{}
		}
		return r.Recover(ctx, dev)
	}
	key, err := Retry(ctx, 0, 0, try)
	if err != nil && a.Behind != 0 && !IsPermanent(err) && ctx.Err() != nil && parent.Err() == nil && exists(file) {
		a.logf("askpass: %s: not opened unattended within %s: %s; still trying behind the prompt", q.ID, deadline, a.reason(ctx, target, err, time.Since(start)))
		bctx, bcancel := context.WithCancel(parent)
		if a.Behind > 0 {
			bctx, bcancel = context.WithTimeout(parent, a.Behind)
		}
		defer bcancel()
		if !q.NotAfter.IsZero() {
			var c context.CancelFunc
			bctx, c = context.WithDeadline(bctx, q.NotAfter)
			defer c()
		}
		go func() {
			for bctx.Err() == nil {
				if !exists(file) {
					bcancel()
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
		key, err = Retry(bctx, time.Second, MaxRetryBackoff, try)
	}
	if err != nil {
		if _, serr := os.Stat(file); serr != nil {
			a.logf("askpass: %s: request withdrawn after %s (answered elsewhere or timed out)", q.ID, time.Since(start).Round(time.Millisecond))
			return
		}
		a.logf("askpass: %s: no answer sent after %s: %v", q.ID, time.Since(start).Round(time.Millisecond), err)
		return
	}
	defer clear(key.Passphrase)
	msg := make([]byte, 0, 1+len(key.Passphrase))
	msg = append(append(msg, '+'), key.Passphrase...)
	defer clear(msg)
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: q.Socket, Net: "unixgram"})
	if err == nil {
		_, err = c.Write(msg)
		c.Close()
	}
	if err != nil {
		a.logf("askpass: %s: could not answer on %s: %v", q.ID, q.Socket, err)
		return
	}
	a.logf("askpass: %s: answered (token %d, keyslot %d) after %s", q.ID, key.Token, key.Slot, time.Since(start).Round(time.Millisecond))
}

// reason names why target was not opened: the network first, when its
// bindings need one and none is configured (since is how long it has been
// waited for).
func (a *Agent) reason(ctx context.Context, target string, err error, since time.Duration) string {
	if a.Net != nil {
		br, ok := a.Recoverer.(BindingReader)
		if a.Recoverer == nil {
			br, ok = TokenRecoverer{}, true
		}
		if dev, derr := a.device(target); ok && derr == nil {
			if bs, berr := br.Bindings(context.WithoutCancel(ctx), dev); berr == nil && NeedsNetwork(bs) {
				if np := a.Net.Problem(since); np != "" {
					return np
				}
			}
		}
	}
	return Reason(err)
}

// device maps what follows "cryptsetup:" in Id= to a device: systemd puts
// the source device there; a crypttab volume name is accepted too.
func (a *Agent) device(target string) (string, error) {
	if strings.HasPrefix(target, "/") {
		return ResolveDevice(target)
	}
	tab := a.Crypttab
	if tab == "" {
		tab = "/etc/crypttab"
	}
	ent, err := LookupVolume(tab, target)
	if err != nil {
		if strings.Contains(target, "=") {
			return ResolveDevice(target) // UUID=... named directly
		}
		return "", &PermanentError{Err: err}
	}
	return ResolveDevice(ent.Device)
}

func exists(file string) bool {
	_, err := os.Stat(file)
	return err == nil
}
