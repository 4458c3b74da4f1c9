package managed

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/store"
)

// Enrolment without a token lets anyone who reaches the managed port ask
// to be a device: the server makes a key and an audit record for each.
// It is off unless an administrator turns it on (tether admin enroll-open
// on), and then bounded: a few per address, a cap on the devices waiting
// for approval, and names that are plain host names.

// EnrollOpenSetting is "on" when enrolment without a token is allowed;
// unset or anything else means off.
const EnrollOpenSetting = "enroll.open"

// Tokenless enrolments per source address (IPv6: per /64): 3 at once,
// then one per 10 minutes. Refusals count too, so that a closed server's
// refusals (which are audited) cannot flood the log either.
const (
	enrollBurst    = 3
	enrollEvery    = 10 * time.Minute
	maxEnrollAddrs = 10000
)

// enrollLimiter is a bounded table of token buckets per address. Buckets
// that have refilled are evicted; when the table is full of live ones,
// new addresses are refused.
type enrollLimiter struct {
	mu      sync.Mutex
	buckets map[string]*enrollBucket
}

type enrollBucket struct {
	tokens float64
	last   time.Time
}

func (l *enrollLimiter) take(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	addr = wire.AddrKey(addr)
	refill := func(b *enrollBucket) bool {
		if now.After(b.last) {
			b.tokens = min(enrollBurst, b.tokens+float64(now.Sub(b.last))/float64(enrollEvery))
			b.last = now
		}
		return b.tokens >= enrollBurst
	}
	b := l.buckets[addr]
	if b == nil {
		if l.buckets == nil {
			l.buckets = map[string]*enrollBucket{}
		}
		if len(l.buckets) >= maxEnrollAddrs {
			for k, o := range l.buckets {
				if refill(o) {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= maxEnrollAddrs {
				return false
			}
		}
		b = &enrollBucket{tokens: enrollBurst, last: now}
		l.buckets[addr] = b
	}
	refill(b)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// ValidTokenlessName checks the name a device asks for without a token:
// 1 to 64 ASCII letters, digits, '.', '-' and '_' (a host name). Nothing
// vouches for such a device, so its name must not be able to pose as
// another in a list (no look-alike letters, spaces or controls).
func ValidTokenlessName(n string) error {
	if n == "" || len(n) > 64 {
		return errors.New("device name must be 1 to 64 characters")
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_", c)) {
			return errors.New("a device enrolling without a token must be named with ASCII letters, digits, '.', '-' and '_' only (a host name)")
		}
	}
	return nil
}

// admitTokenless decides whether an enrolment without a token may go on.
// If ok, the caller creates the device and then calls release (the
// pending cap is counted and filled under one lock). Otherwise the
// request has been answered.
func (m *Server) admitTokenless(w http.ResponseWriter, r *http.Request, req *enrollRequest, src string) (release func(), ok bool) {
	ctx := r.Context()
	if !m.enrolls.take(src, m.now()) {
		w.Header().Set("Retry-After", fmt.Sprint(int(enrollEvery.Seconds())))
		wire.WriteError(w, http.StatusTooManyRequests, "too many enrolments without a token from this address: try again later, or enrol with a token (tether admin token create)")
		return nil, false
	}
	if v, _ := m.st.Setting(ctx, EnrollOpenSetting); v != "on" {
		m.Record(ctx, &audit.Record{Action: "enroll", Source: src, Decision: audit.Deny, Reason: "enrolment without a token is turned off"})
		wire.WriteError(w, http.StatusForbidden, "this server only enrols devices with a token: ask an admin for one (tether admin token create)")
		return nil, false
	}
	if err := ValidTokenlessName(req.Name); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "%v", err)
		return nil, false
	}
	m.pendMu.Lock()
	page, err := m.st.DevicePage(ctx, store.DeviceQuery{State: policy.Pending, Limit: 1})
	if err != nil {
		m.pendMu.Unlock()
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return nil, false
	}
	if n := page.Counts[policy.Pending]; n >= m.cfg.MaxPending {
		m.pendMu.Unlock()
		m.Record(ctx, &audit.Record{Action: "enroll", Source: src, Decision: audit.Deny,
			Reason: fmt.Sprintf("%d devices already wait for approval (the limit)", n)})
		wire.WriteError(w, http.StatusServiceUnavailable, "%d devices already wait for approval on this server: an admin must approve or revoke some first", n)
		return nil, false
	}
	return m.pendMu.Unlock, true
}
