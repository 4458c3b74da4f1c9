package dashboard_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	managedpin "github.com/tether-nbde/tether/pin/managed"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/dashboard"
	"github.com/tether-nbde/tether/server/servertest"
	"github.com/tether-nbde/tether/store"
)

// env is the managed server of package servertest, with the dashboard
// helpers below.
type env struct{ *servertest.Env }

func newEnv(t *testing.T, mc server.ManagedConfig) *env { return &env{servertest.New(t, mc)} }

// uiClient is a browser stand-in: a cookie jar, and the Origin and CSRF
// headers the dashboard's page sends.
type uiClient struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func (e *env) uiClient() *uiClient {
	jar, _ := cookiejar.New(nil)
	return &uiClient{t: e.T, base: e.URL, c: &http.Client{Jar: jar,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// uiClientFrom is a browser at a loopback address of its own (127.0.0.2,
// ...: all of 127/8 is loopback), so that the server sees distinct
// client addresses.
func (e *env) uiClientFrom(local string) *uiClient {
	c := e.uiClient()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c.c.Transport.(*http.Transport).DialContext = d.DialContext
	return c
}

func (e *env) addUser(name, pw string) {
	e.T.Helper()
	if err := e.Admin.AddUser(context.Background(), name, pw); err != nil {
		e.T.Fatal(err)
	}
}

// login posts the sign-in form (from this origin unless origin says
// otherwise) and returns the response.
func (c *uiClient) login(name, pw, origin string) *http.Response {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.base+"/ui/login", strings.NewReader(url.Values{"name": {name}, "password": {pw}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin == "" {
		origin = c.base
	}
	if origin != "-" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (c *uiClient) mustLogin(name, pw string) {
	c.t.Helper()
	if r := c.login(name, pw, ""); r.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("sign-in: %s", r.Status)
	}
	var st dashboard.UIState
	if code := c.do("GET", "/ui/api/state", nil, nil, &st); code != 200 {
		c.t.Fatalf("state after sign-in: %d", code)
	}
	c.csrf = st.CSRF
}

// do sends a request with the page's headers; hdr overrides them ("" =
// leave the header out).
func (c *uiClient) do(method, path string, body any, hdr map[string]string, out any) int {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if method != "GET" {
		req.Header.Set("Origin", c.base)
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func TestUIPasswordHash(t *testing.T) {
	h, err := dashboard.HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=") || strings.Contains(h, "correct") {
		t.Fatalf("hash %q", h)
	}
	if !dashboard.VerifyPassword(h, "correct horse battery") || dashboard.VerifyPassword(h, "correct horse batterz") {
		t.Fatal("verify: wrong answers")
	}
	h2, _ := dashboard.HashPassword("correct horse battery")
	if h2 == h {
		t.Fatal("no salt: the same password hashed twice gives the same hash")
	}
	// Tampered parameters (a cheaper cost, absurd memory) or garbage never verify.
	for _, bad := range []string{strings.Replace(h, "t=2", "t=1", 1), strings.Replace(h, "m=19456", "m=99999999", 1),
		"", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "plaintext"} {
		if dashboard.VerifyPassword(bad, "correct horse battery") {
			t.Fatalf("tampered hash %q verifies", bad)
		}
	}
	if _, err := dashboard.HashPassword("short"); err == nil {
		t.Fatal("a 5-character password was accepted")
	}
}

func TestUISessionCookieAndExpiry(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{UI: dashboard.Config{SessionIdle: 30 * time.Minute, SessionMax: 2 * time.Hour}})
	e.addUser("alice", "alice-password-1")
	c := e.uiClient()
	r := c.login("alice", "wrong-password", "")
	if r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Fatalf("wrong password: %s, cookies %v", r.Status, r.Cookies())
	}
	if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 401 {
		t.Fatalf("state without a session: %d", code)
	}
	r = c.login("alice", "alice-password-1", "")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/" {
		t.Fatalf("sign-in: %s", r.Status)
	}
	ck := r.Cookies()
	if len(ck) != 1 || ck[0].Name != "__Host-tether-session" || !ck[0].Secure || !ck[0].HttpOnly ||
		ck[0].SameSite != http.SameSiteStrictMode || ck[0].Path != "/" || ck[0].Domain != "" {
		t.Fatalf("session cookie: %+v", ck)
	}
	// The store holds the cookie's hash, never the cookie.
	var st dashboard.UIState
	if code := c.do("GET", "/ui/api/state", nil, nil, &st); code != 200 || st.User != "alice" || st.CSRF == "" {
		t.Fatalf("state: %d %+v", code, st)
	}
	if _, err := e.St.(store.UIStore).Session(context.Background(), ck[0].Value); err == nil {
		t.Fatal("the session is stored under the cookie's value in clear")
	}

	// Idle: used every 20 minutes it lives on; background refreshes do
	// not count as use.
	for i := 0; i < 4; i++ {
		e.Clock.Advance(20 * time.Minute)
		if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 200 {
			t.Fatalf("session in use died after %d min", (i+1)*20)
		}
	}
	e.Clock.Advance(20 * time.Minute)
	c.do("GET", "/ui/api/state", nil, map[string]string{"X-Tether-Background": "1"}, nil)
	e.Clock.Advance(15 * time.Minute)
	if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 401 {
		t.Fatalf("idle session (35 min, background refresh only): %d, want 401", code)
	}
	// The page itself sends an expired session to sign-in.
	resp, _ := c.c.Get(e.URL + "/ui/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("page with an expired session: %s", resp.Status)
	}
	resp.Body.Close()

	// Absolute: however busy, a session ends SessionMax after sign-in.
	c.mustLogin("alice", "alice-password-1")
	for i := 0; i < 4; i++ {
		e.Clock.Advance(25 * time.Minute)
		if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 200 {
			t.Fatalf("busy session died after %d min", (i+1)*25)
		}
	}
	e.Clock.Advance(19 * time.Minute)
	if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 200 {
		t.Fatal("busy session died early (119 min)")
	}
	e.Clock.Advance(2 * time.Minute)
	if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 401 {
		t.Fatalf("session past its absolute limit (121 min > 2 h): %d", code)
	}

	// Signing out ends the session on the server, not just the cookie.
	c.mustLogin("alice", "alice-password-1")
	jar := c.c.Jar.(*cookiejar.Jar)
	u, _ := url.Parse(e.URL)
	saved := jar.Cookies(u)
	if code := c.do("POST", "/ui/logout", struct{}{}, nil, nil); code != 200 {
		t.Fatalf("sign out: %d", code)
	}
	jar.SetCookies(u, saved)
	if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 401 {
		t.Fatalf("replayed cookie after sign-out: %d", code)
	}
}

func TestUICSRF(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	e.addUser("alice", "alice-password-1")
	c := e.uiClient()
	c.mustLogin("alice", "alice-password-1")
	lockdown := func() string { v, _ := e.St.Setting(context.Background(), "lockdown"); return v }
	for name, hdr := range map[string]map[string]string{
		"no CSRF token":       {"X-CSRF-Token": ""},
		"wrong CSRF token":    {"X-CSRF-Token": "AAAA" + c.csrf[4:]},
		"cross-site origin":   {"Origin": "https://evil.example"},
		"no origin":           {"Origin": ""},
		"null origin":         {"Origin": "null"},
		"http origin":         {"Origin": strings.Replace(e.URL, "https:", "http:", 1)},
		"token, wrong origin": {"Origin": "https://evil.example", "X-CSRF-Token": c.csrf},
	} {
		if code := c.do("POST", "/ui/api/lockdown", admin.OnOff{On: true}, hdr, nil); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
		if lockdown() == "on" {
			t.Fatalf("%s: lockdown was turned on", name)
		}
	}
	// A forged sign-in (login CSRF) is refused too.
	if r := e.uiClient().login("alice", "alice-password-1", "https://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site sign-in: %s", r.Status)
	}
	if r := e.uiClient().login("alice", "alice-password-1", "-"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-in without Origin: %s", r.Status)
	}
	// The page's own request works, and is audited with alice's name.
	if code := c.do("POST", "/ui/api/lockdown", admin.OnOff{On: true}, nil, nil); code != 200 || lockdown() != "on" {
		t.Fatalf("lockdown from the page: %d, %q", code, lockdown())
	}
	recs, _ := e.St.Audit(context.Background(), 0, 1000)
	var found, refused bool
	for _, r := range recs {
		if r.Action == "lockdown" && r.Actor == "alice" && r.Source == "127.0.0.1" && r.Reason == "on" {
			found = true
		}
		if r.Action == "ui.refused" && r.Actor == "alice" && r.Decision == "deny" {
			refused = true
		}
	}
	if !found || !refused {
		t.Fatalf("audit lacks alice's lockdown (%v) or the refused forgeries (%v)", found, refused)
	}
	e.VerifyAudit()
}

func TestUILoginRateLimit(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	e.addUser("alice", "alice-password-1")
	c := e.uiClient()
	for i := 0; i < 5; i++ {
		if r := c.login("alice", "guess-number-"+string(rune('a'+i)), ""); r.StatusCode != 401 {
			t.Fatalf("guess %d: %s", i+1, r.Status)
		}
	}
	// The account is braked: even the right password waits.
	r := c.login("alice", "alice-password-1", "")
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("6th attempt: %s", r.Status)
	}
	e.Clock.Advance(61 * time.Second)
	if r := c.login("alice", "alice-password-1", ""); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("after a minute: %s", r.Status)
	}
	// Per address: spraying many account names from one address is braked.
	limited := false
	for i := 0; i < 25 && !limited; i++ {
		r := c.login("nobody"+string(rune('a'+i)), "whatever-password", "")
		limited = r.StatusCode == http.StatusTooManyRequests
	}
	if !limited {
		t.Fatal("25 failed sign-ins with different names from one address were never braked")
	}
}

// TestUILoginConcurrentGuesses: 200 wrong passwords sent at once from one
// address check no more passwords than the limit, and do not keep the
// owner out: she signs in at once from an address that has not failed.
func TestUILoginConcurrentGuesses(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	e.addUser("alice", "alice-password-1")
	stranger := e.uiClientFrom("127.0.0.2")
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := stranger.login("alice", fmt.Sprintf("wrong-guess-%03d", i), "")
			mu.Lock()
			codes[r.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	denied := 0
	recs, _ := e.St.Audit(context.Background(), 0, 10000)
	for _, r := range recs {
		if r.Action == "ui.login" && r.Decision == "deny" {
			denied++
		}
	}
	t.Logf("200 concurrent wrong passwords: %v, %d audited as checked", codes, denied)
	if codes[401] > 5 || denied > 5 || codes[401]+codes[429] != 200 {
		t.Fatalf("200 concurrent wrong passwords from one address: %v (%d checked and audited), want at most 5 checked", codes, denied)
	}
	owner := e.uiClientFrom("127.0.0.3")
	owner.mustLogin("alice", "alice-password-1")
}

// TestUILoginAccountBrake: guesses spread over many addresses brake the
// account with a short, growing delay — not a lockout: the owner's known
// address passes, the delay is at most a minute, and an administrator
// clears it.
func TestUILoginAccountBrake(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, server.ManagedConfig{})
	e.addUser("alice", "alice-password-1")
	e.uiClientFrom("127.0.0.3").mustLogin("alice", "alice-password-1") // her usual address
	checked, braked := 0, 0
	for a := 10; a < 20; a++ {
		c := e.uiClientFrom(fmt.Sprintf("127.0.0.%d", a))
		for i := 0; i < 5; i++ {
			switch r := c.login("alice", "wrong-password-x", ""); r.StatusCode {
			case 401:
				checked++
			case 429:
				braked++
				if s, _ := strconv.Atoi(r.Header.Get("Retry-After")); s < 1 || s > 61 {
					t.Fatalf("account brake: Retry-After %q, want 1 to 61 s", r.Header.Get("Retry-After"))
				}
			default:
				t.Fatalf("guess: %s", r.Status)
			}
		}
	}
	if checked > 11 || braked == 0 {
		t.Fatalf("50 guesses from 10 addresses: %d checked, %d braked; want the account braked after 10", checked, braked)
	}
	fresh := e.uiClientFrom("127.0.0.50")
	r := fresh.login("alice", "alice-password-1", "")
	if r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right password from a new address while braked: %s", r.Status)
	}
	e.uiClientFrom("127.0.0.3").mustLogin("alice", "alice-password-1")
	// A delay, not a lockout.
	secs, _ := strconv.Atoi(r.Header.Get("Retry-After"))
	e.Clock.Advance(time.Duration(secs) * time.Second)
	fresh.mustLogin("alice", "alice-password-1")

	// More guesses brake it again; the administrator clears the brake.
	for a := 20; a < 30; a++ {
		e.uiClientFrom(fmt.Sprintf("127.0.0.%d", a)).login("alice", "wrong-password-y", "")
	}
	other := e.uiClientFrom("127.0.0.51")
	if r := other.login("alice", "alice-password-1", ""); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right password from a new address while braked again: %s", r.Status)
	}
	if _, err := e.Admin.UnlockUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	other.mustLogin("alice", "alice-password-1")
}

func TestUIAuthorization(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	e.addUser("alice", "alice-password-1")
	anon := e.uiClient()
	for _, p := range [][2]string{{"GET", "/ui/api/state"}, {"GET", "/ui/api/audit"}, {"GET", "/ui/api/events"},
		{"POST", "/ui/api/tokens"}, {"POST", "/ui/api/devices/x/revoke"}, {"POST", "/ui/api/approvals/x/approve"},
		{"POST", "/ui/api/devices/x/pcr-states/ab/approve"},
		{"POST", "/ui/api/lockdown"}, {"POST", "/ui/api/keys/rotate"}, {"POST", "/ui/logout"}} {
		if code := anon.do(p[0], p[1], struct{}{}, nil, nil); code != 401 {
			t.Errorf("%s %s without a session: %d", p[0], p[1], code)
		}
	}
	c := e.uiClient()
	c.mustLogin("alice", "alice-password-1")
	// A dashboard session is not an admin token.
	if code := c.do("GET", "/v1/admin/devices", nil, nil, nil); code != 401 {
		t.Fatalf("admin API with a dashboard cookie: %d", code)
	}
	// Changing the password ends alice's sessions everywhere; so does
	// removing her.
	if err := e.Admin.SetPassword(context.Background(), "alice", "alice-password-2"); err != nil {
		t.Fatal(err)
	}
	if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 401 {
		t.Fatalf("session after password change: %d", code)
	}
	c.mustLogin("alice", "alice-password-2")
	if err := e.Admin.RemoveUser(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if code := c.do("GET", "/ui/api/state", nil, nil, nil); code != 401 {
		t.Fatalf("session after removal: %d", code)
	}
	if r := c.login("alice", "alice-password-2", ""); r.StatusCode != 401 {
		t.Fatalf("removed account signs in: %s", r.Status)
	}
	if err := e.Admin.AddUser(context.Background(), "bob", "short"); err == nil {
		t.Fatal("short password accepted")
	}
	users, _ := e.Admin.Users(context.Background())
	if len(users) != 0 {
		t.Fatalf("users: %+v", users)
	}
}

// TestUIDeviceFlow drives the dashboard API through a device's life:
// token with QR, enrolment, unlock (last unlock and source shown),
// approval, revoke; every change audited with the admin's name.
func TestUIDeviceFlow(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	e.addUser("alice", "alice-password-1")
	c := e.uiClient()
	c.mustLogin("alice", "alice-password-1")
	var tok dashboard.UIToken
	if code := c.do("POST", "/ui/api/tokens", admin.TokenRequest{Group: "nas"}, nil, &tok); code != 200 {
		t.Fatalf("token: %d", code)
	}
	if !strings.HasPrefix(tok.QR, "data:image/svg+xml;base64,") || !strings.Contains(tok.Command, tok.Token) {
		t.Fatalf("token reply: %+v", tok)
	}
	d := e.Enroll(tok.Token, "127.0.0.1")
	j := d.Encrypt(t, "s3cret")
	e.MustUnlock(d, j, "s3cret")
	var st dashboard.UIState
	c.do("GET", "/ui/api/state", nil, nil, &st)
	if len(st.Devices) != 1 || st.Devices[0].ID != d.ID || st.Devices[0].LastUnlock.IsZero() ||
		st.Devices[0].LastSource != "127.0.0.1" || st.Devices[0].State != "enabled" {
		t.Fatalf("devices: %+v", st.Devices)
	}
	// Approval required: the unlock waits until alice approves it.
	yes := true
	e.Admin.SetDevicePolicy(context.Background(), d.ID, policy.Policy{Approval: &yes})
	done := make(chan error, 1)
	go func() { _, err := d.Decrypt(context.Background(), j); done <- err }()
	var apr dashboard.UIApproval
	for deadline := time.Now().Add(10 * time.Second); ; {
		c.do("GET", "/ui/api/state", nil, nil, &st)
		if len(st.Approvals) == 1 {
			apr = st.Approvals[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pending approval shown")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if apr.Name != "host" || apr.Device != d.ID {
		t.Fatalf("approval: %+v", apr)
	}
	if code := c.do("POST", "/ui/api/approvals/"+apr.ID+"/approve", struct{}{}, nil, nil); code != 200 {
		t.Fatalf("approve: %d", code)
	}
	if err := <-done; err != nil {
		t.Fatalf("approved unlock: %v", err)
	}
	if code := c.do("POST", "/ui/api/devices/"+d.ID+"/revoke", admin.ChangeRequest{Reason: "stolen"}, nil, nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	e.MustFail(d, j, "revoked")
	var au dashboard.UIAudit
	c.do("GET", "/ui/api/audit?action=device.revoke&device="+d.ID, nil, nil, &au)
	if !au.Verified || len(au.Records) != 1 || au.Records[0].Action != "device.revoke" || au.Records[0].Actor != "alice" {
		t.Fatalf("audit view: %+v", au)
	}
	c.do("GET", "/ui/api/audit?decision=allow", nil, nil, &au)
	if len(au.Records) != 2 {
		t.Fatalf("allowed unlocks in the audit view: %d, want 2", len(au.Records))
	}
	// An edited row shows as a broken chain.
	db, err := sql.Open("sqlite", "file:"+e.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit SET reason='nothing to see' WHERE seq=2`); err != nil {
		t.Fatal(err)
	}
	c.do("GET", "/ui/api/audit", nil, nil, &au)
	if au.Verified || !strings.Contains(au.Error, "altered") {
		t.Fatalf("audit view after an edit: verified=%v %q", au.Verified, au.Error)
	}
}

// TestUIPCRApproval: a device that boots with new PCR values (after an
// update) asks the server, through its real client, to sign them for its
// signed tpm2 bindings; the dashboard lists them with the device's name,
// and approving them there makes the server sign; denying makes it
// refuse. Both decisions are audited with the admin's name.
func TestUIPCRApproval(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	e.addUser("alice", "alice-password-1")
	c := e.uiClient()
	c.mustLogin("alice", "alice-password-1")
	ctx := context.Background()
	d := e.Enroll(e.Token("fleet"), "127.0.0.1")
	signer, _, err := managedpin.EnrolledPCRSigner(ctx, d.Dir)
	if err != nil {
		t.Fatal(err)
	}
	boot := func(v byte) error {
		_, err := signer.Sign(ctx, "sha256", []int{11, 16}, [][]byte{bytes.Repeat([]byte{v}, 32), bytes.Repeat([]byte{v + 100}, 32)})
		return err
	}
	pending := func() []dashboard.UIPCRState {
		t.Helper()
		var st dashboard.UIState
		if code := c.do("GET", "/ui/api/state", nil, nil, &st); code != 200 {
			t.Fatalf("state: %d", code)
		}
		return st.PCRPending
	}
	if err := boot(1); err != nil {
		t.Fatalf("the device's first values: %v", err)
	}
	if p := pending(); len(p) != 0 {
		t.Fatalf("first values shown as waiting: %+v", p)
	}
	for _, op := range []string{"approve", "deny"} {
		v := byte(2)
		if op == "deny" {
			v = 3
		}
		if err := boot(v); !errors.Is(err, managedpin.ErrPCRsNotSigned) {
			t.Fatalf("new values before any decision: %v, want them waiting", err)
		}
		ps := pending()
		if len(ps) != 1 || ps[0].Device != d.ID || ps[0].Name != "host" || ps[0].PCRIDs != "11,16" || ps[0].Bank != "sha256" ||
			!strings.HasPrefix(ps[0].Values, "11=") || len(ps[0].Policy) != 64 {
			t.Fatalf("waiting PCR values in the dashboard: %+v", ps)
		}
		if code := c.do("POST", "/ui/api/devices/"+d.ID+"/pcr-states/"+ps[0].Policy+"/"+op, struct{}{}, nil, nil); code != 200 {
			t.Fatalf("%s: %d", op, code)
		}
		err := boot(v)
		if op == "approve" && err != nil {
			t.Fatalf("values approved in the dashboard: %v", err)
		}
		if op == "deny" && (err == nil || !strings.Contains(err.Error(), "denied")) {
			t.Fatalf("values denied in the dashboard: %v", err)
		}
		if p := pending(); len(p) != 0 {
			t.Fatalf("decided values still waiting: %+v", p)
		}
		var au dashboard.UIAudit
		c.do("GET", "/ui/api/audit?action=pcr."+op+"&device="+d.ID, nil, nil, &au)
		if len(au.Records) != 1 || au.Records[0].Actor != "alice" || !strings.Contains(au.Records[0].Reason, ps[0].Policy) {
			t.Fatalf("audit of pcr.%s: %+v", op, au.Records)
		}
	}
	// Unknown values: a clear refusal, nothing changed.
	if code := c.do("POST", "/ui/api/devices/"+d.ID+"/pcr-states/00ff/approve", struct{}{}, nil, nil); code != 404 {
		t.Fatalf("approving values nobody reported: %d, want 404", code)
	}
}

// TestUIDevicePages checks the device list's paging, search and state
// filter, and the counts over every device, on a fleet of 1,203.
func TestUIDevicePages(t *testing.T) {
	e := newEnv(t, server.ManagedConfig{})
	ctx := context.Background()
	const n = 1203
	for i := 0; i < n; i++ {
		d := &policy.Device{ID: fmt.Sprintf("dev-%04d", i), Name: fmt.Sprintf("node-%d", i), Group: "rack" + strconv.Itoa(i%3),
			KeyID: fmt.Sprintf("k%d", i), PublicKey: []byte{1}, State: policy.Enabled, ExchangeKey: []byte{1},
			ExchangePub: `{"kty":"EC"}`, Created: time.Unix(int64(1e9+i), 0), Updated: time.Unix(1e9, 0), LastSeen: time.Unix(1e9, 0)}
		switch {
		case i%10 == 0:
			d.State = policy.Disabled
		case i == 7:
			d.State, d.ExchangeKey = policy.Revoked, nil
		}
		if err := e.St.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	e.addUser("alice", "alice-password-1")
	c := e.uiClient()
	c.mustLogin("alice", "alice-password-1")
	ids := func(st dashboard.UIState) []string {
		var out []string
		for _, d := range st.Devices {
			out = append(out, d.ID)
		}
		return out
	}
	for _, tc := range []struct {
		query        string
		matched      int
		first, last  string
		pageLen      int
		wantedStatus int
	}{
		{"", n, "dev-0000", "dev-0099", 100, 200},
		{"?offset=1200", n, "dev-1200", "dev-1202", 3, 200},
		{"?offset=100&limit=500", n, "dev-0100", "dev-0599", 500, 200},
		{"?offset=5000", n, "", "", 0, 200},
		{"?state=disabled", 121, "dev-0000", "dev-0990", 100, 200},
		{"?state=revoked", 1, "dev-0007", "dev-0007", 1, 200},
		{"?q=NODE-119", 11, "dev-0119", "dev-1199", 11, 200}, // node-119, node-1190…1199: case-insensitive
		{"?q=rack2&state=enabled&limit=1", 361, "dev-0002", "dev-0002", 1, 200},
		{"?q=dev-1202", 1, "dev-1202", "dev-1202", 1, 200},
		{"?state=sleeping", 0, "", "", 0, 400},
		{"?limit=501", 0, "", "", 0, 400},
		{"?offset=-1", 0, "", "", 0, 400},
	} {
		var st dashboard.UIState
		code := c.do("GET", "/ui/api/state"+tc.query, nil, nil, &st)
		if code != tc.wantedStatus {
			t.Errorf("%s: status %d, want %d", tc.query, code, tc.wantedStatus)
			continue
		}
		if code != 200 {
			continue
		}
		got := ids(st)
		if st.DeviceTotal != n || st.DeviceMatched != tc.matched || len(got) != tc.pageLen ||
			(tc.pageLen > 0 && (got[0] != tc.first || got[len(got)-1] != tc.last)) {
			t.Errorf("%s: total %d matched %d page %d [%v … %v], want %d %d %d [%s … %s]", tc.query,
				st.DeviceTotal, st.DeviceMatched, len(got), first(got), last(got), n, tc.matched, tc.pageLen, tc.first, tc.last)
		}
		if st.DeviceCounts["enabled"] != 1081 || st.DeviceCounts["disabled"] != 121 || st.DeviceCounts["revoked"] != 1 {
			t.Errorf("%s: counts %v", tc.query, st.DeviceCounts)
		}
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}
