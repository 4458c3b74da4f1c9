package interop

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// TestDecryptConnectsOnce: `tether decrypt` of a tang JWE whose server is
// an IPv4 address opens its connection during init (internal/earlydial);
// the exchange must then go over that connection, not a second one, with
// and without --timeout, against stock tangd.
func TestDecryptConnectsOnce(t *testing.T) {
	t.Parallel()
	td := startTangd(t, "", t.TempDir(), true)
	proxy, conns := countingProxy(t, td.Addr)
	jwe := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": "http://" + proxy, "thp": td.signingThp(t)}))
	before := conns()
	for _, args := range [][]string{{"decrypt"}, {"decrypt", "--timeout", "5s"}, {"decrypt", "--timeout=5s"}} {
		n := conns()
		if got := mustTether(t, jwe, args...); !bytes.Equal(got, secret) {
			t.Fatalf("tether %v: %q", args, got)
		}
		if d := conns() - n; d != 1 {
			t.Errorf("tether %v connected %d times, want once", args, d)
		}
	}
	if got := mustClevis(t, jwe, "decrypt"); !bytes.Equal(got, secret) {
		t.Fatalf("clevis decrypt: %q", got)
	}
	if before == conns() {
		t.Fatal("the proxy counted no connection: this test checks nothing")
	}
}

// countingProxy forwards loopback connections to target. It returns its
// address and a function that counts the connections it has accepted.
func countingProxy(t *testing.T, target string) (string, func() int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				done := make(chan struct{})
				go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite(); close(done) }()
				io.Copy(c, s)
				<-done
			}()
		}
	}()
	// A client's connection is accepted before it can have its answer, so
	// the count is exact once the client has exited.
	return l.Addr().String(), func() int64 { return n.Load() }
}
