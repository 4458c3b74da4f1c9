package interop

import (
	"bytes"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestDecryptConnectsOnce: `tether decrypt` of a tang JWE makes its
// exchange with stock tangd on one connection (tang/client.go's direct
// path), with and without --timeout: a second connection would make a
// socket-activated tangd start a second process.
func TestDecryptConnectsOnce(t *testing.T) {
	t.Parallel()
	td := startTangd(t, "", t.TempDir(), true)
	proxy := testenv.StartProxy(t, td.Addr)
	jwe := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": proxy.URL, "thp": td.signingThp(t)}))
	before := proxy.Accepted()
	for _, args := range [][]string{{"decrypt"}, {"decrypt", "--timeout", "5s"}, {"decrypt", "--timeout=5s"}} {
		n := proxy.Accepted()
		if got := mustTether(t, jwe, args...); !bytes.Equal(got, secret) {
			t.Fatalf("tether %v: %q", args, got)
		}
		if d := proxy.Accepted() - n; d != 1 {
			t.Errorf("tether %v connected %d times, want once", args, d)
		}
	}
	if got := mustClevis(t, jwe, "decrypt"); !bytes.Equal(got, secret) {
		t.Fatalf("clevis decrypt: %q", got)
	}
	if before == proxy.Accepted() {
		t.Fatal("the proxy counted no connection: this test checks nothing")
	}
}
