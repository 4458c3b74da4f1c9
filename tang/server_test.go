package tang_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

// keyDir is a key directory with one visible and one hidden (rotated)
// signing/exchange pair.
type keyDir struct {
	dir                  string
	sig, exc             *jose.JWK // visible
	hiddenSig, hiddenExc *jose.JWK
}

// newKeyDir makes a key directory with tether's own code: a pair, a
// rotation, so the first pair is hidden.
func newKeyDir(t testing.TB, c *jose.Curve) *keyDir {
	t.Helper()
	dir := t.TempDir()
	if _, err := tang.GenerateKeys(dir, c); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tang.Rotate(dir, c); err != nil {
		t.Fatal(err)
	}
	return readKeyDir(t, dir)
}

// tangdKeyDir makes a key directory with tangd's own tools: tangd-keygen,
// then tangd-rotate-keys, which hides the first pair and makes a new one.
func tangdKeyDir(t testing.TB) *keyDir {
	t.Helper()
	for _, f := range []string{"/usr/libexec/tangd-keygen", "/usr/libexec/tangd-rotate-keys"} {
		_, err := os.Stat(f)
		testenv.Require(t, err == nil, "tang ("+f+") is not installed")
	}
	dir := t.TempDir()
	if out, err := exec.Command("/usr/libexec/tangd-keygen", dir).CombinedOutput(); err != nil {
		t.Fatalf("tangd-keygen: %v\n%s", err, out)
	}
	if out, err := exec.Command("/usr/libexec/tangd-rotate-keys", "-d", dir).CombinedOutput(); err != nil {
		t.Fatalf("tangd-rotate-keys: %v\n%s", err, out)
	}
	return readKeyDir(t, dir)
}

func readKeyDir(t testing.TB, dir string) *keyDir {
	t.Helper()
	keys, err := tang.LoadKeyDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	kd := &keyDir{dir: dir}
	for _, k := range keys {
		switch {
		case k.Signing() && k.Hidden:
			kd.hiddenSig = k.JWK
		case k.Signing():
			kd.sig = k.JWK
		case k.Hidden:
			kd.hiddenExc = k.JWK
		default:
			kd.exc = k.JWK
		}
	}
	if kd.sig == nil || kd.exc == nil || kd.hiddenSig == nil || kd.hiddenExc == nil {
		t.Fatalf("key directory %s: want a visible and a hidden pair, got %d keys", dir, len(keys))
	}
	return kd
}

// copyDir copies the *.jwk files of src to a new directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func thp(t testing.TB, k *jose.JWK, alg string) string {
	t.Helper()
	tp, err := k.Thumbprint(alg)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// recBody returns a valid /rec body for exchange key s, and a check that
// the server's reply recovers the key bound with it.
func recBody(t testing.TB, s *jose.JWK) (string, func(reply []byte) error) {
	t.Helper()
	epk, z, err := tang.Bind(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	r, err := tang.NewRecovery(epk, s.Public())
	if err != nil {
		t.Fatal(err)
	}
	return mustJSON(r.Request), func(reply []byte) error {
		y, err := jose.ParseJWK(reply)
		if err != nil {
			return fmt.Errorf("reply %q: %v", reply, err)
		}
		got, err := r.Finish(y)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, z) {
			return fmt.Errorf("recovered Z differs from the bound Z")
		}
		return nil
	}
}

// offCurve returns k's public point with y changed, so that it is not on
// the curve any more.
func offCurve(k *jose.JWK) *jose.JWK {
	p := k.Public()
	p.KeyOps = nil
	y, _ := jose.B64.DecodeString(p.Y)
	y[len(y)-1] ^= 1
	p.Y = jose.B64.EncodeToString(y)
	p.Alg = "ECMR"
	return p
}

type rawReq struct {
	name   string
	method string
	path   string
	body   string
	header string // extra header lines, each ending in \r\n
	want   int
	// check, if set, inspects a 200 reply body.
	check func(t testing.TB, body []byte)
}

func (r rawReq) bytes() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: localhost\r\n%s", r.method, r.path, r.header)
	if r.method == "POST" {
		fmt.Fprintf(&b, "Content-Type: application/jwk+json\r\nContent-Length: %d\r\n", len(r.body))
	}
	b.WriteString("\r\n")
	b.WriteString(r.body)
	return []byte(b.String())
}

// do sends one raw request on a new connection, so that paths reach the
// server exactly as written (no client-side cleaning of "//adv").
func do(t testing.TB, addr string, r rawReq) (int, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(r.bytes()); err != nil {
		t.Fatalf("%s: write: %v", r.name, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: read response: %v", r.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// advSigs checks that an advertisement verifies and has n signatures.
func advSigs(n int, extra *jose.JWK) func(t testing.TB, body []byte) {
	return func(t testing.TB, body []byte) {
		t.Helper()
		ks, ver, err := tang.VerifyAdvertisement(body)
		if err != nil {
			t.Fatalf("advertisement does not verify: %v\n%s", err, body)
		}
		if len(ks.Keys) != 2 || len(ver) != 1 {
			t.Errorf("advertisement has %d keys, %d verify keys; want 2 and 1", len(ks.Keys), len(ver))
		}
		for _, k := range ks.Keys {
			if k.D != "" {
				t.Errorf("advertisement leaks a private key")
			}
		}
		jws, err := jose.ParseJWS(body)
		if err != nil {
			t.Fatal(err)
		}
		if len(jws.Signatures) != n {
			t.Errorf("advertisement has %d signatures, want %d", len(jws.Signatures), n)
		}
		var generic map[string]json.RawMessage
		json.Unmarshal(body, &generic)
		_, general := generic["signatures"]
		if general != (n > 1) {
			t.Errorf("advertisement with %d signatures: general serialization = %v", n, general)
		}
		if extra != nil && !jws.VerifiedBy(extra.Public()) {
			t.Errorf("advertisement is not signed by the requested key")
		}
	}
}

// requestTable is the Tang protocol's status-code table for the keys of kd.
func requestTable(t testing.TB, kd *keyDir) []rawReq {
	valid, _ := recBody(t, kd.exc)
	var x map[string]any
	json.Unmarshal([]byte(valid), &x)
	with := func(k string, v any) string {
		m := map[string]any{}
		for k, v := range x {
			m[k] = v
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return mustJSON(m)
	}
	other := jose.P256
	if kd.exc.Crv == other.Name {
		other = jose.P384
	}
	mismatch, _ := other.GenerateKey("ECMR")
	mismatch.D = ""
	mismatch.KeyOps = nil
	huge := with("pad", strings.Repeat("A", 70<<10))
	tt := []rawReq{
		{name: "adv", method: "GET", path: "/adv", want: 200, check: advSigs(1, nil)},
		{name: "adv slash", method: "GET", path: "/adv/", want: 200, check: advSigs(1, nil)},
		{name: "double slash", method: "GET", path: "//adv", want: 200, check: advSigs(1, nil)},
		{name: "adv hidden sig S256", method: "GET", path: "/adv/" + thp(t, kd.hiddenSig, "S256"), want: 200, check: advSigs(2, kd.hiddenSig)},
		{name: "adv hidden sig S1", method: "GET", path: "/adv/" + thp(t, kd.hiddenSig, "S1"), want: 200, check: advSigs(2, kd.hiddenSig)},
		{name: "adv exchange kid", method: "GET", path: "/adv/" + thp(t, kd.exc, "S256"), want: 404},
		{name: "adv hidden exchange kid", method: "GET", path: "/adv/" + thp(t, kd.hiddenExc, "S256"), want: 404},
		{name: "adv unknown kid", method: "GET", path: "/adv/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", want: 404},
		{name: "root", method: "GET", path: "/", want: 404},
		{name: "unknown path", method: "GET", path: "/foo", want: 404},
		{name: "POST adv", method: "POST", path: "/adv", body: "{}", want: 405},
		{name: "GET rec", method: "GET", path: "/rec/" + thp(t, kd.exc, "S256"), want: 405},
		{name: "rec signing kid", method: "POST", path: "/rec/" + thp(t, kd.sig, "S256"), body: valid, want: 403},
		{name: "rec hidden signing kid", method: "POST", path: "/rec/" + thp(t, kd.hiddenSig, "S256"), body: valid, want: 403},
		{name: "rec unknown kid", method: "POST", path: "/rec/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", body: valid, want: 404},
		{name: "rec bad json", method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: "{not json", want: 400},
		{name: "rec wrong kty", method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: with("kty", "oct"), want: 400},
		{name: "rec alg not ECMR", method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: with("alg", "ES512"), want: 400},
		{name: "rec off curve", method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: mustJSON(offCurve(kd.exc)), want: 400},
		{name: "rec curve mismatch", method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: mustJSON(mismatch), want: 400},
		{name: "rec key_ops without deriveKey", method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: with("key_ops", []string{"sign"}), want: 403},
		{name: "rec body too large", method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: huge, want: 413},
		{name: "rec without kid", method: "POST", path: "/rec", body: valid, want: 404},
		{name: "rec slash without kid", method: "POST", path: "/rec/", body: valid, want: 404},
		{name: "adv two levels", method: "GET", path: "/adv/" + thp(t, kd.sig, "S256") + "/x", want: 404},
		{name: "rec private d", method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: with("d", kd.exc.D), want: 400},
		{name: "path too long", method: "GET", path: "/adv/" + strings.Repeat("A", 5000), want: 414},
	}
	for _, alg := range jose.ThumbprintAlgs {
		// tangd adds the requested signature even when the key already
		// signed: two signatures, general JSON.
		tt = append(tt, rawReq{name: "adv sig " + alg, method: "GET", path: "/adv/" + thp(t, kd.sig, alg), want: 200, check: advSigs(2, kd.sig)})
	}
	// Successful recoveries, each with a fresh body whose reply is checked.
	for _, c := range []struct {
		name string
		k    *jose.JWK
		alg  string
		mod  func(string) string
	}{
		{"rec S256", kd.exc, "S256", nil},
		{"rec S1", kd.exc, "S1", nil},
		{"rec S224", kd.exc, "S224", nil},
		{"rec S384", kd.exc, "S384", nil},
		{"rec S512", kd.exc, "S512", nil},
		{"rec hidden exchange key", kd.hiddenExc, "S256", nil},
		{"rec no alg", kd.exc, "S256", func(b string) string { return strings.Replace(b, `"alg":"ECMR",`, "", 1) }},
		{"rec key_ops deriveKey", kd.exc, "S256", func(b string) string {
			return strings.Replace(b, `"alg":"ECMR",`, `"alg":"ECMR","key_ops":["deriveKey"],`, 1)
		}},
	} {
		body, verify := recBody(t, c.k)
		if c.mod != nil {
			body = c.mod(body)
		}
		tt = append(tt, rawReq{name: c.name, method: "POST", path: "/rec/" + thp(t, c.k, c.alg), body: body, want: 200,
			header: "Content-Type: text/nonsense\r\nX-Ignored: yes\r\n",
			check: func(t testing.TB, reply []byte) {
				t.Helper()
				if err := verify(reply); err != nil {
					t.Error(err)
				}
			}})
	}
	return tt
}

func startHandler(t testing.TB, dir, prefix string) string {
	t.Helper()
	s := &tang.Server{Dir: dir, Prefix: prefix}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

// TestHandlerStatusCodes checks tether's handler against the protocol
// table, for each curve, with keys tether generated.
func TestHandlerStatusCodes(t *testing.T) {
	t.Parallel()
	for _, c := range []*jose.Curve{jose.P521, jose.P384, jose.P256} {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			kd := newKeyDir(t, c)
			addr := startHandler(t, kd.dir, "")
			for _, r := range requestTable(t, kd) {
				code, body := do(t, addr, r)
				if code != r.want {
					t.Errorf("%s: %s %.60s: got %d, want %d (%s)", r.name, r.method, r.path, code, r.want, bytes.TrimSpace(body))
					continue
				}
				if r.check != nil {
					r.check(t, body)
				}
			}
		})
	}
}

// TestSameAsTangd sends every request of the table to a stock tangd and to
// tether serving copies of the same key directory, and compares. It runs
// once on keys made by tangd's tools and once on keys made by tether.
func TestSameAsTangd(t *testing.T) {
	t.Parallel()
	for _, src := range []struct {
		name string
		make func(testing.TB) *keyDir
	}{
		{"tangd keys", tangdKeyDir},
		{"tether keys", func(t testing.TB) *keyDir { return newKeyDir(t, jose.P521) }},
	} {
		t.Run(src.name, func(t *testing.T) {
			t.Parallel()
			kd := src.make(t)
			tangd := testenv.StartTangdDir(t, copyDir(t, kd.dir), false)
			tangdAddr := strings.TrimPrefix(tangd.URL, "http://")
			tetherAddr := startHandler(t, copyDir(t, kd.dir), "")
			for _, r := range requestTable(t, kd) {
				tc, tbody := do(t, tangdAddr, r)
				ec, ebody := do(t, tetherAddr, r)
				if tc != ec {
					t.Errorf("%s: %s %.60s: tangd %d, tether %d (table says %d)\ntangd: %s\ntether: %s",
						r.name, r.method, r.path, tc, ec, r.want, bytes.TrimSpace(tbody), bytes.TrimSpace(ebody))
				}
				if tc != r.want {
					t.Errorf("%s: tangd answered %d, the table says %d", r.name, tc, r.want)
				}
				if tc == 200 && r.check != nil {
					r.check(t, tbody)
				}
			}
		})
	}
}

// TestKeepAlive sends several requests on one connection, to tether and to
// tangd.
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	kd := newKeyDir(t, jose.P521)
	servers := map[string]func(t *testing.T) string{
		"tether": func(t *testing.T) string { return startHandler(t, kd.dir, "") },
		"tangd": func(t *testing.T) string {
			return strings.TrimPrefix(testenv.StartTangdDir(t, copyDir(t, kd.dir), false).URL, "http://")
		},
	}
	for name, start := range servers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			addr := start(t)
			body1, verify1 := recBody(t, kd.exc)
			body2, verify2 := recBody(t, kd.hiddenExc)
			reqs := []rawReq{
				{method: "GET", path: "/adv", want: 200},
				{method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: body1, want: 200},
				{method: "GET", path: "/adv/" + thp(t, kd.exc, "S256"), want: 404},
				{method: "POST", path: "/rec/" + thp(t, kd.hiddenExc, "S1"), body: body2, want: 200},
				{method: "GET", path: "/adv/", want: 200},
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			for i, r := range reqs {
				if _, err := c.Write(r.bytes()); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("request %d on the same connection: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != r.want {
					t.Errorf("request %d %s %s: got %d, want %d", i, r.method, r.path, resp.StatusCode, r.want)
				}
				switch i {
				case 1:
					if err := verify1(body); err != nil {
						t.Error(err)
					}
				case 3:
					if err := verify2(body); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
}

// TestPrefix checks the optional path prefix (tangd -e in newer tang).
func TestPrefix(t *testing.T) {
	t.Parallel()
	kd := newKeyDir(t, jose.P256)
	for _, prefix := range []string{"/tang", "tang/", "/tang/"} {
		addr := startHandler(t, kd.dir, prefix)
		body, _ := recBody(t, kd.exc)
		for _, r := range []rawReq{
			{method: "GET", path: "/tang/adv", want: 200},
			{method: "GET", path: "//tang//adv/", want: 200},
			{method: "GET", path: "/tang/adv/" + thp(t, kd.sig, "S256"), want: 200},
			{method: "POST", path: "/tang/rec/" + thp(t, kd.exc, "S256"), body: body, want: 200},
			{method: "GET", path: "/adv", want: 404},
			{method: "GET", path: "/tangx/adv", want: 404},
			{method: "GET", path: "/other/tang/adv", want: 404},
			{method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: body, want: 404},
		} {
			if code, _ := do(t, addr, r); code != r.want {
				t.Errorf("prefix %q: %s %s: got %d, want %d", prefix, r.method, r.path, code, r.want)
			}
		}
	}
}

// TestReloadOnChange checks that a rotation by another process is served
// (within the server's 10 ms recheck), without a reload call.
func TestReloadOnChange(t *testing.T) {
	t.Parallel()
	kd := newKeyDir(t, jose.P256)
	addr := startHandler(t, kd.dir, "")
	_, before := advKeys(t, addr)
	// Directory mtimes have a granularity; make sure the change is visible.
	time.Sleep(20 * time.Millisecond)
	if _, _, err := tang.Rotate(kd.dir, jose.P256); err != nil {
		t.Fatal(err)
	}
	_, after := advKeys(t, addr)
	if before == after {
		t.Fatalf("advertisement did not change after a rotation")
	}
	// The pair advertised before still recovers.
	body, verify := recBody(t, kd.exc)
	code, reply := do(t, addr, rawReq{method: "POST", path: "/rec/" + thp(t, kd.exc, "S256"), body: body})
	if code != 200 {
		t.Fatalf("rec with the rotated key: %d", code)
	}
	if err := verify(reply); err != nil {
		t.Fatal(err)
	}
}

func advKeys(t testing.TB, addr string) (*jose.KeySet, string) {
	t.Helper()
	code, body := do(t, addr, rawReq{method: "GET", path: "/adv"})
	if code != 200 {
		t.Fatalf("GET /adv: %d", code)
	}
	ks, _, err := tang.VerifyAdvertisement(body)
	if err != nil {
		t.Fatal(err)
	}
	return ks, mustJSON(ks)
}
