package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/managed"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/store"
)

// clock is a settable clock for keep-alive and approval deadlines.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a managed server on a real TLS loopback listener with a real
// SQLite store, and an admin client.
type env struct {
	t      *testing.T
	url    string
	admin  *server.AdminClient
	clock  *clock
	dbPath string
	st     store.Store
	m      *server.Managed
	hooks  chan server.Event
	bodies *bodyLog
	stop   func()       // takes the managed API down (the server is gone)
	closed atomic.Int64 // connections the managed API has seen close
}

// bodyLog keeps every request body the server received.
type bodyLog struct {
	mu sync.Mutex
	b  [][]byte
}

func (l *bodyLog) all() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Join(l.b, []byte("\n"))
}

func newEnv(t *testing.T, mc server.ManagedConfig) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, clock: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, hooks: make(chan server.Event, 100), bodies: &bodyLog{}}
	e.dbPath = filepath.Join(t.TempDir(), "tether.db")
	st, err := store.OpenSQLite(ctx, e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	key := make([]byte, 32)
	rand.Read(key)
	kek, _ := server.NewKEK(key)
	// A webhook receiver.
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev server.Event
		json.NewDecoder(r.Body).Decode(&ev)
		e.hooks <- ev
	})}
	go hs.Serve(hl)
	mc.Webhooks = append(mc.Webhooks, "http://"+hl.Addr().String())
	mc.Now = e.clock.Now
	m, adminTok, err := server.NewManaged(ctx, st, kek, mc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if adminTok == "" {
		t.Fatal("first start made no admin token")
	}
	e.m = m
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := m.Handler()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		e.bodies.mu.Lock()
		e.bodies.b = append(e.bodies.b, b)
		e.bodies.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		h.ServeHTTP(w, r)
	}), TLSConfig: m.TLSConfig(), ErrorLog: log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				e.closed.Add(1)
			}
		}}
	go srv.Serve(tlsListener(ln, srv))
	e.stop = func() { srv.Close() }
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
		m.Close()
		st.Close()
	})
	e.url = "https://" + ln.Addr().String()
	e.admin = server.NewAdminClient(server.AdminConfig{URL: e.url, Pin: m.Pin(), Token: adminTok})
	return e
}

// device is an enrolled device with its state directory.
type device struct {
	dir  string
	id   string
	from string // source address
	pin  managed.Pin
}

func (e *env) token(group string) string {
	e.t.Helper()
	tok, err := e.admin.CreateToken(context.Background(), server.TokenRequest{Group: group})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.Token
}

func (e *env) enroll(token, from string) *device {
	e.t.Helper()
	dir := e.t.TempDir()
	id, info, err := managed.Enroll(context.Background(), managed.EnrollOptions{Server: e.url, Token: token, Pin: e.m.Pin(), Dir: dir, Name: "host", LocalAddr: from})
	if err != nil {
		e.t.Fatalf("enroll: %v", err)
	}
	if id.State.Device != info.Device {
		e.t.Fatal("state and reply disagree")
	}
	return &device{dir: dir, id: info.Device, from: from, pin: managed.Pin{LocalAddr: from}}
}

func (d *device) encrypt(t *testing.T, secret string) *jose.JWE {
	t.Helper()
	cfg, _ := json.Marshal(managed.Config{State: d.dir})
	j, err := d.pin.Encrypt(context.Background(), cfg, []byte(secret), pin.Options{})
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	// Round trip through the compact form, as a JWE on disk would.
	j, err = jose.ParseCompact(j.Compact())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (d *device) decrypt(ctx context.Context, j *jose.JWE) (string, error) {
	out, err := d.pin.Decrypt(ctx, j, pin.Options{})
	return string(out), err
}

func (e *env) mustUnlock(d *device, j *jose.JWE, want string) {
	e.t.Helper()
	got, err := d.decrypt(context.Background(), j)
	if err != nil {
		e.t.Fatalf("unlock: %v", err)
	}
	if got != want {
		e.t.Fatalf("unlock gave %q, want %q", got, want)
	}
}

func (e *env) mustFail(d *device, j *jose.JWE, reason string) error {
	e.t.Helper()
	_, err := d.decrypt(context.Background(), j)
	if err == nil {
		e.t.Fatal("unlock succeeded, want refusal")
	}
	if !strings.Contains(err.Error(), reason) {
		e.t.Fatalf("unlock error %q does not say %q", err, reason)
	}
	return err
}

func (e *env) waitHook(event string) server.Event {
	e.t.Helper()
	for ev := range e.hooks {
		if ev.Event == event {
			return ev
		}
	}
	panic("unreachable")
}

func (e *env) verifyAudit() {
	e.t.Helper()
	if _, err := e.admin.VerifyAudit(context.Background()); err != nil {
		e.t.Fatalf("audit chain: %v", err)
	}
}

func TestEnrollBindUnlock(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	d := e.enroll(e.token("laptops"), "")
	j := d.encrypt(t, "disk passphrase")
	e.mustUnlock(d, j, "disk passphrase")
	e.waitHook("unlock")

	// Blinding: the server never received the JWE's epk c (nor could it
	// compute K); it saw only x = c + E·G.
	if bytes.Contains(e.bodies.all(), []byte(j.Header.Epk.X)) {
		t.Fatal("the server received the JWE's epk: the request is not blinded")
	}
	devs, _ := e.admin.Devices(context.Background())
	if len(devs) != 1 || devs[0].ID != d.id || devs[0].State != "enabled" || devs[0].Group != "laptops" {
		t.Fatalf("devices: %+v", devs)
	}
	// The device's key at rest is wrapped, never the JWK in clear.
	raw, _ := e.st.Device(context.Background(), d.id)
	if bytes.Contains(raw.ExchangeKey, []byte(`"d"`)) || bytes.Contains(raw.ExchangeKey, []byte("ECMR")) {
		t.Fatal("exchange key is stored in clear")
	}
	e.verifyAudit()
}

func TestTokenIsOneTimeAndPinned(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	tok := e.token("")
	e.enroll(tok, "")
	_, _, err := managed.Enroll(context.Background(), managed.EnrollOptions{Server: e.url, Token: tok, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second use of a token: %v", err)
	}
	// A token whose pin is not this server's key: the device refuses to
	// talk (someone in the middle, or the wrong server).
	other := newEnv(t, server.ManagedConfig{})
	_, _, err = managed.Enroll(context.Background(), managed.EnrollOptions{Server: e.url, Token: other.token(""), Dir: t.TempDir()})
	if !errors.Is(err, managed.ErrPin) {
		t.Fatalf("enrol against a server that does not match the token's pin: %v", err)
	}
}

func TestPendingEnrollmentNeedsApproval(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	if err := e.admin.EnrollOpen(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	d := e.enroll("", "")
	j := d.encrypt(t, "s")
	e.mustFail(d, j, "pending")
	if _, err := e.admin.DeviceOp(context.Background(), d.id, "approve", ""); err != nil {
		t.Fatal(err)
	}
	e.mustUnlock(d, j, "s")
	// Open enrolment can be turned off.
	e.admin.EnrollOpen(context.Background(), false)
	_, _, err := managed.Enroll(context.Background(), managed.EnrollOptions{Server: e.url, Pin: e.m.Pin(), Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "only enrols devices with a token") {
		t.Fatalf("tokenless enrolment with open enrolment off: %v", err)
	}
}

// TestTokenlessEnrollment: off unless turned on; when on, a few per
// address, a cap on pending devices (also under concurrency), and host
// names only.
func TestTokenlessEnrollment(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{MaxPending: 5})
	try := func(from, name string) error {
		_, _, err := managed.Enroll(ctx, managed.EnrollOptions{Server: e.url, Pin: e.m.Pin(), Dir: t.TempDir(), Name: name, LocalAddr: from})
		return err
	}
	if err := try("127.0.0.2", "host-a"); err == nil || !strings.Contains(err.Error(), "only enrols devices with a token") {
		t.Fatalf("tokenless enrolment on a fresh server: %v", err)
	}
	if err := e.admin.EnrollOpen(ctx, true); err != nil {
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
	page, err := e.st.DevicePage(ctx, store.DeviceQuery{State: policy.Pending, Limit: 1})
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
	e.enroll(e.token(""), "127.0.2.1")
}

func TestRevokeIsForever(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	d := e.enroll(e.token(""), "")
	j := d.encrypt(t, "top secret")
	e.mustUnlock(d, j, "top secret")
	oldState, _ := os.ReadFile(filepath.Join(d.dir, "device.json"))

	if _, err := e.admin.DeviceOp(ctx, d.id, "revoke", "stolen"); err != nil {
		t.Fatal(err)
	}
	e.mustFail(d, j, "device "+d.id+" was revoked (stolen)")
	// The attempt is in the revoked device's own record.
	recs, _ := e.st.Audit(ctx, 0, 1000)
	if last := recs[len(recs)-1]; last.Action != "unlock" || last.Device != d.id || last.Decision != "deny" {
		t.Fatalf("a revoked device's unlock is audited as %+v, want an unlock denied for %s", last, d.id)
	}
	rec, _ := e.st.Device(ctx, d.id)
	if rec.State != policy.Revoked || rec.ExchangeKey != nil {
		t.Fatalf("after revoke: state %s, key present %v", rec.State, rec.ExchangeKey != nil)
	}
	// Nothing brings it back: not enable, not a re-enrolment of the same
	// identity key (which makes a new device with a new exchange key).
	if _, err := e.admin.DeviceOp(ctx, d.id, "enable", ""); err == nil {
		t.Fatal("a revoked device was re-enabled")
	}
	os.Remove(filepath.Join(d.dir, "device.json"))
	_, info, err := managed.Enroll(ctx, managed.EnrollOptions{Server: e.url, Token: e.token(""), Dir: d.dir})
	if err != nil {
		t.Fatal(err)
	}
	if info.Device == d.id {
		t.Fatal("re-enrolment revived the revoked device")
	}
	// With the old state file (old device ID) and the same identity key,
	// the old JWE still cannot be decrypted: the key it needs is gone.
	os.WriteFile(filepath.Join(d.dir, "device.json"), oldState, 0o600)
	var st managed.State
	json.Unmarshal(oldState, &st)
	// Point the state at the new device ID so the client even asks.
	st.Device = info.Device
	b, _ := json.Marshal(st)
	os.WriteFile(filepath.Join(d.dir, "device.json"), b, 0o600)
	hdr := rewriteDevice(t, j, info.Device)
	e.mustFail(d, hdr, "device "+d.id+" was revoked")
	recs, _ = e.st.Audit(ctx, 0, 1000)
	if last := recs[len(recs)-1]; last.Device != d.id || last.Decision != "deny" {
		t.Fatalf("an old JWE's unlock after re-enrolment is audited as %+v, want denied for %s", last, d.id)
	}
	// The old JWE as it is names the old device: the client says what
	// that may mean.
	e.mustFail(d, j, "before it was revoked")
	e.verifyAudit()
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
	e := newEnv(t, server.ManagedConfig{})
	d := e.enroll(e.token(""), "")
	j := d.encrypt(t, "s")
	e.admin.DeviceOp(ctx, d.id, "disable", "in repair")
	e.mustFail(d, j, "disabled (in repair)")
	if ev := e.waitHook("deny"); ev.Device != d.id || !strings.Contains(ev.Reason, "disabled") {
		t.Fatalf("deny webhook: %+v", ev)
	}
	e.admin.DeviceOp(ctx, d.id, "enable", "")
	e.mustUnlock(d, j, "s")
}

func TestSourceNetworks(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	in := e.enroll(e.token(""), "127.0.0.1")
	j := in.encrypt(t, "s")
	e.admin.SetDevicePolicy(ctx, in.id, policy.Policy{CIDRs: []string{"127.0.0.1/32"}})
	e.mustUnlock(in, j, "s")
	// The same device from a second loopback address is outside.
	out := *in
	out.from, out.pin = "127.0.0.2", managed.Pin{LocalAddr: "127.0.0.2"}
	e.mustFail(&out, j, "source 127.0.0.2 is not in the allowed networks")
	// A group policy applies when the device sets none.
	e.admin.SetDevicePolicy(ctx, in.id, policy.Policy{})
	e.mustUnlock(&out, j, "s")
	e.admin.SetGroup(ctx, "", policy.Policy{}) // no effect: device has no group
	d2 := e.enroll(e.token("lab"), "127.0.0.2")
	j2 := d2.encrypt(t, "t")
	e.admin.SetGroup(ctx, "lab", policy.Policy{CIDRs: []string{"10.0.0.0/8"}})
	e.mustFail(d2, j2, "not in the allowed networks")
}

func TestKeepAlive(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	d := e.enroll(e.token(""), "")
	j := d.encrypt(t, "s")
	e.admin.SetDevicePolicy(ctx, d.id, policy.Policy{KeepAlive: policy.Duration(5 * time.Minute)})
	id, _ := managed.LoadIdentity(d.dir)
	c, _ := id.Client("")
	// Heartbeats keep it alive.
	for i := 0; i < 3; i++ {
		e.clock.Advance(4 * time.Minute)
		if _, err := c.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.mustUnlock(d, j, "s")
	// Quiet for longer than the timeout: the sweep disables it.
	e.clock.Advance(6 * time.Minute)
	if err := e.m.SweepKeepAlive(ctx); err != nil {
		t.Fatal(err)
	}
	ev := e.waitHook("quiet")
	if ev.Device != d.id {
		t.Fatalf("quiet webhook: %+v", ev)
	}
	// The event carries its audit record's hash: an anchor for the log.
	if recs, err := e.st.Audit(ctx, ev.Seq-1, 1); err != nil || len(recs) != 1 || recs[0].Hash() != ev.Hash {
		t.Fatalf("quiet webhook hash %q does not match audit record %d: %v %v", ev.Hash, ev.Seq, recs, err)
	}
	e.mustFail(d, j, "keep-alive timeout")
	// A late heartbeat does not undo it (Mandos semantics); an admin does.
	if info, err := c.Heartbeat(ctx); err != nil || info.State != "disabled" {
		t.Fatalf("heartbeat after timeout: %+v %v", info, err)
	}
	e.mustFail(d, j, "keep-alive timeout")
	e.admin.DeviceOp(ctx, d.id, "enable", "back from travel")
	e.mustUnlock(d, j, "s")
	// Without the sweep, an unlock itself notices the missed deadline.
	e.clock.Advance(6 * time.Minute)
	e.mustFail(d, j, "keep-alive timeout")
	if rec, _ := e.st.Device(ctx, d.id); rec.State != policy.Disabled {
		t.Fatalf("state after missed keep-alive: %s", rec.State)
	}
}

// A heartbeat client keeps its connection between beats unless it closes
// it (tether agent --close), and then the server sees it go.
func TestHeartbeatConnection(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	d := e.enroll(e.token(""), "")
	id, _ := managed.LoadIdentity(d.dir)
	c, _ := id.Client("")
	closedAfter := func() int64 {
		time.Sleep(200 * time.Millisecond)
		return e.closed.Load()
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
	e := newEnv(t, server.ManagedConfig{})
	e.admin.SetGroup(ctx, "field", policy.Policy{KeepAlive: policy.Duration(10 * time.Minute)})
	alive, quiet := e.enroll(e.token("field"), ""), e.enroll(e.token("field"), "")
	other := e.enroll(e.token("lab"), "") // no keep-alive
	id, _ := managed.LoadIdentity(alive.dir)
	c, _ := id.Client("")
	e.clock.Advance(8 * time.Minute)
	if _, err := c.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(3 * time.Minute)
	if err := e.m.SweepKeepAlive(ctx); err != nil {
		t.Fatal(err)
	}
	for dev, want := range map[*device]policy.State{alive: policy.Enabled, quiet: policy.Disabled, other: policy.Enabled} {
		if d, _ := e.st.Device(ctx, dev.id); d.State != want {
			t.Errorf("%s: %s after the sweep, want %s", dev.id, d.State, want)
		}
	}
}

func TestApproval(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{ApprovalTimeout: 10 * time.Minute})
	d := e.enroll(e.token(""), "")
	j := d.encrypt(t, "s")
	yes := true
	e.admin.SetDevicePolicy(ctx, d.id, policy.Policy{Approval: &yes})

	// pending returns the one pending approval, waiting until it exists.
	pending := func() string {
		e.waitHook("approval")
		as, err := e.admin.Approvals(ctx)
		if err != nil || len(as) != 1 || as[0].Device != d.id {
			t.Fatalf("approvals: %+v %v", as, err)
		}
		return as[0].ID
	}
	run := func() chan error {
		ch := make(chan error, 1)
		go func() {
			got, err := d.decrypt(ctx, j)
			if err == nil && got != "s" {
				err = errors.New("wrong secret " + got)
			}
			ch <- err
		}()
		return ch
	}

	res := run()
	e.admin.ApprovalOp(ctx, pending(), "approve")
	if err := <-res; err != nil {
		t.Fatalf("approved unlock: %v", err)
	}

	res = run()
	e.admin.ApprovalOp(ctx, pending(), "deny")
	if err := <-res; err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("denied unlock: %v", err)
	}

	res = run()
	pending()
	e.clock.Advance(11 * time.Minute)
	if err := <-res; err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("unlock past the approval deadline: %v", err)
	}

	// A lockdown while an approved request waited still wins.
	res = run()
	id := pending()
	e.admin.Lockdown(ctx, true)
	e.admin.ApprovalOp(ctx, id, "approve")
	if err := <-res; err == nil || !strings.Contains(err.Error(), "lockdown") {
		t.Fatalf("approved during lockdown: %v", err)
	}
	e.verifyAudit()
}

func TestLockdown(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	a := e.enroll(e.token(""), "")
	b := e.enroll(e.token(""), "")
	ja, jb := a.encrypt(t, "a"), b.encrypt(t, "b")
	e.admin.Lockdown(ctx, true)
	e.mustFail(a, ja, "lockdown")
	e.mustFail(b, jb, "lockdown")
	e.admin.Lockdown(ctx, false)
	e.mustUnlock(a, ja, "a")
	e.mustUnlock(b, jb, "b")
}

func TestRateLimit(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	d := e.enroll(e.token(""), "")
	j := d.encrypt(t, "s")
	e.admin.SetDevicePolicy(ctx, d.id, policy.Policy{Rate: 2})
	e.mustUnlock(d, j, "s")
	e.mustUnlock(d, j, "s")
	e.mustFail(d, j, "rate limit")
	e.clock.Advance(time.Minute)
	e.mustUnlock(d, j, "s")
}

func TestUnauthenticatedAndTamperedRequests(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	d := e.enroll(e.token(""), "")
	j := d.encrypt(t, "s")

	// No client certificate.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	resp, err := hc.Post(e.url+"/v1/rec", "application/json", strings.NewReader(`{"kid":"x","x":{}}`))
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
	b, _ := os.ReadFile(filepath.Join(d.dir, "device.json"))
	os.WriteFile(filepath.Join(thief, "device.json"), b, 0o600)
	if _, err := (managed.FileKeyStore{}).Create(thief); err != nil {
		t.Fatal(err)
	}
	stranger := &device{dir: thief, id: d.id}
	cfgJWE := rewriteState(t, j, thief)
	e.mustFail(stranger, cfgJWE, "not enrolled")
	// Another enrolled device replaying the request gets an answer under
	// its own key, which is refused (kid) and useless anyway.
	other := e.enroll(e.token(""), "")
	e.mustFail(other, rewriteState(t, rewriteDevice(t, j, other.id), other.dir), "does not name this device's exchange key")
	// A tampered JWE does not decrypt (GCM over the header and ciphertext).
	tj := *j
	tj.Ciphertext = append([]byte{}, j.Ciphertext...)
	tj.Ciphertext[0] ^= 1
	e.mustFail(d, &tj, "authentication failed")
	// The admin API refuses a wrong token.
	bad := server.NewAdminClient(server.AdminConfig{URL: e.url, Pin: e.m.Pin(), Token: "wrong"})
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

func tlsListener(ln net.Listener, srv *http.Server) net.Listener {
	return tls.NewListener(ln, srv.TLSConfig)
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

func TestAuditChainDetectsEdits(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	d := e.enroll(e.token(""), "")
	j := d.encrypt(t, "s")
	e.mustUnlock(d, j, "s")
	e.admin.DeviceOp(ctx, d.id, "disable", "")
	e.mustFail(d, j, "disabled")
	ch, err := e.admin.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Seq < 5 {
		t.Fatalf("only %d audit records", ch.Seq)
	}
	// Edit one row behind the server's back.
	db, err := sql.Open("sqlite", e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var orig string
	if err := db.QueryRow(`SELECT reason FROM audit WHERE seq=3`).Scan(&orig); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit SET reason='nothing to see' WHERE seq=3`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.VerifyAudit(ctx); err == nil || !strings.Contains(err.Error(), "altered") {
		t.Fatalf("verify after editing a record: %v", err)
	}
	// Deleting a record is detected too.
	db.Exec(`UPDATE audit SET reason=$1 WHERE seq=3`, orig)
	if _, err := e.admin.VerifyAudit(ctx); err != nil {
		t.Fatalf("after restoring the record: %v", err)
	}
	db.Exec(`DELETE FROM audit WHERE seq=2`)
	if _, err := e.admin.VerifyAudit(ctx); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("verify after deleting a record: %v", err)
	}
}
