package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/luks"
)

// BindingReader lists a device's bindings (TokenRecoverer does).
type BindingReader interface {
	Bindings(ctx context.Context, device string) ([]luks.Binding, error)
}

// EarlyUnlock is tether's part of an initramfs boot (initramfs-tools'
// local-top, before cryptroot): it opens the bound volumes it can within
// one budget — network, name resolution and servers included — then
// leaves the rest to cryptroot's prompt and, if asked, keeps trying behind
// it (Retry), giving a recovered key to the prompt through its FIFO.
type EarlyUnlock struct {
	Crypttab []CrypttabEntry
	Names    []string // only these volumes; none means all
	Config   InitramfsConfig

	Recoverer Recoverer
	Bindings  BindingReader
	Opener    Opener
	Console   *Console
	Net       EarlyNet
	// Network brings the network up in the background; nil means the
	// network is never started (it is up already, or cannot be).
	Network *NetStarter
	// ResolvConf is written from the leases ("" means /etc/resolv.conf).
	ResolvConf string
	// Check, if set, verifies a key before it goes to a prompt: cryptroot
	// counts a wrong key as one of the person's tries.
	Check   func(ctx context.Context, device string, key Key) error
	Proc    string                            // "" means /proc
	Mapper  string                            // "" means /dev/mapper
	Resolve func(spec string) (string, error) // nil means ResolveDevice
}

// Pending is a bound volume left closed by the first phase.
type Pending struct {
	Name, Spec, Device string
	NeedsNet           bool
	Reason             string
}

func (u *EarlyUnlock) mapperExists(name string) bool {
	dir := u.Mapper
	if dir == "" {
		dir = "/dev/mapper"
	}
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

func (u *EarlyUnlock) resolve(spec string) (string, error) {
	if u.Resolve != nil {
		return u.Resolve(spec)
	}
	return ResolveDevice(spec)
}

// writeResolv keeps /etc/resolv.conf in step with the leases, so Go's
// resolver finds the name servers DHCP (or ip=) gave.
func (u *EarlyUnlock) writeResolv() {
	ls := u.Net.Leases()
	if len(ls) == 0 {
		return
	}
	p := u.ResolvConf
	if p == "" {
		p = "/etc/resolv.conf"
	}
	data := ResolvConf(ls)
	if old, err := os.ReadFile(p); err == nil && string(old) == string(data) {
		return
	}
	os.MkdirAll(filepath.Dir(p), 0o755)
	atomicfile.Write(p, data, 0o644)
}

// netProblem is why the network is not usable, or "".
func (u *EarlyUnlock) netProblem() string {
	since := time.Duration(0)
	if u.Network != nil {
		since = u.Network.Since()
	}
	return u.Net.Problem(since)
}

// Run is the first phase: every bound, closed volume at once, all within
// Config.Deadline from now. It returns the volumes left closed that may
// still open later (not those refused for good).
func (u *EarlyUnlock) Run(ctx context.Context) []Pending {
	start := time.Now()
	u.Console.Note("tether: unlocking bound volumes (deadline %s)", u.Config.Deadline)
	dctx, cancel := context.WithDeadline(ctx, start.Add(u.Config.Deadline))
	defer cancel()
	want := map[string]bool{}
	for _, n := range u.Names {
		want[n] = true
	}
	var mu sync.Mutex
	var pending []Pending
	var wg sync.WaitGroup
	for _, e := range u.Crypttab {
		if len(want) > 0 && !want[e.Name] || u.mapperExists(e.Name) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, ok := u.first(dctx, e, start)
			if ok {
				mu.Lock()
				pending = append(pending, p)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return pending
}

// first works on one volume until it is open or the deadline passes.
func (u *EarlyUnlock) first(ctx context.Context, e CrypttabEntry, start time.Time) (Pending, bool) {
	p := Pending{Name: e.Name, Spec: e.Device}
	var bs []luks.Binding
	var lastErr error
	wait := 250 * time.Millisecond
	for {
		if p.Device == "" {
			if d, err := u.resolve(e.Device); err == nil {
				p.Device = d
			} else {
				lastErr = err
			}
		}
		if p.Device != "" && bs == nil {
			b, err := u.Bindings.Bindings(ctx, p.Device)
			switch {
			case err == nil && len(b) == 0:
				return p, false // not ours: cryptroot's prompt as usual
			case err == nil:
				bs = b
				p.NeedsNet = NeedsNetwork(bs)
				if p.NeedsNet && u.Network != nil {
					u.Network.Ensure()
				}
			case IsPermanent(err):
				return p, false // not LUKS2, or mid-reencryption: not ours
			default:
				lastErr = err
			}
		}
		if bs != nil {
			u.writeResolv()
			key, err := u.Recoverer.Recover(ctx, p.Device)
			if err == nil {
				err = u.Opener.Open(ctx, p.Device, e.Name, key)
				clear(key.Passphrase)
				if err == nil {
					u.Console.Say("tether: opened %s as /dev/mapper/%s (keyslot %d) after %s", p.Device, e.Name, key.Slot, since(start))
					return p, false
				}
				if u.mapperExists(e.Name) {
					return p, false
				}
			}
			lastErr = err
			if IsPermanent(err) || isPermanentRecover(err) {
				u.Console.Say("tether: %s (%s) cannot be unlocked by its bindings: %s; it needs the passphrase (tether stopped trying)", e.Name, p.Device, Reason(err))
				return p, false
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
				return p, false
			}
			p.Reason = u.reason(p, lastErr)
			dev := p.Device
			if dev == "" {
				dev = e.Device
			}
			next := "type the passphrase; tether keeps trying behind the prompt"
			if u.Config.Retry == 0 {
				next = "type the passphrase (tether.retry=no: tether stopped trying)"
			}
			u.Console.Say("tether: %s (%s) not unlocked within %s: %s; %s", e.Name, dev, u.Config.Deadline, p.Reason, next)
			return p, p.Device != "" && bs != nil
		case <-t.C:
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// sameReason is a reason without its numbers (times, counts, ports of the
// moment), so a reason that only counts on is not printed again.
func sameReason(r string) string {
	return strings.Map(func(c rune) rune {
		if c >= '0' && c <= '9' {
			return '#'
		}
		return c
	}, r)
}

func isPermanentRecover(err error) bool {
	var re *RecoverError
	return errors.As(err, &re) && re.Permanent()
}

// reason names why a volume is still closed: the network first when its
// bindings need it.
func (u *EarlyUnlock) reason(p Pending, err error) string {
	if p.NeedsNet {
		if np := u.netProblem(); np != "" {
			return np
		}
	}
	if err == nil {
		return "no binding answered yet"
	}
	if errors.Is(err, ErrNoDevice) {
		return fmt.Sprintf("device %s did not appear", p.Spec)
	}
	return Reason(err)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// Retry is the second phase, run behind cryptroot's prompt: each pending
// volume is tried again with backoff (capped at MaxRetryBackoff) until its
// mapping exists — opened by the typed passphrase or by the key tether
// gave the prompt — or its bindings refuse for good, or Config.Retry
// passes. A recovered key goes to the askpass process that asks for that
// volume (never opened directly: cryptroot owns the volume once it asks).
func (u *EarlyUnlock) Retry(ctx context.Context, pending []Pending) {
	if u.Config.Retry > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, u.Config.Retry)
		defer cancel()
	}
	var wg sync.WaitGroup
	for _, p := range pending {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.retryOne(ctx, p)
		}()
	}
	wg.Wait()
}

func (u *EarlyUnlock) retryOne(ctx context.Context, p Pending) {
	start := time.Now()
	wait := time.Second
	last := p.Reason
	fed := map[int]bool{}
	for {
		if u.mapperExists(p.Name) {
			if len(fed) == 0 {
				u.Console.Say("tether: %s was opened at the prompt; tether stopped trying", p.Name)
			}
			return
		}
		if p.NeedsNet && u.Network != nil && len(u.Net.Leases()) == 0 {
			u.Network.Ensure()
		}
		u.writeResolv()
		key, err := u.Recoverer.Recover(ctx, p.Device)
		if err == nil && u.Check != nil {
			if cerr := u.Check(ctx, p.Device, key); cerr != nil && ctx.Err() == nil {
				clear(key.Passphrase)
				u.Console.Say("tether: %s: the key its binding gave does not open keyslot %d (%v); only the passphrase opens it now", p.Name, key.Slot, cerr)
				return
			}
		}
		if err == nil {
			done, ferr := u.feed(ctx, p, key, fed, start)
			clear(key.Passphrase)
			if done {
				return
			}
			err = ferr
		}
		if ctx.Err() != nil {
			if u.Config.Retry > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				u.Console.Say("tether: %s: stopped trying after %s (tether.retry=%s); only the passphrase opens it now", p.Name, u.Config.Retry, FormatRetry(u.Config.Retry))
			}
			return
		}
		if err != nil && (IsPermanent(err) || isPermanentRecover(err)) {
			u.Console.Say("tether: %s: its bindings refused for good: %s; only the passphrase opens it now", p.Name, Reason(err))
			return
		}
		if err != nil {
			if r := u.reason(p, err); sameReason(r) != sameReason(last) {
				last = r
				u.Console.Say("tether: %s: still not unlocked (%s); retrying", p.Name, r)
			}
		}
		// Sleep, but notice at once when the passphrase was typed.
		end := time.Now().Add(wait)
		for time.Now().Before(end) && !u.mapperExists(p.Name) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
		wait = min(wait*2, MaxRetryBackoff)
	}
}

// feed gives key to the prompt for p. It reports done when the volume is
// open (or can never be by this key).
func (u *EarlyUnlock) feed(ctx context.Context, p Pending, key Key, fed map[int]bool, start time.Time) (bool, error) {
	for {
		if u.mapperExists(p.Name) {
			if len(fed) > 0 {
				u.Console.Say("tether: %s unlocked by its binding behind the prompt, %s after the prompt appeared", p.Name, since(start))
			} else {
				u.Console.Say("tether: %s was opened at the prompt; tether stopped trying", p.Name)
			}
			return true, nil
		}
		if a, ok := FindAsker(u.Proc, p.Name, p.Device); ok && !fed[a.PID] {
			// Once only: if cryptroot asks again, the key did not open
			// the volume, and each wrong key costs the person a try.
			if len(fed) > 0 {
				u.Console.Say("tether: %s: the key its binding gave was refused; only the passphrase opens it now", p.Name)
				return true, nil
			}
			fed[a.PID] = true
			if err := a.Feed(key.Passphrase); err != nil && !errors.Is(err, ErrNoReader) {
				return false, err
			}
			u.Console.Say("tether: %s: key recovered from its binding; giving it to the passphrase prompt", p.Name)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// NetStarter brings the initramfs network up in the background, at most
// one attempt at a time, across tether's processes (a pid file says which
// attempt runs, a start file when the first began).
type NetStarter struct {
	Command func() *exec.Cmd // the network setup, e.g. initramfs-tools' configure_networking
	Dir     string           // the pid and start files; "" means /run/tether
	mu      sync.Mutex
	lastTry time.Time
}

func (s *NetStarter) dir() string {
	if s.Dir == "" {
		return "/run/tether"
	}
	return s.Dir
}

// Since is how long ago the network was first started; 0 if never.
func (s *NetStarter) Since() time.Duration {
	data, err := os.ReadFile(filepath.Join(s.dir(), "net.start"))
	if err != nil {
		return 0
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0
	}
	return time.Since(time.Unix(0, ns))
}

// Started reports whether tether started the network in this boot.
func (s *NetStarter) Started() bool {
	_, err := os.Stat(filepath.Join(s.dir(), "net.start"))
	return err == nil
}

// Running reports whether the setup started last is still running.
func (s *NetStarter) Running() bool {
	pid := readPID(filepath.Join(s.dir(), "net.pid"))
	return pid > 0 && syscall.Kill(pid, 0) == nil && !zombie(pid)
}

// Ensure starts the setup unless it runs already; a setup that ended (no
// lease within its own limits) is started again, at most every 10 s.
func (s *NetStarter) Ensure() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Running() || time.Since(s.lastTry) < 10*time.Second {
		return
	}
	s.lastTry = time.Now()
	os.MkdirAll(s.dir(), 0o755)
	cmd := s.Command()
	// Its own process group, so that stopping it also stops ipconfig.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return
	}
	if !s.Started() {
		os.WriteFile(filepath.Join(s.dir(), "net.start"), []byte(strconv.FormatInt(time.Now().UnixNano(), 10)), 0o644)
	}
	os.WriteFile(filepath.Join(s.dir(), "net.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	// Reap it when it ends; nothing waits for its result but the leases.
	go cmd.Wait()
}

func readPID(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}
