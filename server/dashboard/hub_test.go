package dashboard

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/store"
)

// slowStamp is a store whose DeviceStamp takes as long as it does for a
// very large fleet, and counts its calls.
type slowStamp struct {
	store.Store
	delay time.Duration
	calls atomic.Int32
}

func (s *slowStamp) DeviceStamp(ctx context.Context) (string, error) {
	s.calls.Add(1)
	time.Sleep(s.delay)
	return s.Store.DeviceStamp(ctx)
}

// newHubWithStore starts a hub on a fresh store with one dashboard listening.
func newHubWithStore(t *testing.T, delay time.Duration) (*uiHub, *slowStamp, chan struct{}) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowStamp{Store: st, delay: delay}
	h := newUIHub(slow, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	ch := h.subscribe()
	t.Cleanup(func() {
		h.unsubscribe(ch)
		h.kick()                           // the poller sees nobody listens and stops
		time.Sleep(100 * time.Millisecond) // before the store closes under it
		st.Close()
	})
	return h, slow, ch
}

func TestStampPacer(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	var p stampPacer
	if !p.due(t0, false) {
		t.Fatal("a new pacer is not due")
	}
	p.took(t0, time.Millisecond) // a small fleet: due on every 0.5 s poll
	if !p.due(t0.Add(500*time.Millisecond), false) {
		t.Fatal("1 ms stamp not due at the next poll")
	}
	p.took(t0, 45*time.Millisecond) // 100,000 devices
	for _, d := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		if p.due(t0.Add(d), false) {
			t.Fatalf("45 ms stamp due again after %v", d)
		}
	}
	if !p.due(t0.Add(stampEvery*45*time.Millisecond), false) {
		t.Fatal("45 ms stamp never due")
	}
	if !p.due(t0.Add(time.Millisecond), true) {
		t.Fatal("a kick does not force the stamp")
	}
}

// A slow device stamp is not recomputed on every poll, yet a device change
// that leaves no audit record (another replica's) still reaches an open
// dashboard; a kick recomputes it at once.
func TestUIHubPacesSlowDeviceStamp(t *testing.T) {
	h, slow, ch := newHubWithStore(t, 40*time.Millisecond)
	start := time.Now()
	d := &policy.Device{ID: "dev-other-replica", Name: "n", Group: "g", KeyID: "k", PublicKey: []byte{1},
		State: policy.Enabled, ExchangeKey: []byte{1}, ExchangePub: `{"kty":"EC"}`,
		Created: time.Unix(1e9, 0), Updated: time.Unix(1e9, 0), LastSeen: time.Unix(1e9, 0)}
	time.Sleep(50 * time.Millisecond) // after the first stamp
	if err := slow.Store.CreateDevice(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(6 * time.Second):
		t.Fatal("a new device never reached the dashboard")
	}
	seen := time.Since(start)
	time.Sleep(3*time.Second - seen)
	// Unpaced, 3 s of polls would have stamped 7 times.
	if n := slow.calls.Load(); n > 4 {
		t.Fatalf("%d device stamps in 3 s at 40 ms each: not paced", n)
	}
	before := slow.calls.Load()
	h.kick()
	time.Sleep(150 * time.Millisecond)
	if slow.calls.Load() == before {
		t.Fatal("a kick did not recompute the device stamp")
	}
}

func TestUIHubStampsSmallFleetEveryPoll(t *testing.T) {
	_, slow, _ := newHubWithStore(t, 0)
	time.Sleep(1600 * time.Millisecond)
	if n := slow.calls.Load(); n < 3 {
		t.Fatalf("%d device stamps in 1.6 s for a fast store: want one every 0.5 s poll", n)
	}
}
