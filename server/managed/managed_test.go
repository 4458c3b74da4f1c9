package managed_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-nbde/tether/jose"
	managedpin "github.com/tether-nbde/tether/pin/managed"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/server/servertest"
	"github.com/tether-nbde/tether/store"
)

func TestEnrollBindUnlock(t *testing.T) {
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token("laptops"), "")
	j := d.Encrypt(t, "disk passphrase")
	e.MustUnlock(d, j, "disk passphrase")
	e.WaitHook("unlock")

	// Blinding: the server never received the JWE's epk c (nor could it
	// compute K); it saw only x = c + E·G.
	if bytes.Contains(e.Bodies.All(), []byte(j.Header.Epk.X)) {
		t.Fatal("the server received the JWE's epk: the request is not blinded")
	}
	devs, _ := e.Admin.Devices(context.Background())
	if len(devs) != 1 || devs[0].ID != d.ID || devs[0].State != "enabled" || devs[0].Group != "laptops" {
		t.Fatalf("devices: %+v", devs)
	}
	// The device's key at rest is wrapped, never the JWK in clear.
	raw, _ := e.St.Device(context.Background(), d.ID)
	if bytes.Contains(raw.ExchangeKey, []byte(`"d"`)) || bytes.Contains(raw.ExchangeKey, []byte("ECMR")) {
		t.Fatal("exchange key is stored in clear")
	}
	e.VerifyAudit()
}

func TestTokenIsOneTimeAndPinned(t *testing.T) {
	e := servertest.New(t, server.ManagedConfig{})
	tok := e.Token("")
	e.Enroll(tok, "")
	_, _, err := managedpin.Enroll(context.Background(), managedpin.EnrollOptions{Server: e.URL, Token: tok, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second use of a token: %v", err)
	}
	// A token whose pin is not this server's key: the device refuses to
	// talk (someone in the middle, or the wrong server).
	other := servertest.New(t, server.ManagedConfig{})
	_, _, err = managedpin.Enroll(context.Background(), managedpin.EnrollOptions{Server: e.URL, Token: other.Token(""), Dir: t.TempDir()})
	if !errors.Is(err, managedpin.ErrPin) {
		t.Fatalf("enrol against a server that does not match the token's pin: %v", err)
	}
}

func TestPendingEnrollmentNeedsApproval(t *testing.T) {
	e := servertest.New(t, server.ManagedConfig{})
	if err := e.Admin.EnrollOpen(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	d := e.Enroll("", "")
	j := d.Encrypt(t, "s")
	e.MustFail(d, j, "pending")
	if _, err := e.Admin.DeviceOp(context.Background(), d.ID, "approve", ""); err != nil {
		t.Fatal(err)
	}
	e.MustUnlock(d, j, "s")
	// Open enrolment can be turned off.
	e.Admin.EnrollOpen(context.Background(), false)
	_, _, err := managedpin.Enroll(context.Background(), managedpin.EnrollOptions{Server: e.URL, Pin: e.M.Pin(), Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "only enrols devices with a token") {
		t.Fatalf("tokenless enrolment with open enrolment off: %v", err)
	}
}

// TestTokenlessEnrollment: off unless turned on; when on, a few per
// address, a cap on pending devices (also under concurrency), and host
// names only.
func TestTokenlessEnrollment(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{Config: managed.Config{MaxPending: 5}})
	try := func(from, name string) error {
		_, _, err := managedpin.Enroll(ctx, managedpin.EnrollOptions{Server: e.URL, Pin: e.M.Pin(), Dir: t.TempDir(), Name: name, LocalAddr: from})
		return err
	}
	if err := try("127.0.0.2", "host-a"); err == nil || !strings.Contains(err.Error(), "only enrols devices with a token") {
		t.Fatalf("tokenless enrolment on a fresh server: %v", err)
	}
	if err := e.Admin.EnrollOpen(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"host a", "hоst" /* Cyrillic o */, strings.Repeat("x", 65), "a[2Jb"} {
		if err := try("127.0.0.3", bad); err == nil || !strings.Contains(err.Error(), "name") {
			t.Fatalf("tokenless enrolment named %q: %v", bad, err)
		}
	}
	// Per address: 3 (the refusals above counted against 127.0.0.3).
	ok := 0
	for i := 0; i < 6; i++ {
		err := try("127.0.0.4", fmt.Sprintf("host-%d", i))
		if err == nil {
			ok++
		} else if !strings.Contains(err.Error(), "too many enrolments") {
			t.Fatalf("enrolment %d from 127.0.0.4: %v", i, err)
		}
	}
	if ok != 3 {
		t.Fatalf("6 tokenless enrolments from one address: %d accepted, want 3", ok)
	}
	// The pending cap (5) holds under a concurrent burst from many addresses.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			try(fmt.Sprintf("127.0.1.%d", i+1), fmt.Sprintf("burst-%d", i))
		}()
	}
	wg.Wait()
	page, err := e.St.DevicePage(ctx, store.DeviceQuery{State: policy.Pending, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if n := page.Counts[policy.Pending]; n != 5 {
		t.Fatalf("%d devices pending, want the cap of 5", n)
	}
	if err := try("127.0.2.1", "one-more"); err == nil || !strings.Contains(err.Error(), "wait for approval") {
		t.Fatalf("enrolment beyond the pending cap: %v", err)
	}
	// A token still enrols.
	e.Enroll(e.Token(""), "127.0.2.1")
}

func TestRevokeIsForever(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token(""), "")
	j := d.Encrypt(t, "top secret")
	e.MustUnlock(d, j, "top secret")
	oldState, _ := os.ReadFile(filepath.Join(d.Dir, "device.json"))

	if _, err := e.Admin.DeviceOp(ctx, d.ID, "revoke", "stolen"); err != nil {
		t.Fatal(err)
	}
	e.MustFail(d, j, "device "+d.ID+" was revoked (stolen)")
	// The attempt is in the revoked device's own record.
	recs, _ := e.St.Audit(ctx, 0, 1000)
	if last := recs[len(recs)-1]; last.Action != "unlock" || last.Device != d.ID || last.Decision != "deny" {
		t.Fatalf("a revoked device's unlock is audited as %+v, want an unlock denied for %s", last, d.ID)
	}
	rec, _ := e.St.Device(ctx, d.ID)
	if rec.State != policy.Revoked || rec.ExchangeKey != nil {
		t.Fatalf("after revoke: state %s, key present %v", rec.State, rec.ExchangeKey != nil)
	}
	// Nothing brings it back: not enable, not a re-enrolment of the same
	// identity key (which makes a new device with a new exchange key).
	if _, err := e.Admin.DeviceOp(ctx, d.ID, "enable", ""); err == nil {
		t.Fatal("a revoked device was re-enabled")
	}
	os.Remove(filepath.Join(d.Dir, "device.json"))
	_, info, err := managedpin.Enroll(ctx, managedpin.EnrollOptions{Server: e.URL, Token: e.Token(""), Dir: d.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if info.Device == d.ID {
		t.Fatal("re-enrolment revived the revoked device")
	}
	// With the old state file (old device ID) and the same identity key,
	// the old JWE still cannot be decrypted: the key it needs is gone.
	os.WriteFile(filepath.Join(d.Dir, "device.json"), oldState, 0o600)
	var st managedpin.State
	json.Unmarshal(oldState, &st)
	// Point the state at the new device ID so the client even asks.
	st.Device = info.Device
	b, _ := json.Marshal(st)
	os.WriteFile(filepath.Join(d.Dir, "device.json"), b, 0o600)
	hdr := rewriteDevice(t, j, info.Device)
	e.MustFail(d, hdr, "device "+d.ID+" was revoked")
	recs, _ = e.St.Audit(ctx, 0, 1000)
	if last := recs[len(recs)-1]; last.Device != d.ID || last.Decision != "deny" {
		t.Fatalf("an old JWE's unlock after re-enrolment is audited as %+v, want denied for %s", last, d.ID)
	}
	// The old JWE as it is names the old device: the client says what
	// that may mean.
	e.MustFail(d, j, "before it was revoked")
	e.VerifyAudit()
}

// rewriteDevice returns j with clevis.managed.device changed (the header is
// the AAD, so the result can never decrypt; this only gets the request sent).
func rewriteDevice(t *testing.T, j *jose.JWE, dev string) *jose.JWE {
	var ch map[string]map[string]any
	json.Unmarshal(j.Header.Clevis, &ch)
	ch["managed"]["device"] = dev
	nc, _ := json.Marshal(ch)
	h := j.Header
	h.Clevis = nc
	hb, _ := json.Marshal(h)
	c := *j
	c.Header, c.Protected = h, jose.B64.EncodeToString(hb)
	return &c
}

func TestDisableEnable(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token(""), "")
	j := d.Encrypt(t, "s")
	e.Admin.DeviceOp(ctx, d.ID, "disable", "in repair")
	e.MustFail(d, j, "disabled (in repair)")
	if ev := e.WaitHook("deny"); ev.Device != d.ID || !strings.Contains(ev.Reason, "disabled") {
		t.Fatalf("deny webhook: %+v", ev)
	}
	e.Admin.DeviceOp(ctx, d.ID, "enable", "")
	e.MustUnlock(d, j, "s")
}

func TestSourceNetworks(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	in := e.Enroll(e.Token(""), "127.0.0.1")
	j := in.Encrypt(t, "s")
	e.Admin.SetDevicePolicy(ctx, in.ID, policy.Policy{CIDRs: []string{"127.0.0.1/32"}})
	e.MustUnlock(in, j, "s")
	// The same device from a second loopback address is outside.
	out := *in
	out.From, out.Pin = "127.0.0.2", managedpin.Pin{LocalAddr: "127.0.0.2"}
	e.MustFail(&out, j, "source 127.0.0.2 is not in the allowed networks")
	// A group policy applies when the device sets none.
	e.Admin.SetDevicePolicy(ctx, in.ID, policy.Policy{})
	e.MustUnlock(&out, j, "s")
	e.Admin.SetGroup(ctx, "", policy.Policy{}) // no effect: device has no group
	d2 := e.Enroll(e.Token("lab"), "127.0.0.2")
	j2 := d2.Encrypt(t, "t")
	e.Admin.SetGroup(ctx, "lab", policy.Policy{CIDRs: []string{"10.0.0.0/8"}})
	e.MustFail(d2, j2, "not in the allowed networks")
}

func TestKeepAlive(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token(""), "")
	j := d.Encrypt(t, "s")
	e.Admin.SetDevicePolicy(ctx, d.ID, policy.Policy{KeepAlive: policy.Duration(5 * time.Minute)})
	id, _ := managedpin.LoadIdentity(d.Dir)
	c, _ := id.Client("")
	// Heartbeats keep it alive.
	for i := 0; i < 3; i++ {
		e.Clock.Advance(4 * time.Minute)
		if _, err := c.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.MustUnlock(d, j, "s")
	// Quiet for longer than the timeout: the sweep disables it.
	e.Clock.Advance(6 * time.Minute)
	if err := e.M.SweepKeepAlive(ctx); err != nil {
		t.Fatal(err)
	}
	ev := e.WaitHook("quiet")
	if ev.Device != d.ID {
		t.Fatalf("quiet webhook: %+v", ev)
	}
	// The event carries its audit record's hash: an anchor for the log.
	if recs, err := e.St.Audit(ctx, ev.Seq-1, 1); err != nil || len(recs) != 1 || recs[0].Hash() != ev.Hash {
		t.Fatalf("quiet webhook hash %q does not match audit record %d: %v %v", ev.Hash, ev.Seq, recs, err)
	}
	e.MustFail(d, j, "keep-alive timeout")
	// A late heartbeat does not undo it (Mandos semantics); an admin does.
	if info, err := c.Heartbeat(ctx); err != nil || info.State != "disabled" {
		t.Fatalf("heartbeat after timeout: %+v %v", info, err)
	}
	e.MustFail(d, j, "keep-alive timeout")
	e.Admin.DeviceOp(ctx, d.ID, "enable", "back from travel")
	e.MustUnlock(d, j, "s")
	// Without the sweep, an unlock itself notices the missed deadline.
	e.Clock.Advance(6 * time.Minute)
	e.MustFail(d, j, "keep-alive timeout")
	if rec, _ := e.St.Device(ctx, d.ID); rec.State != policy.Disabled {
		t.Fatalf("state after missed keep-alive: %s", rec.State)
	}
}

// A heartbeat client keeps its connection between beats unless it closes
// it (tether agent --close), and then the server sees it go.
func TestHeartbeatConnection(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token(""), "")
	id, _ := managedpin.LoadIdentity(d.Dir)
	c, _ := id.Client("")
	closedAfter := func() int64 {
		time.Sleep(200 * time.Millisecond)
		return e.Closed.Load()
	}
	base := closedAfter()
	for i := 0; i < 3; i++ {
		if _, err := c.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := closedAfter(); n != base {
		t.Fatalf("%d connections closed between kept-alive heartbeats", n-base)
	}
	c.CloseIdle()
	if n := closedAfter(); n != base+1 {
		t.Fatalf("CloseIdle: %d connections closed, want 1", n-base)
	}
}

// The sweep applies a group's keep-alive to its devices, and disables only
// the quiet ones.
func TestKeepAliveSweepGroups(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	e.Admin.SetGroup(ctx, "field", policy.Policy{KeepAlive: policy.Duration(10 * time.Minute)})
	alive, quiet := e.Enroll(e.Token("field"), ""), e.Enroll(e.Token("field"), "")
	other := e.Enroll(e.Token("lab"), "") // no keep-alive
	id, _ := managedpin.LoadIdentity(alive.Dir)
	c, _ := id.Client("")
	e.Clock.Advance(8 * time.Minute)
	if _, err := c.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(3 * time.Minute)
	if err := e.M.SweepKeepAlive(ctx); err != nil {
		t.Fatal(err)
	}
	for dev, want := range map[*servertest.Device]policy.State{alive: policy.Enabled, quiet: policy.Disabled, other: policy.Enabled} {
		if d, _ := e.St.Device(ctx, dev.ID); d.State != want {
			t.Errorf("%s: %s after the sweep, want %s", dev.ID, d.State, want)
		}
	}
}

func TestApproval(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{Config: managed.Config{ApprovalTimeout: 10 * time.Minute}})
	d := e.Enroll(e.Token(""), "")
	j := d.Encrypt(t, "s")
	yes := true
	e.Admin.SetDevicePolicy(ctx, d.ID, policy.Policy{Approval: &yes})

	// pending returns the one pending approval, waiting until it exists.
	pending := func() string {
		e.WaitHook("approval")
		as, err := e.Admin.Approvals(ctx)
		if err != nil || len(as) != 1 || as[0].Device != d.ID {
			t.Fatalf("approvals: %+v %v", as, err)
		}
		return as[0].ID
	}
	run := func() chan error {
		ch := make(chan error, 1)
		go func() {
			got, err := d.Decrypt(ctx, j)
			if err == nil && got != "s" {
				err = errors.New("wrong secret " + got)
			}
			ch <- err
		}()
		return ch
	}

	res := run()
	e.Admin.ApprovalOp(ctx, pending(), "approve")
	if err := <-res; err != nil {
		t.Fatalf("approved unlock: %v", err)
	}

	res = run()
	e.Admin.ApprovalOp(ctx, pending(), "deny")
	if err := <-res; err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("denied unlock: %v", err)
	}

	res = run()
	pending()
	e.Clock.Advance(11 * time.Minute)
	if err := <-res; err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("unlock past the approval deadline: %v", err)
	}

	// A lockdown while an approved request waited still wins.
	res = run()
	id := pending()
	e.Admin.Lockdown(ctx, true)
	e.Admin.ApprovalOp(ctx, id, "approve")
	if err := <-res; err == nil || !strings.Contains(err.Error(), "lockdown") {
		t.Fatalf("approved during lockdown: %v", err)
	}
	e.VerifyAudit()
}

func TestLockdown(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	a := e.Enroll(e.Token(""), "")
	b := e.Enroll(e.Token(""), "")
	ja, jb := a.Encrypt(t, "a"), b.Encrypt(t, "b")
	e.Admin.Lockdown(ctx, true)
	e.MustFail(a, ja, "lockdown")
	e.MustFail(b, jb, "lockdown")
	e.Admin.Lockdown(ctx, false)
	e.MustUnlock(a, ja, "a")
	e.MustUnlock(b, jb, "b")
}

func TestRateLimit(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token(""), "")
	j := d.Encrypt(t, "s")
	e.Admin.SetDevicePolicy(ctx, d.ID, policy.Policy{Rate: 2})
	e.MustUnlock(d, j, "s")
	e.MustUnlock(d, j, "s")
	e.MustFail(d, j, "rate limit")
	e.Clock.Advance(time.Minute)
	e.MustUnlock(d, j, "s")
}

func TestUnauthenticatedAndTamperedRequests(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token(""), "")
	j := d.Encrypt(t, "s")

	// No client certificate.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: servertest.InsecureTLS()}}
	resp, err := hc.Post(e.URL+"/v1/rec", "application/json", strings.NewReader(`{"kid":"x","x":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("request without a client certificate: %d", resp.StatusCode)
	}
	// A stranger: someone with a copy of the JWE and the device's state
	// file but another identity key.
	thief := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(d.Dir, "device.json"))
	os.WriteFile(filepath.Join(thief, "device.json"), b, 0o600)
	if _, err := (managedpin.FileKeyStore{}).Create(thief); err != nil {
		t.Fatal(err)
	}
	stranger := &servertest.Device{Dir: thief, ID: d.ID}
	cfgJWE := rewriteState(t, j, thief)
	e.MustFail(stranger, cfgJWE, "not enrolled")
	// Another enrolled device replaying the request gets an answer under
	// its own key, which is refused (kid) and useless anyway.
	other := e.Enroll(e.Token(""), "")
	e.MustFail(other, rewriteState(t, rewriteDevice(t, j, other.ID), other.Dir), "does not name this device's exchange key")
	// A tampered JWE does not decrypt (GCM over the header and ciphertext).
	tj := *j
	tj.Ciphertext = append([]byte{}, j.Ciphertext...)
	tj.Ciphertext[0] ^= 1
	e.MustFail(d, &tj, "authentication failed")
	// The admin API refuses a wrong token.
	bad := admin.NewClient(admin.Credentials{URL: e.URL, Pin: e.M.Pin(), Token: "wrong"})
	if _, err := bad.Devices(ctx); err == nil {
		t.Fatal("admin API accepted a wrong token")
	}
}

// rewriteState returns j with clevis.managed.state pointing at dir.
func rewriteState(t *testing.T, j *jose.JWE, dir string) *jose.JWE {
	var ch map[string]map[string]any
	json.Unmarshal(j.Header.Clevis, &ch)
	ch["managed"]["state"] = dir
	nc, _ := json.Marshal(ch)
	h := j.Header
	h.Clevis = nc
	hb, _ := json.Marshal(h)
	c := *j
	c.Header, c.Protected = h, jose.B64.EncodeToString(hb)
	return &c
}
