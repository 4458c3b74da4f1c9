package managed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
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

// A server (or a proxy in front of it) that answers a pending approval's
// long poll at once is asked again at most every minPoll, not in a tight
// loop that floods it and the audit log for as long as the approval waits.
func TestClientPendingApprovalPaces(t *testing.T) {
	var polls atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		polls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"approval":"ap-1","deadline":%q}`, time.Now().Add(time.Hour).Format(time.RFC3339))
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	defer srv.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, err := NewClient(srv.URL, SPKIPin(srv.Certificate().RawSubjectPublicKeyInfo), &Identity{State: State{Device: "dev-x"}, Signer: key}, "")
	if err != nil {
		t.Fatal(err)
	}
	x, err := jose.P256.GenerateKey("ECMR", "deriveKey")
	if err != nil {
		t.Fatal(err)
	}
	told := 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Rec(ctx, "kid", x.Public(), func(string, time.Time) { told++ })
	if err == nil {
		t.Fatal("Rec returned a key from a server that only ever said pending")
	}
	// 5 s at one poll per 2 s: 3 requests; a tight loop makes thousands.
	if n := polls.Load(); n < 2 || n > 4 {
		t.Errorf("%d requests in 5 s for a pending approval, want about 3", n)
	}
	if told != 1 {
		t.Errorf("waiting was told %d times, want once", told)
	}
}
