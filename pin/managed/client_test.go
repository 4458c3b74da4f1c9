package managed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
)

// A server that accepts and never answers the TLS handshake costs the
// caller its own deadline, not the client's ceiling: in a boot storm the
// deadline is the caller's to choose. (6 s: longer than the 5 s the
// client once gave any handshake.)
func TestClientSilentServerHonoursDeadline(t *testing.T) {
	base := strings.Replace(testenv.Blackhole(t), "http://", "https://", 1)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, err := NewClient(base, "pin", &Identity{State: State{Device: "dev-x"}, Signer: key}, "")
	if err != nil {
		t.Fatal(err)
	}
	x, err := jose.P256.GenerateKey("ECMR", "deriveKey")
	if err != nil {
		t.Fatal(err)
	}
	for _, wait := range []time.Duration{300 * time.Millisecond, 6 * time.Second} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		start := time.Now()
		_, err = c.Rec(ctx, "kid", x.Public(), nil)
		took := time.Since(start)
		cancel()
		if err == nil || !strings.Contains(err.Error(), base) {
			t.Fatalf("silent server: %v (want an error naming %s)", err, base)
		}
		if took < wait-50*time.Millisecond || took > wait+time.Second {
			t.Fatalf("with a %v deadline the silent server took %v", wait, took)
		}
	}
}
