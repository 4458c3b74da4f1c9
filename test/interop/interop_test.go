package interop

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// clevis encrypt tang against tether server; clevis and tether decrypt.
func TestClevisEncryptAgainstTether(t *testing.T) {
	t.Parallel()
	srv := startTether(t, "", "")
	jwe := mustClevis(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": srv.signingThp(t)}))
	decryptBoth(t, jwe)
}

// tether encrypt tang against stock tangd; clevis and tether decrypt.
func TestTetherEncryptAgainstTangd(t *testing.T) {
	t.Parallel()
	td := startTangd(t, "", t.TempDir(), true)
	jwe := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": td.URL, "thp": td.signingThp(t)}))
	if h := jweHeader(t, jwe); h.Alg != "ECDH-ES" || h.Epk == nil || h.Epk.Crv != "P-521" {
		t.Errorf("header %+v", h)
	}
	decryptBoth(t, jwe)
}

// sss over tether servers and a tangd, made by clevis and by tether.
func TestSSSBothDirections(t *testing.T) {
	t.Parallel()
	a := startTether(t, "", "")
	b := startTether(t, "", "", "--curve", "P-256")
	c := startTangd(t, "", t.TempDir(), true)
	config := cfg(map[string]any{"t": 2, "pins": map[string]any{"tang": []map[string]string{
		{"url": a.URL, "thp": a.signingThp(t)},
		{"url": b.URL, "thp": b.signingThp(t)},
		{"url": c.URL, "thp": c.signingThp(t)},
	}}})
	for _, enc := range []struct {
		name string
		run  func() []byte
	}{
		{"clevis", func() []byte { return mustClevis(t, secret, "encrypt", "sss", config) }},
		{"tether", func() []byte { return mustTether(t, secret, "encrypt", "sss", config) }},
	} {
		t.Run("encrypted by "+enc.name, func(t *testing.T) {
			jwe := enc.run()
			if h := jweHeader(t, jwe); h.Alg != "dir" {
				t.Errorf("alg %q", h.Alg)
			}
			decryptBoth(t, jwe)
		})
	}
}

// After a rotation old JWEs still decrypt and /adv shows only the new
// keys: while the server runs, and after a restart.
func TestRotate(t *testing.T) {
	t.Parallel()
	srv := startTether(t, "", "")
	oldKeys := advKeys(t, nil, srv.URL)
	byClevis := mustClevis(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": srv.signingThp(t)}))
	byTether := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": srv.signingThp(t)}))

	time.Sleep(20 * time.Millisecond) // a distinct directory mtime
	mustTether(t, nil, "server", "keys", "rotate", "--data", srv.Data)
	check := func(when string) {
		newKeys := advKeys(t, nil, srv.URL)
		if len(newKeys) != 2 {
			t.Errorf("%s: /adv has %d keys, want 2", when, len(newKeys))
		}
		for _, k := range newKeys {
			if slices.Contains(oldKeys, k) {
				t.Errorf("%s: /adv still shows rotated key %s", when, k)
			}
		}
		decryptBoth(t, byClevis)
		decryptBoth(t, byTether)
		// New bindings use the new keys and work too.
		jwe := mustClevis(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": srv.signingThp(t)}))
		if kid := jweHeader(t, jwe).Kid; !slices.Contains(newKeys, kid) {
			t.Errorf("%s: new binding uses kid %s, not a new key", when, kid)
		}
		decryptBoth(t, jwe)
	}
	check("running")
	// keys list --all shows the rotated keys.
	out := string(mustTether(t, nil, "server", "keys", "list", "--all", "--data", srv.Data))
	if strings.Count(out, "rotated") != 2 || strings.Count(out, "advertised") != 2 {
		t.Errorf("keys list --all:\n%s", out)
	}
	if code := srv.stop(t); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	srv = startTether(t, srv.Addr, srv.Data)
	check("restarted")
}

// keys import of a tangd directory with a rotated key: JWEs made against
// that tangd decrypt against tether at the same address.
func TestImportTangd(t *testing.T) {
	t.Parallel()
	rotate := "/usr/libexec/tangd-rotate-keys"
	_, err := os.Stat(rotate)
	testenv.Require(t, err == nil, "tangd-rotate-keys is not installed")
	dir := t.TempDir()
	td := startTangd(t, "", dir, true)
	var jwes [][]byte
	// Two bindings to the first keys, one by clevis, one by tether.
	jwes = append(jwes,
		mustClevis(t, secret, "encrypt", "tang", cfg(map[string]string{"url": td.URL, "thp": td.signingThp(t)})),
		mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": td.URL, "thp": td.signingThp(t)})))
	// tangd's own rotation hides the first pair.
	if out, err := exec.Command(rotate, "-d", dir).CombinedOutput(); err != nil {
		t.Fatalf("tangd-rotate-keys: %v\n%s", err, out)
	}
	jwes = append(jwes, mustClevis(t, secret, "encrypt", "tang", cfg(map[string]string{"url": td.URL, "thp": td.signingThp(t)})))
	// A rotation by renaming, as admins did before tangd-rotate-keys.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(dir, "."+e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	if out, err := exec.Command("/usr/libexec/tangd-keygen", dir).CombinedOutput(); err != nil {
		t.Fatalf("tangd-keygen: %v\n%s", err, out)
	}
	jwes = append(jwes, mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": td.URL, "thp": td.signingThp(t)})))
	tangdAdv := advKeys(t, nil, td.URL)
	td.stop()

	data := t.TempDir()
	_, stderr, code := tether(t, nil, "server", "keys", "import", "--data", data, dir)
	if code != 0 || !strings.Contains(string(stderr), "6 keys imported") {
		t.Fatalf("keys import: exit %d\n%s", code, stderr)
	}
	srv := startTether(t, td.Addr, data)
	for i, jwe := range jwes {
		t.Logf("JWE %d", i)
		decryptBoth(t, jwe)
	}
	// tether advertises what tangd advertised.
	if got := advKeys(t, nil, srv.URL); !sameSet(got, tangdAdv) {
		t.Errorf("tether advertises %v, tangd advertised %v", got, tangdAdv)
	}
	// Importing again changes nothing.
	_, stderr, code = tether(t, nil, "server", "keys", "import", "--data", data, dir)
	if code != 0 || !strings.Contains(string(stderr), "0 keys imported") {
		t.Errorf("second import: exit %d\n%s", code, stderr)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// tangd serves the keys tether generated (the other direction of a move).
func TestTangdServesTetherKeys(t *testing.T) {
	t.Parallel()
	srv := startTether(t, "", "")
	jwe := mustClevis(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": srv.signingThp(t)}))
	srv.stop(t)
	startTangd(t, srv.Addr, filepath.Join(srv.Data, "tang"), false)
	decryptBoth(t, jwe)
}
