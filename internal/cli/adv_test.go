package cli_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

type advJSON struct {
	URL     string `json:"url"`
	Signing []struct {
		Crv, S256, S1 string
	} `json:"signing"`
	Exchange []struct {
		Crv, S256, S1 string
	} `json:"exchange"`
	Config struct{ URL, Thp string } `json:"config"`
	Adv    json.RawMessage           `json:"adv"`
}

// showKeys runs Debian's tang-show-keys against the server on url's port,
// and jose's pipeline with S1 for the SHA-1 thumbprints: the outputs a
// Tang user knows.
func showKeys(t *testing.T, url string) (s256, s1 []string) {
	t.Helper()
	testenv.RequireCmd(t, "tang-show-keys")
	testenv.RequireCmd(t, "jose")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
	out, err := exec.Command("tang-show-keys", port).Output()
	if err != nil {
		t.Fatalf("tang-show-keys %s: %v", port, err)
	}
	s256 = strings.Fields(string(out))
	sh := `adv=$(curl -sSf "$1/adv") && jose fmt --json "$adv" -g payload -y -o- | jose jwk use -i- -r -u verify -o- | jose jwk thp -i- -a S1`
	out, err = exec.Command("sh", "-c", sh, "sh", url).Output()
	if err != nil {
		t.Fatalf("jose jwk thp -a S1: %v", err)
	}
	s1 = strings.Fields(string(out))
	if len(s256) == 0 || len(s1) != len(s256) {
		t.Fatalf("tang-show-keys: %q, S1: %q", s256, s1)
	}
	return s256, s1
}

// TestAdv: "tether adv" shows the thumbprints tang-show-keys shows, for a
// stock tangd and for tether's server, and the configuration it prints
// binds to that server.
func TestAdv(t *testing.T) {
	bin := testenv.TetherBin(t)
	tangd := testenv.StartTangd(t)
	srv := testenv.StartServer(t, "")
	for _, s := range []struct{ name, url string }{{"tangd", tangd.URL}, {"tether server", srv.URL}} {
		s256, s1 := showKeys(t, s.url)
		o, e, code := testenv.Run(t, nil, bin, "adv", "--json", s.url)
		if code != 0 {
			t.Fatalf("%s: tether adv --json: exit %d\n%s", s.name, code, e)
		}
		var r advJSON
		if err := json.Unmarshal(o, &r); err != nil {
			t.Fatalf("%s: tether adv --json: %v\n%s", s.name, err, o)
		}
		if len(r.Signing) != len(s256) {
			t.Fatalf("%s: %d signing keys, tang-show-keys shows %d", s.name, len(r.Signing), len(s256))
		}
		for i, k := range r.Signing {
			if k.S256 != s256[i] || k.S1 != s1[i] {
				t.Errorf("%s: signing key %d: S256 %s S1 %s, tang-show-keys and jose say %s %s", s.name, i, k.S256, k.S1, s256[i], s1[i])
			}
		}
		if len(r.Exchange) == 0 || r.Exchange[0].S256 == "" || r.Config.URL != s.url || r.Config.Thp != s256[0] {
			t.Errorf("%s: exchange keys %v, config %+v", s.name, r.Exchange, r.Config)
		}
		// The text form carries the same thumbprints and a bind line.
		o, e, code = testenv.Run(t, nil, bin, "adv", s.url)
		cfg := `'{"url":"` + s.url + `","thp":"` + s256[0] + `"}'`
		if code != 0 || !strings.Contains(string(o), "S256 "+s256[0]) || !strings.Contains(string(o), "S1   "+s1[0]) ||
			!strings.Contains(string(o), "tether luks bind -d DEVICE tang "+cfg) {
			t.Errorf("%s: tether adv: exit %d\n%s%s", s.name, code, o, e)
		}
		// The printed configuration binds, without -y, and decrypts.
		c, _ := json.Marshal(r.Config)
		jwe, e, code := testenv.Run(t, []byte("secret"), bin, "encrypt", "tang", string(c))
		if code != 0 {
			t.Fatalf("%s: tether encrypt tang %s: exit %d\n%s", s.name, c, code, e)
		}
		if out, e, code := testenv.Run(t, jwe, bin, "decrypt"); code != 0 || string(out) != "secret" {
			t.Errorf("%s: decrypt: exit %d %q\n%s", s.name, code, out, e)
		}
		// --thp checks a pin: the right one passes, another fails.
		if _, e, code := testenv.Run(t, nil, bin, "adv", s.url, "--thp", s1[0]); code != 0 {
			t.Errorf("%s: tether adv --thp S1: exit %d\n%s", s.name, code, e)
		}
		if _, e, code := testenv.Run(t, nil, bin, "adv", s.url, "--thp", r.Exchange[0].S256); code != 1 ||
			!strings.Contains(string(e), "is not one of its signing keys") || !strings.Contains(string(e), "tether: hint: ") {
			t.Errorf("%s: tether adv --thp EXCHANGE-KEY: exit %d (want 1)\n%s", s.name, code, e)
		}
	}
}

// TestAdvRefusesForgery: an advertisement whose keys were changed after
// signing, or that is not one at all, is refused with exit 1 and no output.
func TestAdvRefusesForgery(t *testing.T) {
	bin := testenv.TetherBin(t)
	tangd := testenv.StartTangd(t)
	resp, err := http.Get(tangd.URL + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	var adv map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&adv); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Swap the signature for the protected header's bytes: well-formed,
	// wrong.
	sig := []byte(adv["signature"])
	sig[10] ^= 'A' ^ 'B'
	if sig[10] == adv["signature"][10] {
		sig[10] = 'C'
	}
	forged := map[string]string{"payload": adv["payload"], "protected": adv["protected"], "signature": string(sig)}
	for name, body := range map[string]any{"bad signature": forged, "not an advertisement": map[string]string{"hello": "world"}} {
		b, _ := json.Marshal(body)
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(b) }))
		o, e, code := testenv.Run(t, nil, bin, "adv", ts.URL)
		ts.Close()
		if code != 1 || len(o) != 0 || !strings.Contains(string(e), "tether: error: verify advertisement of "+ts.URL) ||
			!strings.Contains(string(e), "do not pin it") {
			t.Errorf("%s: exit %d (want 1)\nstdout %s\nstderr %s", name, code, o, e)
		}
	}
	if _, e, code := testenv.Run(t, nil, bin, "adv", testenv.ClosedPort(t)); code != 1 || !strings.Contains(string(e), "unreachable") {
		t.Errorf("closed port: exit %d (want 1)\n%s", code, e)
	}
	for _, args := range [][]string{{"adv"}, {"adv", "keys.lan"}, {"adv", "http://a", "http://b"}} {
		if _, e, code := testenv.Run(t, nil, bin, args...); code != 2 {
			t.Errorf("tether %s: exit %d (want 2)\n%s", strings.Join(args, " "), code, e)
		}
	}
}
