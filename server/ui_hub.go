package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/tether-nbde/tether/audit"
)

// uiHub tells dashboards when something changed, and indexes the audit
// log by device (last unlock, last source) as it grows.
//
// Change detection polls the store (audit head, devices, approvals,
// lockdown) twice a second while a dashboard is connected: a change made
// by another replica, or by a device on another replica, shows within a
// second without any cross-replica messaging. Changes made here kick the
// poll at once.
type uiHub struct {
	m *Managed

	mu   sync.Mutex // guards the index
	seq  int64
	acts map[string]*deviceActivity

	subMu   sync.Mutex
	subs    map[chan struct{}]struct{}
	kickC   chan struct{}
	running bool
}

type deviceActivity struct {
	lastUnlock   time.Time
	lastSource   string
	lastAttempt  time.Time
	lastDecision string
	lastReason   string
}

func newUIHub(m *Managed) *uiHub {
	return &uiHub{m: m, acts: map[string]*deviceActivity{}, subs: map[chan struct{}]struct{}{}, kickC: make(chan struct{}, 1)}
}

// activity brings the index up to date with the audit log and returns a
// copy of it with the audit sequence number it reflects.
func (h *uiHub) activity(ctx context.Context) (map[string]*deviceActivity, int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		recs, err := h.m.st.Audit(ctx, h.seq, 5000)
		if err != nil {
			return nil, 0, err
		}
		for _, r := range recs {
			h.index(r)
			h.seq = r.Seq
		}
		if len(recs) < 5000 {
			break
		}
	}
	out := make(map[string]*deviceActivity, len(h.acts))
	for k, v := range h.acts {
		c := *v
		out[k] = &c
	}
	return out, h.seq, nil
}

func (h *uiHub) index(r *audit.Record) {
	// Records an admin made about a device carry the admin's address,
	// not the device's.
	if r.Device == "" || r.Actor != "" {
		return
	}
	a := h.acts[r.Device]
	if a == nil {
		a = &deviceActivity{}
		h.acts[r.Device] = a
	}
	if r.Source != "" {
		a.lastSource = r.Source
	}
	if r.Action == "unlock" {
		a.lastAttempt, a.lastDecision, a.lastReason = r.Time, r.Decision, r.Reason
		if r.Decision == audit.Allow {
			a.lastUnlock = r.Time
		}
	}
}

// signature summarises what the dashboard shows; a different signature
// means the page must refresh.
func (h *uiHub) signature(ctx context.Context) (string, error) {
	_, seq, err := h.activity(ctx)
	if err != nil {
		return "", err
	}
	hs := sha256.New()
	fmt.Fprintf(hs, "audit %d\n", seq)
	// The store's stamp, not every device: this runs twice a second while
	// a dashboard is open, and a fleet may have 100,000 devices.
	ds, err := h.m.st.DeviceStamp(ctx)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(hs, "devices %s\n", ds)
	as, err := h.m.st.PendingApprovals(ctx, h.m.now())
	if err != nil {
		return "", err
	}
	for _, a := range as {
		fmt.Fprintf(hs, "apr %s\n", a.ID)
	}
	lock, _ := h.m.st.Setting(ctx, "lockdown")
	fmt.Fprintf(hs, "lock %s\n", lock)
	return string(hs.Sum(nil)), nil
}

func (h *uiHub) subscribe() chan struct{} {
	ch := make(chan struct{}, 1)
	h.subMu.Lock()
	defer h.subMu.Unlock()
	h.subs[ch] = struct{}{}
	if !h.running {
		h.running = true
		go h.run()
	}
	return ch
}

func (h *uiHub) unsubscribe(ch chan struct{}) {
	h.subMu.Lock()
	delete(h.subs, ch)
	h.subMu.Unlock()
}

// kick makes the poller look now.
func (h *uiHub) kick() {
	select {
	case h.kickC <- struct{}{}:
	default:
	}
}

// run polls while anyone listens.
func (h *uiHub) run() {
	ctx := context.Background()
	last, _ := h.signature(ctx)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-h.kickC:
		}
		h.subMu.Lock()
		if len(h.subs) == 0 {
			h.running = false
			h.subMu.Unlock()
			return
		}
		h.subMu.Unlock()
		sig, err := h.signature(ctx)
		if err != nil {
			h.m.log.Debug("dashboard change poll failed", "err", err)
			continue
		}
		if sig == last {
			continue
		}
		last = sig
		h.subMu.Lock()
		for ch := range h.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		h.subMu.Unlock()
	}
}
