package boot

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// KeyServer serves volume keys to systemd-cryptsetup through the crypttab
// AF_UNIX key-file protocol (systemd ≥ 248): the client binds its end of
// the connection to the abstract name "@<16 hex digits>/cryptsetup/<volume>",
// connects, shuts down its writing side and reads the key until EOF.
//
// KeyServer learns the volume from that peer name, looks it up in crypttab,
// recovers the key from the volume's bindings and writes it. There is no
// read timeout on the client's side, so KeyServer holds the connection and
// retries (with backoff) while the network comes up or a server restarts;
// when Deadline passes it closes the connection without a key, and
// systemd-cryptsetup falls back to its next method (the password prompt).
type KeyServer struct {
	Crypttab  string        // path of crypttab; "" means /etc/crypttab
	Recoverer Recoverer     // nil means TokenRecoverer{}
	Deadline  time.Duration // per connection; 0 means DefaultDeadline
	// MinBackoff and MaxBackoff bound the wait between attempts; zero
	// values mean 250ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	Log                    *log.Logger // nil means log.Default()
	// Resolve turns crypttab's device field into a path; nil means
	// ResolveDevice.
	Resolve func(spec string) (string, error)
}

// DefaultDeadline bounds how long one volume's key is waited for: long
// enough for a network to come up at boot, short enough that a dead
// server does not stall the boot (it then falls back to the prompt).
const DefaultDeadline = 90 * time.Second

// VolumeFromPeer extracts the volume name from the abstract socket name
// systemd-cryptsetup binds its end to: "@<random>/cryptsetup/<volume>".
// systemd formats the random part with "%lx": usually 16 hex digits, but
// fewer when the number has leading zeros. (Parsed by hand, not with a
// regexp, which would cost every tether command its compile at start.)
func VolumeFromPeer(name string) (string, error) {
	random, volume, ok := strings.Cut(strings.TrimPrefix(name, "@"), "/cryptsetup/")
	if !ok || !strings.HasPrefix(name, "@") || len(random) < 1 || len(random) > 16 ||
		strings.TrimLeft(random, "0123456789abcdefABCDEF") != "" ||
		volume == "" || strings.ContainsRune(volume, '\n') {
		return "", fmt.Errorf("peer %q is not systemd-cryptsetup (want the abstract name @<hex>/cryptsetup/<volume>)", name)
	}
	return volume, nil
}

func (s *KeyServer) logf(format string, a ...any) {
	l := s.Log
	if l == nil {
		l = log.Default()
	}
	l.Printf(format, a...)
}

// Serve accepts connections on l until ctx is done or l fails, answering
// each in its own goroutine. It waits for the answers in flight before it
// returns.
func (s *KeyServer) Serve(ctx context.Context, l *net.UnixListener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on %s: %w", l.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, c)
		}()
	}
}

func (s *KeyServer) handle(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	peer := ""
	if a, ok := c.RemoteAddr().(*net.UnixAddr); ok && a != nil {
		peer = a.Name
	}
	vol, err := VolumeFromPeer(peer)
	if err != nil {
		s.logf("keyd: refused a connection: %v", err)
		return
	}
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go watchHangup(ctx, c, cancel)
	key, err := s.KeyFor(ctx, vol)
	if err != nil {
		s.logf("keyd: volume %q: no key sent after %s: %v; systemd-cryptsetup falls back to its next method (the prompt)",
			vol, time.Since(start).Round(time.Millisecond), err)
		return
	}
	defer clear(key.Passphrase)
	if _, err := c.Write(key.Passphrase); err != nil {
		s.logf("keyd: volume %q: could not send the key: %v (did systemd-cryptsetup give up?)", vol, err)
		return
	}
	s.logf("keyd: volume %q: key sent (token %d, keyslot %d) after %s", vol, key.Token, key.Slot, time.Since(start).Round(time.Millisecond))
}

// KeyFor recovers the key of crypttab volume vol, retrying with backoff
// until it succeeds, a permanent error occurs, or the deadline passes. The
// error says what was waited for and why it gave up.
func (s *KeyServer) KeyFor(ctx context.Context, vol string) (Key, error) {
	deadline := s.Deadline
	if deadline <= 0 {
		deadline = DefaultDeadline
	}
	ctx, cancel := context.WithTimeout(WithVolumeName(ctx, vol), deadline)
	defer cancel()
	return Retry(ctx, s.MinBackoff, s.MaxBackoff, func(ctx context.Context) (Key, error) {
		return s.tryOnce(ctx, vol)
	})
}

func (s *KeyServer) tryOnce(ctx context.Context, vol string) (Key, error) {
	tab := s.Crypttab
	if tab == "" {
		tab = "/etc/crypttab"
	}
	ent, err := LookupVolume(tab, vol)
	if err != nil {
		return Key{}, &PermanentError{Err: err}
	}
	resolve := s.Resolve
	if resolve == nil {
		resolve = ResolveDevice
	}
	dev, err := resolve(ent.Device)
	if err != nil {
		return Key{}, err // the device may still appear
	}
	r := s.Recoverer
	if r == nil {
		r = TokenRecoverer{}
	}
	return r.Recover(ctx, dev)
}

// Retry calls try until it succeeds, fails permanently, or ctx is done,
// waiting between attempts from lo up to hi, doubling. The error of a
// timeout names the deadline, the number of attempts and the last error.
func Retry(ctx context.Context, lo, hi time.Duration, try func(context.Context) (Key, error)) (Key, error) {
	if lo <= 0 {
		lo = 250 * time.Millisecond
	}
	if hi <= 0 {
		hi = 5 * time.Second
	}
	start := time.Now()
	wait := lo
	for attempt := 1; ; attempt++ {
		key, err := try(ctx)
		if err == nil {
			return key, nil
		}
		if IsPermanent(err) {
			return Key{}, fmt.Errorf("gave up at once: %w", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			why := "the deadline passed"
			if c := context.Cause(ctx); errors.Is(c, ErrHangup) {
				why = c.Error()
			} else if !errors.Is(c, context.DeadlineExceeded) {
				why = "tether is stopping"
			}
			return Key{}, fmt.Errorf("waited %s for the key, %d attempts, gave up because %s; last error: %w",
				time.Since(start).Round(time.Second), attempt, why, err)
		case <-t.C:
		}
		wait = min(wait*2, hi)
	}
}

// ErrHangup is the cause of giving up when the asker went away.
var ErrHangup = errors.New("systemd-cryptsetup closed the connection")

// watchHangup cancels ctx when the peer closes its end entirely (it gave
// up, or its unit was stopped): there is nobody left to send a key to.
// Its shutdown(SHUT_WR) alone is not a hang-up; POLLHUP means both
// directions are shut.
func watchHangup(ctx context.Context, c *net.UnixConn, cancel context.CancelCauseFunc) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hup := false
		rc.Control(func(fd uintptr) {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLHUP}}
			if n, err := unix.Poll(p, 0); err == nil && n > 0 && p[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
				hup = true
			}
		})
		if hup {
			cancel(ErrHangup)
			return
		}
	}
}
