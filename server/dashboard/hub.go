package dashboard

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/store"
)

// uiHub tells dashboards when something changed, and indexes the audit
// log by device (last unlock, last source) as it grows.
//
// Change detection polls the store (audit head, devices, approvals,
// lockdown) twice a second while a dashboard is connected: a change made
// by another replica, or by a device on another replica, shows within a
// second without any cross-replica messaging (within a few seconds for a
// device change that leaves no audit record in a very large fleet: see
// stampEvery). Changes made here kick the poll at once.
type uiHub struct {
	st  store.Store
	log *slog.Logger
	now func() time.Time

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

func newUIHub(st store.Store, log *slog.Logger, now func() time.Time) *uiHub {
	return &uiHub{st: st, log: log, now: now, acts: map[string]*deviceActivity{}, subs: map[chan struct{}]struct{}{}, kickC: make(chan struct{}, 1)}
}

// activity brings the index up to date with the audit log and returns a
// copy of it with the audit sequence number it reflects.
func (h *uiHub) activity(ctx context.Context) (map[string]*deviceActivity, int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		recs, err := h.st.Audit(ctx, h.seq, 5000)
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
// means the page must refresh. deviceStamp is the store's DeviceStamp, as
// paced by stampPacer.
func (h *uiHub) signature(ctx context.Context, deviceStamp string) (string, error) {
	_, seq, err := h.activity(ctx)
	if err != nil {
		return "", err
	}
	hs := sha256.New()
	fmt.Fprintf(hs, "audit %d\n", seq)
	fmt.Fprintf(hs, "devices %s\n", deviceStamp)
	as, err := h.st.PendingApprovals(ctx, h.now())
	if err != nil {
		return "", err
	}
	for _, a := range as {
		fmt.Fprintf(hs, "apr %s\n", a.ID)
	}
	lock, _ := h.st.Setting(ctx, "lockdown")
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

// stampEvery paces the device stamp, the one part of the change poll whose
// cost grows with the fleet (a scan of the devices table: about 45 ms for
// 100,000 devices on SQLite). Between kicks it is recomputed no more often
// than stampEvery times what it last took, so an open dashboard spends at
// most 1/stampEvery of a core on it: on every poll for a small fleet, every
// 2–3 s for 100,000 devices. Most device changes also append to the audit
// log, which every poll reads, so they show at once whatever the pace.
const stampEvery = 50

// stampPacer decides when the device stamp is due.
type stampPacer struct{ next time.Time }

// due reports whether to recompute the stamp at now; a kick forces it.
func (p *stampPacer) due(now time.Time, kicked bool) bool {
	return kicked || !now.Before(p.next)
}

// took records that a recomputation started at start and took cost.
func (p *stampPacer) took(start time.Time, cost time.Duration) {
	p.next = start.Add(stampEvery * cost)
}

// run polls while anyone listens.
func (h *uiHub) run() {
	ctx := context.Background()
	var pace stampPacer
	var stamp string
	poll := func(kicked bool) (string, error) {
		if now := time.Now(); pace.due(now, kicked) {
			s, err := h.st.DeviceStamp(ctx)
			if err != nil {
				return "", err
			}
			stamp = s
			pace.took(now, time.Since(now))
		}
		return h.signature(ctx, stamp)
	}
	last, _ := poll(true)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		kicked := false
		select {
		case <-t.C:
		case <-h.kickC:
			kicked = true
		}
		h.subMu.Lock()
		if len(h.subs) == 0 {
			h.running = false
			h.subMu.Unlock()
			return
		}
		h.subMu.Unlock()
		sig, err := poll(kicked)
		if err != nil {
			h.log.Debug("dashboard change poll failed", "err", err)
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
