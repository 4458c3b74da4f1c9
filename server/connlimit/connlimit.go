// Package connlimit shares the process's file descriptors out between the
// key server's listeners and caps each one.
//
// Every open connection costs a file descriptor, and the Tang port and the
// managed listener share the process's limit. Without caps, idle
// connections to the (unauthenticated, often public) Tang port could use
// every descriptor, and the managed API — enrolled devices' unlocks and
// the admin API — would then refuse everyone. So each listener gets a cap,
// sized from RLIMIT_NOFILE, and the managed listener's share is one the
// Tang port can never take.
package connlimit

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Budget is how the descriptor limit is shared out.
type Budget struct {
	NoFile  uint64 // the process's (soft) RLIMIT_NOFILE
	Tang    int64  // cap of the Tang listener
	Managed int64  // cap of the managed listener (0 without managed mode)
}

// Reserved are descriptors kept for everything but client connections:
// the store, key files, logs, webhooks, Tang key reloads.
const Reserved = 256

// Share shares out limit: the managed listener gets an eighth (at least
// 64) when managed mode is on, the Tang port the rest after Reserved.
func Share(limit uint64, managed bool) Budget {
	b := Budget{NoFile: limit}
	usable := int64(limit) - Reserved
	if usable < 128 {
		usable = 128 // a tiny limit: caps still bound the Tang port
	}
	if managed {
		b.Managed = max(64, usable/8)
		usable -= b.Managed
	}
	b.Tang = max(64, usable)
	return b
}

// FileLimit returns the soft descriptor limit. The Go runtime has already
// raised it to the hard limit at start (os package, since Go 1.19); this
// raises it again in case something lowered it, and reads it.
func FileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	if rl.Cur < rl.Max {
		raised := syscall.Rlimit{Cur: rl.Max, Max: rl.Max}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			rl = raised
		}
	}
	return rl.Cur
}

// Listener accepts at most max connections at once. A connection over
// the cap is accepted and closed at once (leaving it in the kernel's
// backlog would keep the client waiting and the queue full), counted, and
// logged at most every 10 s.
type Listener struct {
	net.Listener
	name    string
	max     int64
	open    atomic.Int64
	refused atomic.Uint64
	log     *slog.Logger
	logMu   sync.Mutex
	logged  time.Time
	logN    uint64
}

// New caps ln at max open connections; name labels its log lines and
// metrics ("tang", "managed").
func New(ln net.Listener, name string, max int64, log *slog.Logger) *Listener {
	return &Listener{Listener: ln, name: name, max: max, log: log}
}

func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			c.Close()
			l.noteRefused()
			continue
		}
		return &capConn{Conn: c, l: l}, nil
	}
}

func (l *Listener) noteRefused() {
	n := l.refused.Add(1)
	l.logMu.Lock()
	defer l.logMu.Unlock()
	if now := time.Now(); now.Sub(l.logged) >= 10*time.Second {
		l.log.Warn("connection refused: the listener is at its cap of open connections",
			"listener", l.name, "cap", l.max, "refused_since_last_log", n-l.logN, "refused_total", n)
		l.logged, l.logN = now, n
	}
}

// capConn gives its slot back when closed (once, however often Close is
// called).
type capConn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// WriteMetrics writes the listeners' gauges and counters in the
// Prometheus text format.
func WriteMetrics(w io.Writer, ls []*Listener) {
	if len(ls) == 0 {
		return
	}
	fmt.Fprintln(w, "# HELP tether_connections_open Open client connections by listener.")
	fmt.Fprintln(w, "# TYPE tether_connections_open gauge")
	for _, l := range ls {
		fmt.Fprintf(w, "tether_connections_open{listener=%q} %d\n", l.name, l.open.Load())
	}
	fmt.Fprintln(w, "# HELP tether_connections_max The cap of open connections by listener (sized from RLIMIT_NOFILE).")
	fmt.Fprintln(w, "# TYPE tether_connections_max gauge")
	for _, l := range ls {
		fmt.Fprintf(w, "tether_connections_max{listener=%q} %d\n", l.name, l.max)
	}
	fmt.Fprintln(w, "# HELP tether_connections_refused_total Connections closed at once because the listener was at its cap.")
	fmt.Fprintln(w, "# TYPE tether_connections_refused_total counter")
	for _, l := range ls {
		fmt.Fprintf(w, "tether_connections_refused_total{listener=%q} %d\n", l.name, l.refused.Load())
	}
}
