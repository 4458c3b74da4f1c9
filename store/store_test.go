package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
)

func TestSQLite(t *testing.T) {
	testStore(t, func(t *testing.T) Store {
		s, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "tether.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestSQLiteFileMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "tether.db")
	s, err := OpenSQLite(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestSQLiteRevokedKeyLeavesNoTrace checks that after a revocation (the
// wrapped key set to nil) and a checkpoint, the key's bytes are in neither
// the database file nor its WAL.
func TestSQLiteRevokedKeyLeavesNoTrace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := filepath.Join(dir, "tether.db")
	s, err := OpenSQLite(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	secret := bytes.Repeat([]byte("WRAPPED-KEY-MATERIAL!"), 3)
	d := newDevice("d1", "k1")
	d.ExchangeKey = secret
	if err := s.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	s.(Checkpointer).Checkpoint(ctx)
	if !filesContain(t, dir, secret) {
		t.Fatal("test is broken: the wrapped key is not in the files before revocation")
	}
	d.State, d.ExchangeKey = policy.Revoked, nil
	if err := s.UpdateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.(Checkpointer).Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if filesContain(t, dir, secret) {
		t.Fatal("the revoked device's wrapped key is still in the store files")
	}
}

func filesContain(t *testing.T, dir string, b []byte) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

func newDevice(id, key string) *policy.Device {
	yes := true
	return &policy.Device{
		ID: id, Name: "host-" + id, Group: "servers", KeyID: key, PublicKey: []byte("spki-" + key),
		State: policy.Enabled, ExchangeKey: []byte("wrapped-" + id), ExchangePub: `{"kty":"EC"}`,
		Policy:  policy.Policy{CIDRs: []string{"10.0.0.0/8"}, KeepAlive: policy.Duration(5 * time.Minute), Approval: &yes, Rate: 3},
		Created: t0, Updated: t0, LastSeen: t0,
	}
}

// testStore is the suite every Store implementation must pass.
func testStore(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	t.Run("devices", func(t *testing.T) {
		s := open(t)
		d := newDevice("d1", "k1")
		if err := s.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		got, err := s.Device(ctx, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != d.Name || got.Group != "servers" || got.State != policy.Enabled || !bytes.Equal(got.ExchangeKey, d.ExchangeKey) ||
			!got.Created.Equal(t0) || got.Version != 1 || got.Policy.KeepAlive != policy.Duration(5*time.Minute) ||
			got.Policy.Approval == nil || !*got.Policy.Approval || got.Policy.CIDRs[0] != "10.0.0.0/8" || got.Policy.Rate != 3 {
			t.Fatalf("round trip: got %+v", got)
		}
		if g, err := s.DeviceByKey(ctx, "k1"); err != nil || g.ID != "d1" {
			t.Fatalf("DeviceByKey: %v %v", g, err)
		}
		if _, err := s.Device(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing device: %v", err)
		}
		if err := s.CreateDevice(ctx, newDevice("d2", "k1")); err == nil {
			t.Fatal("a second live device with the same identity key was accepted")
		}
		if err := s.Touch(ctx, "d1", t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		s.Touch(ctx, "d1", t0.Add(time.Minute)) // never backwards
		got, _ = s.Device(ctx, "d1")
		if !got.LastSeen.Equal(t0.Add(time.Hour)) || got.Version != 1 {
			t.Fatalf("after Touch: last seen %v version %d", got.LastSeen, got.Version)
		}
		list, err := s.Devices(ctx)
		if err != nil || len(list) != 1 {
			t.Fatalf("Devices: %v %v", list, err)
		}
	})
	t.Run("device page", func(t *testing.T) {
		s := open(t)
		names := []string{"NAS-basement", "office_pc", "office-pc-2", "100%-uptime", `back\slash`, "Kitchen"}
		for i, n := range names {
			d := newDevice(fmt.Sprintf("d%d", i), fmt.Sprintf("k%d", i))
			d.Name, d.Created = n, t0.Add(time.Duration(i)*time.Second)
			if i%2 == 1 {
				d.State = policy.Disabled
			}
			if err := s.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			q    DeviceQuery
			want []string // IDs on the page
			all  int      // matched
		}{
			{DeviceQuery{Limit: 10}, []string{"d0", "d1", "d2", "d3", "d4", "d5"}, 6},
			{DeviceQuery{Limit: 2, Offset: 3}, []string{"d3", "d4"}, 6},
			{DeviceQuery{Limit: 10, Offset: 6}, nil, 6},
			{DeviceQuery{Text: "nas", Limit: 10}, []string{"d0"}, 1},     // case
			{DeviceQuery{Text: "office_", Limit: 10}, []string{"d1"}, 1}, // _ is not a wildcard
			{DeviceQuery{Text: "100%", Limit: 10}, []string{"d3"}, 1},    // % is not a wildcard
			{DeviceQuery{Text: `k\s`, Limit: 10}, []string{"d4"}, 1},     // nor is the escape
			{DeviceQuery{Text: "SERVERS", Limit: 1}, []string{"d0"}, 6},  // group
			{DeviceQuery{Text: "D5", Limit: 10}, []string{"d5"}, 1},      // ID
			{DeviceQuery{Text: "office", State: policy.Disabled, Limit: 10}, []string{"d1"}, 1},
			{DeviceQuery{State: policy.Revoked, Limit: 10}, nil, 0},
		} {
			p, err := s.DevicePage(ctx, tc.q)
			if err != nil {
				t.Fatalf("%+v: %v", tc.q, err)
			}
			var got []string
			for _, d := range p.Devices {
				got = append(got, d.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || p.Matched != tc.all {
				t.Errorf("%+v: page %v of %d, want %v of %d", tc.q, got, p.Matched, tc.want, tc.all)
			}
			if p.Counts[policy.Enabled] != 3 || p.Counts[policy.Disabled] != 3 || len(p.Counts) != 2 {
				t.Errorf("%+v: counts %v", tc.q, p.Counts)
			}
		}
	})
	t.Run("each keep-alive", func(t *testing.T) {
		s := open(t)
		for i, st := range []policy.State{policy.Enabled, policy.Disabled, policy.Enabled, policy.Revoked, policy.Enabled} {
			d := newDevice(fmt.Sprintf("d%d", i), fmt.Sprintf("k%d", i))
			d.State, d.Group, d.LastSeen = st, fmt.Sprintf("g%d", i), t0.Add(time.Duration(i)*time.Minute)
			if i == 4 {
				d.Policy = policy.Policy{}
			}
			if err := s.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]KeepAliveInput{}
		err := s.EachKeepAlive(ctx, func(k KeepAliveInput) error {
			got[k.ID] = k
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("want the 3 enabled devices, got %v", got)
		}
		for _, i := range []int{0, 2, 4} {
			k := got[fmt.Sprintf("d%d", i)]
			if k.Group != fmt.Sprintf("g%d", i) || !k.LastSeen.Equal(t0.Add(time.Duration(i)*time.Minute)) {
				t.Errorf("d%d: %+v", i, k)
			}
		}
		if p := got["d0"].Policy; p.KeepAlive != policy.Duration(5*time.Minute) || p.Rate != 3 || len(p.CIDRs) != 1 || p.Approval == nil {
			t.Errorf("d0 policy %+v", p)
		}
		if p := got["d4"].Policy; p.KeepAlive != 0 || p.CIDRs != nil || p.Approval != nil {
			t.Errorf("d4 has no policy of its own, got %+v", p)
		}
		stop := errors.New("stop")
		n := 0
		if err := s.EachKeepAlive(ctx, func(KeepAliveInput) error { n++; return stop }); err != stop || n != 1 {
			t.Fatalf("an error from fn: iteration returned %v after %d calls", err, n)
		}
	})
	t.Run("rekey", func(t *testing.T) {
		s := open(t)
		for i, st := range []policy.State{policy.Enabled, policy.Revoked, policy.Disabled} {
			d := newDevice(fmt.Sprintf("d%d", i), fmt.Sprintf("k%d", i))
			d.State = st
			if st == policy.Revoked {
				d.ExchangeKey = nil
			}
			if err := s.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		s.SetSetting(ctx, "kek.check", "old")
		var seen []string
		err := s.Rekey(ctx, func(id string, w []byte) ([]byte, error) {
			seen = append(seen, id)
			return append([]byte("new:"), w...), nil
		}, map[string]string{"kek.check": "new", "managed.tls": "rewrapped"})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(seen)
		if fmt.Sprint(seen) != "[d0 d2]" {
			t.Fatalf("rewrapped %v, want the devices with a key", seen)
		}
		for id, want := range map[string]string{"d0": "new:wrapped-d0", "d1": "", "d2": "new:wrapped-d2"} {
			if d, _ := s.Device(ctx, id); string(d.ExchangeKey) != want {
				t.Errorf("%s: key %q, want %q", id, d.ExchangeKey, want)
			}
		}
		if v, _ := s.Setting(ctx, "kek.check"); v != "new" {
			t.Errorf("kek.check %q", v)
		}
		// A device that does not rewrap: nothing changes at all.
		err = s.Rekey(ctx, func(id string, w []byte) ([]byte, error) {
			if id == "d2" {
				return nil, errors.New("does not unwrap")
			}
			return []byte("newer"), nil
		}, map[string]string{"kek.check": "newer"})
		if err == nil || !strings.Contains(err.Error(), "d2") {
			t.Fatalf("failed rekey: %v", err)
		}
		if d, _ := s.Device(ctx, "d0"); string(d.ExchangeKey) != "new:wrapped-d0" {
			t.Errorf("a failed rekey changed d0's key to %q", d.ExchangeKey)
		}
		if v, _ := s.Setting(ctx, "kek.check"); v != "new" {
			t.Errorf("a failed rekey changed kek.check to %q", v)
		}
	})
	t.Run("device stamp", func(t *testing.T) {
		s := open(t)
		stamps := map[string]string{}
		stamp := func(step string) {
			t.Helper()
			st, err := s.DeviceStamp(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for prev, other := range stamps {
				if other == st {
					t.Fatalf("after %s the stamp %q is the one after %s", step, st, prev)
				}
			}
			stamps[step] = st
		}
		stamp("nothing")
		d := newDevice("d1", "k1")
		if err := s.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		stamp("create")
		d.State = policy.Disabled
		if err := s.UpdateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		stamp("update")
		if err := s.Touch(ctx, "d1", t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		stamp("touch")
		if err := s.CreateDevice(ctx, newDevice("d2", "k2")); err != nil {
			t.Fatal(err)
		}
		stamp("second device")
		again, _ := s.DeviceStamp(ctx)
		if again != stamps["second device"] {
			t.Fatalf("stamp changed without a change: %q, then %q", stamps["second device"], again)
		}
	})
	t.Run("compare-and-swap", func(t *testing.T) {
		s := open(t)
		if err := s.CreateDevice(ctx, newDevice("d1", "k1")); err != nil {
			t.Fatal(err)
		}
		a, _ := s.Device(ctx, "d1")
		b, _ := s.Device(ctx, "d1")
		a.State, a.Reason = policy.Disabled, "lost"
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateDevice(ctx, a); err != nil {
			t.Fatal(err)
		}
		if a.Version != 2 {
			t.Fatalf("version after update %d, want 2", a.Version)
		}
		b.State = policy.Enabled
		if err := s.UpdateDevice(ctx, b); !errors.Is(err, ErrConflict) {
			t.Fatalf("stale update: %v, want ErrConflict", err)
		}
		// Revoke through a, then a replica holding a fresh copy from before
		// the revocation cannot bring the device back, nor can anyone else.
		c, _ := s.Device(ctx, "d1")
		a.State, a.ExchangeKey = policy.Revoked, nil
		if err := s.UpdateDevice(ctx, a); err != nil {
			t.Fatal(err)
		}
		c.State = policy.Enabled
		if err := s.UpdateDevice(ctx, c); !errors.Is(err, ErrRevoked) {
			t.Fatalf("update of revoked device with stale version: %v, want ErrRevoked", err)
		}
		r, _ := s.Device(ctx, "d1")
		if r.ExchangeKey != nil {
			t.Fatal("revoked device still has its exchange key")
		}
		r.State = policy.Enabled
		if err := s.UpdateDevice(ctx, r); !errors.Is(err, ErrRevoked) {
			t.Fatalf("update of revoked device: %v, want ErrRevoked", err)
		}
		if _, err := s.DeviceByKey(ctx, "k1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("DeviceByKey finds a revoked device: %v", err)
		}
		// The identity key may enrol again, as a new device with a new key.
		if err := s.CreateDevice(ctx, newDevice("d2", "k1")); err != nil {
			t.Fatalf("re-enrolment after revocation: %v", err)
		}
	})
	t.Run("concurrent CAS: exactly one winner", func(t *testing.T) {
		s := open(t)
		if err := s.CreateDevice(ctx, newDevice("d1", "k1")); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		var copies []*policy.Device
		for i := 0; i < 8; i++ {
			d, _ := s.Device(ctx, "d1")
			copies = append(copies, d)
		}
		for i, d := range copies {
			wg.Add(1)
			go func(i int, d *policy.Device) {
				defer wg.Done()
				d.Reason = fmt.Sprint("writer ", i)
				if err := s.UpdateDevice(ctx, d); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				} else if !errors.Is(err, ErrConflict) {
					t.Error(err)
				}
			}(i, d)
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d writers won the same version, want 1", wins)
		}
	})
	t.Run("tokens", func(t *testing.T) {
		s := open(t)
		h := []byte("0123456789abcdef0123456789abcdef")
		if err := s.CreateToken(ctx, &Token{Hash: h, Group: "g", Created: t0, Expires: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		tok, err := s.ConsumeToken(ctx, h, t0.Add(time.Minute))
		if err != nil || tok.Group != "g" {
			t.Fatalf("ConsumeToken: %v %v", tok, err)
		}
		if _, err := s.ConsumeToken(ctx, h, t0.Add(time.Minute)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second use of a token: %v, want ErrNotFound", err)
		}
		h2 := []byte("another-token-hash-0123456789abc")
		s.CreateToken(ctx, &Token{Hash: h2, Created: t0, Expires: t0.Add(time.Hour)})
		if _, err := s.ConsumeToken(ctx, h2, t0.Add(time.Hour)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired token: %v, want ErrNotFound", err)
		}
	})
	t.Run("groups and settings", func(t *testing.T) {
		s := open(t)
		if _, err := s.Group(ctx, "g"); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		s.PutGroup(ctx, "g", policy.Policy{Rate: 1})
		s.PutGroup(ctx, "g", policy.Policy{Rate: 2})
		if p, err := s.Group(ctx, "g"); err != nil || p.Rate != 2 {
			t.Fatalf("group: %+v %v", p, err)
		}
		if gs, _ := s.Groups(ctx); len(gs) != 1 {
			t.Fatalf("groups: %v", gs)
		}
		if _, err := s.Setting(ctx, "x"); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		if v, _ := s.InitSetting(ctx, "x", "first"); v != "first" {
			t.Fatal(v)
		}
		if v, _ := s.InitSetting(ctx, "x", "second"); v != "first" {
			t.Fatalf("InitSetting overwrote: %q", v)
		}
		s.SetSetting(ctx, "x", "third")
		if v, _ := s.Setting(ctx, "x"); v != "third" {
			t.Fatal(v)
		}
	})
	t.Run("approvals", func(t *testing.T) {
		s := open(t)
		a := &Approval{ID: "a1", Device: "d1", Source: "10.0.0.1", Created: t0, Deadline: t0.Add(time.Minute), State: "pending"}
		if err := s.CreateApproval(ctx, a); err != nil {
			t.Fatal(err)
		}
		if p, _ := s.PendingApprovals(ctx, t0); len(p) != 1 || p[0].ID != "a1" {
			t.Fatalf("pending: %v", p)
		}
		if p, _ := s.PendingApprovals(ctx, t0.Add(time.Hour)); len(p) != 0 {
			t.Fatalf("pending after the deadline: %v", p)
		}
		if err := s.DecideApproval(ctx, "a1", "approved"); err != nil {
			t.Fatal(err)
		}
		if err := s.DecideApproval(ctx, "a1", "denied"); !errors.Is(err, ErrConflict) {
			t.Fatalf("second decision: %v", err)
		}
		if got, _ := s.Approval(ctx, "a1"); got.State != "approved" {
			t.Fatalf("state %q", got.State)
		}
		if err := s.UseApproval(ctx, "a1"); err != nil {
			t.Fatal(err)
		}
		if err := s.UseApproval(ctx, "a1"); !errors.Is(err, ErrConflict) {
			t.Fatalf("second use of an approval: %v", err)
		}
		if err := s.DecideApproval(ctx, "nope", "approved"); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	})
	t.Run("pcr states", func(t *testing.T) {
		s := open(t)
		for i, id := range []string{"d1", "d2", "d3"} {
			d := newDevice(id, fmt.Sprint("k", i))
			if id == "d3" {
				d.Group = "lab"
			}
			if err := s.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		r := &PCRState{Device: "d1", Bank: "sha256", PCRIDs: "11", Policy: "aa", Values: "11=00", State: "approved",
			Reason: "first values", Created: t0, Decided: t0}
		got, created, err := s.ReportPCRState(ctx, r)
		if err != nil || !created || got.State != "approved" || !got.Created.Equal(t0) || got.Values != "11=00" {
			t.Fatalf("first report: %+v %v %v", got, created, err)
		}
		if ok, err := s.HasApprovedPCRState(ctx, "d1", "sha256", "11"); !ok || err != nil {
			t.Fatalf("HasApprovedPCRState: %v %v", ok, err)
		}
		if ok, _ := s.HasApprovedPCRState(ctx, "d1", "sha256", "7,11"); ok {
			t.Fatal("an approved state for PCRs 11 counted for PCRs 7,11")
		}
		if ok, _ := s.HasApprovedPCRState(ctx, "d1", "", ""); !ok {
			t.Fatal("d1's approved state not counted as any")
		}
		// A second report of the same values keeps what was decided.
		again := *r
		again.State, again.Reason = "pending", ""
		if got, created, err := s.ReportPCRState(ctx, &again); err != nil || created || got.State != "approved" {
			t.Fatalf("second report: %+v %v %v", got, created, err)
		}
		for _, dev := range []string{"d2", "d3"} {
			p := PCRState{Device: dev, Bank: "sha256", PCRIDs: "11", Policy: "bb", Values: "11=01", State: "pending", Created: t0.Add(time.Second)}
			if _, _, err := s.ReportPCRState(ctx, &p); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.PCRStateDevices(ctx, "servers", "sha256", "11", "bb"); n != 1 || err != nil {
			t.Fatalf("devices of servers with bb: %d %v (d3 is in lab)", n, err)
		}
		if n, _ := s.PCRStateDevices(ctx, "lab", "sha256", "11", "bb"); n != 1 {
			t.Fatalf("devices of lab with bb: %d", n)
		}
		if ok, _ := s.HasApprovedPCRState(ctx, "d2", "", ""); ok {
			t.Fatal("d2 has only a pending state, counted as approved")
		}
		pend, err := s.PCRStates(ctx, "", "pending")
		if err != nil || len(pend) != 2 || pend[0].Device != "d2" || pend[1].Device != "d3" {
			t.Fatalf("pending: %v %v", pend, err)
		}
		dec := *pend[0]
		dec.State, dec.Reason, dec.Decided = "denied", "admin", t0.Add(time.Minute)
		if err := s.DecidePCRState(ctx, &dec); err != nil {
			t.Fatal(err)
		}
		all, _ := s.PCRStates(ctx, "d2", "")
		if len(all) != 1 || all[0].State != "denied" || all[0].Reason != "admin" || !all[0].Decided.Equal(t0.Add(time.Minute)) {
			t.Fatalf("d2 after the decision: %+v", all)
		}
		dec.Policy = "cc"
		if err := s.DecidePCRState(ctx, &dec); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deciding a state never reported: %v", err)
		}
	})
	t.Run("audit chain", func(t *testing.T) {
		s := open(t)
		if err := s.CreateDevice(ctx, newDevice("d1", "k1")); err != nil {
			t.Fatal(err)
		}
		// Appends and touches at once, as a boot storm makes them: they
		// share transactions (group commit), and each append must still
		// get its own place in one linear chain.
		const n = 200
		var wg sync.WaitGroup
		got := make([]*audit.Record, n)
		for i := 0; i < n; i++ {
			wg.Add(2)
			go func(i int) {
				defer wg.Done()
				r := &audit.Record{Time: t0.Add(time.Duration(i)), Device: "d1", Action: "unlock", Decision: audit.Allow, Source: "127.0.0.1",
					Reason: fmt.Sprint("append ", i)}
				if err := s.AppendAudit(ctx, r); err != nil {
					t.Error(err)
				}
				got[i] = r
			}(i)
			go func(i int) {
				defer wg.Done()
				if err := s.Touch(ctx, "d1", t0.Add(time.Duration(i)*time.Second)); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		if d, _ := s.Device(ctx, "d1"); !d.LastSeen.Equal(t0.Add((n - 1) * time.Second)) {
			t.Errorf("last seen %v after concurrent touches, want the latest", d.LastSeen)
		}
		recs, err := s.Audit(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != n {
			t.Fatalf("%d records, want %d", len(recs), n)
		}
		for _, r := range got {
			if stored := recs[r.Seq-1]; stored.Reason != r.Reason || stored.Prev != r.Prev {
				t.Fatalf("append %q was told seq %d, which holds %q", r.Reason, r.Seq, stored.Reason)
			}
		}
		c := audit.NewChain()
		for _, r := range recs {
			if err := c.Next(r); err != nil {
				t.Fatal(err)
			}
		}
		if page, _ := s.Audit(ctx, 15, 2); len(page) != 2 || page[0].Seq != 16 {
			t.Fatalf("paging: %v", page)
		}
	})
	// The audit vectors (audit/testdata, hashed by sha256sum) appended to
	// an empty store come back with the same links: the store numbers and
	// chains records as the spec says, and keeps every field (the time to
	// the nanosecond, non-ASCII text) through its database.
	t.Run("audit vectors", func(t *testing.T) {
		s := open(t)
		lines, err := os.ReadFile("../audit/testdata/chain.jsonl")
		if err != nil {
			t.Fatal(err)
		}
		hashes, err := os.ReadFile("../audit/testdata/chain.sha256")
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Fields(string(hashes))
		for i, line := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
			var v struct {
				Time                                                  int64
				Device, Action, Source, Decision, Reason, Actor, Prev string
			}
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatal(err)
			}
			r := &audit.Record{Time: time.Unix(0, v.Time), Device: v.Device, Action: v.Action, Source: v.Source,
				Decision: v.Decision, Reason: v.Reason, Actor: v.Actor}
			if err := s.AppendAudit(ctx, r); err != nil {
				t.Fatal(err)
			}
			if r.Seq != int64(i+1) || r.Prev != v.Prev {
				t.Fatalf("vector %d appended as seq %d prev %s, want prev %s", i+1, r.Seq, r.Prev, v.Prev)
			}
		}
		recs, err := s.Audit(ctx, 0, 10)
		if err != nil || len(recs) != len(want) {
			t.Fatalf("%d records, %v", len(recs), err)
		}
		for i, r := range recs {
			if h := r.Hash(); h != want[i] {
				t.Errorf("record %d read back hashes to %s, want %s (%+v)", r.Seq, h, want[i], r)
			}
		}
		// The stored chain head is the last vector's hash.
		next := &audit.Record{Time: t0, Action: "lockdown", Decision: audit.OK, Actor: "admin"}
		if err := s.AppendAudit(ctx, next); err != nil || next.Prev != want[len(want)-1] {
			t.Errorf("next record's prev %s, %v; want %s", next.Prev, err, want[len(want)-1])
		}
	})
}
