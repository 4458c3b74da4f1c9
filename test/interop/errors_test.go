package interop

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// Trust the advertisement as clevis does: thp, adv in the config, or -y.
func TestTrust(t *testing.T) {
	t.Parallel()
	srv := startTether(t, "", "")
	thp := srv.signingThp(t)
	advFile := saveAdv(t, srv.URL)
	advJSON, _ := os.ReadFile(advFile)

	// Right thumbprint, -y, "thp":"any": encrypted and decryptable.
	for _, c := range []struct {
		config string
		args   []string
	}{
		{cfg(map[string]string{"url": srv.URL, "thp": thp}), nil},
		{cfg(map[string]string{"url": srv.URL}), []string{"-y"}},
		{cfg(map[string]string{"url": srv.URL, "thp": "any"}), nil},
	} {
		jwe := mustTether(t, secret, append([]string{"encrypt", "tang", c.config}, c.args...)...)
		decryptBoth(t, jwe)
	}

	// Wrong thumbprint (another key of the server, and a made-up one).
	excThp := ""
	for _, k := range advKeys(t, nil, srv.URL) {
		if k != thp {
			excThp = k
		}
	}
	for _, wrong := range []string{excThp, "4sMoEsFIXGrBlMFuyDhWFt3a8vsNuCbHpQVMYFDO4ks"} {
		stdout, stderr, code := tether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": wrong}))
		line := failsCleanly(t, "wrong thp", stdout, stderr, code)
		if !strings.Contains(line, wrong) {
			t.Errorf("wrong thp: error does not name the thumbprint: %s", line)
		}
	}

	// No thp and no -y: refused, listing the thumbprint to check.
	stdout, stderr, code := tether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL}))
	line := failsCleanly(t, "untrusted", stdout, stderr, code)
	if !strings.Contains(line, thp) || !strings.Contains(line, "-y") {
		t.Errorf("untrusted: error does not list the thumbprint and -y: %s", line)
	}

	// adv in the config (object and file): works with the server down.
	srv.stop(t)
	for _, c := range []string{
		`{"url":"` + srv.URL + `","adv":` + string(advJSON) + `}`,
		cfg(map[string]string{"url": srv.URL, "adv": advFile}),
	} {
		jwe := mustTether(t, secret, "encrypt", "tang", c)
		if jweHeader(t, jwe).Kid == "" {
			t.Error("no kid")
		}
		// And decrypts once the server is back.
		s := startTether(t, srv.Addr, srv.Data)
		decryptBoth(t, jwe)
		s.stop(t)
	}
}

// sss t=2 of 3 with one server down (closed port) or silent (accepts,
// never answers): decryption does not wait for it. With two down it fails
// naming both.
func TestSSSDeadServers(t *testing.T) {
	t.Parallel()
	a := startTether(t, "", "")
	b := startTether(t, "", "")
	closed := testenv.ClosedPort(t)
	hole := testenv.Blackhole(t)
	adv := saveAdv(t, a.URL) // children on dead servers are bound offline
	child := func(url string) map[string]string {
		if url == a.URL || url == b.URL {
			return map[string]string{"url": url, "thp": "any"}
		}
		return map[string]string{"url": url, "adv": adv}
	}
	sss := func(urls ...string) string {
		var cs []map[string]string
		for _, u := range urls {
			cs = append(cs, child(u))
		}
		return cfg(map[string]any{"t": 2, "pins": map[string]any{"tang": cs}})
	}
	for _, c := range []struct {
		name string
		urls []string
	}{
		{"closed port", []string{closed, a.URL, b.URL}},
		{"blackhole", []string{a.URL, hole, b.URL}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			jwe := mustTether(t, secret, "encrypt", "sss", sss(c.urls...))
			start := time.Now()
			got := mustTether(t, jwe, "decrypt", "--timeout", "60s")
			if string(got) != string(secret) {
				t.Fatalf("decrypted %q", got)
			}
			// The dead server's 60 s timeout must not be waited for.
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("decrypt took %v: it waited for the dead server", d)
			}
			// clevis decrypts it too (it may wait for the blackhole: not ours).
			if c.name == "closed port" {
				if got := mustClevis(t, jwe, "decrypt"); string(got) != string(secret) {
					t.Errorf("clevis decrypt: %q", got)
				}
			}
		})
	}
	t.Run("two down", func(t *testing.T) {
		t.Parallel()
		jwe := mustTether(t, secret, "encrypt", "sss", sss(closed, hole, a.URL))
		stdout, stderr, code := tether(t, jwe, "decrypt", "--timeout", "1s")
		line := failsCleanly(t, "two down", stdout, stderr, code)
		for _, u := range []string{closed, hole} {
			if !strings.Contains(line, u) {
				t.Errorf("error does not name %s: %s", u, line)
			}
		}
	})
}

// Every error path of encrypt and decrypt: one clear line on stderr,
// non-zero exit, nothing on stdout.
func TestErrorPaths(t *testing.T) {
	t.Parallel()
	srv := startTether(t, "", "")
	closed := testenv.ClosedPort(t)
	hole := testenv.Blackhole(t)
	down := testenv.HostDown(t)
	good := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": "any"}))
	adv := saveAdv(t, srv.URL)
	toClosed := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": closed, "adv": adv}))
	// By name: the dial goes through the resolver.
	toClosedByName := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": strings.Replace(closed, "127.0.0.1", "localhost", 1), "adv": adv}))
	toHole := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": hole, "adv": adv}))
	toDown := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": down, "adv": adv}))
	// Tamper with the ciphertext (fourth part) of a good JWE.
	parts := strings.Split(string(good), ".")
	ct := []byte(parts[3])
	if ct[0] == 'A' {
		ct[0] = 'B'
	} else {
		ct[0] = 'A'
	}
	parts[3] = string(ct)
	tampered := []byte(strings.Join(parts, "."))
	// Tamper with the header: the AAD no longer matches.
	hdrTampered := []byte(strings.Replace(string(good), ".", "==.", 1))

	tests := []struct {
		name  string
		stdin []byte
		args  []string
		want  string // substring of the error line
		maxD  time.Duration
	}{
		{"encrypt unreachable", secret, []string{"encrypt", "tang", cfg(map[string]string{"url": closed}), "-y"}, "unreachable", 0},
		{"encrypt silent", secret, []string{"encrypt", "tang", cfg(map[string]string{"url": hole}), "-y", "--timeout", "1s"}, "did not answer", 20 * time.Second},
		{"decrypt unreachable", toClosed, []string{"decrypt"}, "unreachable: connect: connection refused", 0},
		{"decrypt unreachable by name", toClosedByName, []string{"decrypt"}, "unreachable: connect: connection refused", 0},
		{"decrypt silent", toHole, []string{"decrypt", "--timeout", "1s"}, "did not answer", 20 * time.Second},
		// The dialer's 5 s connect bound ends it, well before the pin's
		// 60 s, and says the server was not reached.
		{"decrypt host down", toDown, []string{"decrypt", "--timeout", "60s"}, "unreachable", 30 * time.Second},
		{"wrong thp", secret, []string{"encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": "nope"})}, "nope", 0},
		{"tampered ciphertext", tampered, []string{"decrypt"}, "tampered", 0},
		{"tampered header", hdrTampered, []string{"decrypt"}, "tampered", 0},
		{"truncated JWE", good[:len(good)/2], []string{"decrypt"}, "jwe", 0},
		{"not a JWE", []byte("hello"), []string{"decrypt"}, "jwe", 0},
		{"empty input", nil, []string{"decrypt"}, "jwe", 0},
		{"config not JSON", secret, []string{"encrypt", "tang", "{url:"}, "not valid JSON", 0},
		{"config without url", secret, []string{"encrypt", "tang", `{"thp":"x"}`}, "url", 0},
		{"config wrong type", secret, []string{"encrypt", "tang", `{"url":5}`}, "malformed", 0},
		{"sss bad t", secret, []string{"encrypt", "sss", `{"t":3,"pins":{"tang":[{"url":"http://x"}]}}`}, "threshold", 0},
		{"sss no pins", secret, []string{"encrypt", "sss", `{"t":1}`}, "pins", 0},
		{"unknown pin", secret, []string{"encrypt", "nosuch", `{}`}, "nosuch", 0},
		{"adv file missing", secret, []string{"encrypt", "tang", cfg(map[string]string{"url": srv.URL, "adv": "/nonexistent.jws"})}, "advertisement", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			stdout, stderr, code := tether(t, tc.stdin, tc.args...)
			line := failsCleanly(t, tc.name, stdout, stderr, code)
			if !strings.Contains(strings.ToLower(line), strings.ToLower(tc.want)) {
				t.Errorf("error line does not mention %q: %s", tc.want, line)
			}
			if tc.maxD > 0 && time.Since(start) > tc.maxD {
				t.Errorf("took %v, more than %v", time.Since(start), tc.maxD)
			}
		})
	}
}
