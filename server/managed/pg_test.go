package managed_test

import (
	"context"
	"crypto/rand"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tether-nbde/tether/audit"
	managedpin "github.com/tether-nbde/tether/pin/managed"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/server/servertest"
	"github.com/tether-nbde/tether/store"
	"github.com/tether-nbde/tether/store/pgtest"
)

// replica is one managed server process's worth of state, in-process.
type replica struct {
	m     *server.Managed
	srv   *http.Server
	addr  string
	st    store.Store
	admin *admin.Client
}

func startReplica(t *testing.T, dsn string, kek *managed.KEK, adminTok *string) *replica {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	m, tok, err := server.NewManaged(ctx, st, kek, server.ManagedConfig{Config: managed.Config{UnlockRate: -1}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		*adminTok = tok
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: m.Handler(), TLSConfig: m.TLSConfig(), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(servertest.TLSListener(ln, srv))
	r := &replica{m: m, srv: srv, addr: ln.Addr().String(), st: st}
	t.Cleanup(func() { srv.Close(); m.Close(); st.Close() })
	return r
}

// balancer is a TCP pass-through load balancer (TLS ends at the replicas),
// round robin over the live backends.
type balancer struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string
	n        int
}

func newBalancer(t *testing.T, backends ...string) *balancer {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	b := &balancer{ln: ln, backends: backends}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			to := b.backends[b.n%len(b.backends)]
			b.n++
			b.mu.Unlock()
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer s.Close()
				go io.Copy(s, c)
				io.Copy(c, s)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return b
}

func (b *balancer) set(backends ...string) {
	b.mu.Lock()
	b.backends = backends
	b.mu.Unlock()
}

func TestTwoReplicasOnPostgres(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t)
	dsn := pg.CreateDB(t, "replicas")
	key := make([]byte, 32)
	rand.Read(key)
	kek, _ := managed.NewKEK(key)
	var adminTok string
	a := startReplica(t, dsn, kek, &adminTok)
	b := startReplica(t, dsn, kek, &adminTok)
	if a.m.Pin() != b.m.Pin() {
		t.Fatal("replicas present different TLS keys: devices could not fail over")
	}
	// A replica with another KEK refuses to start.
	other := make([]byte, 32)
	rand.Read(other)
	okek, _ := managed.NewKEK(other)
	st, _ := store.Open(ctx, dsn)
	if _, _, err := server.NewManaged(ctx, st, okek, server.ManagedConfig{}, nil); err == nil || !strings.Contains(err.Error(), "different key-encryption key") {
		t.Fatalf("replica with a wrong KEK: %v", err)
	}
	st.Close()

	lb := newBalancer(t, a.addr)
	url := "https://" + lb.ln.Addr().String()
	adminA := admin.NewClient(admin.Credentials{URL: "https://" + a.addr, Pin: a.m.Pin(), Token: adminTok})
	adminB := admin.NewClient(admin.Credentials{URL: "https://" + b.addr, Pin: b.m.Pin(), Token: adminTok})

	enroll := func() *servertest.Device {
		tok, err := adminB.CreateToken(ctx, admin.TokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		_, info, err := managedpin.Enroll(ctx, managedpin.EnrollOptions{Server: url, Token: tok.Token, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return &servertest.Device{Dir: dir, ID: info.Device}
	}
	e := &servertest.Env{T: t}
	d := enroll()
	j := d.Encrypt(t, "s")
	e.MustUnlock(d, j, "s")
	lb.set(b.addr)
	e.MustUnlock(d, j, "s")

	// A revocation through A is honoured by B at once.
	if _, err := adminA.DeviceOp(ctx, d.ID, "revoke", ""); err != nil {
		t.Fatal(err)
	}
	e.MustFail(d, j, "revoked")
	// And B cannot undo it.
	if _, err := adminB.DeviceOp(ctx, d.ID, "enable", ""); err == nil {
		t.Fatal("replica B re-enabled a device revoked through A")
	}
	// Lockdown through B holds on A.
	lb.set(a.addr)
	d2 := enroll()
	j2 := d2.Encrypt(t, "t")
	adminB.Lockdown(ctx, true)
	e.MustFail(d2, j2, "lockdown")
	adminB.Lockdown(ctx, false)

	// Load through both; kill A in the middle. Every unlock a client saw
	// succeed is in the audit log, and the chain (written by both
	// replicas) is intact.
	lb.set(a.addr, b.addr)
	var ok atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	tenth := make(chan struct{})
	var once sync.Once
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < 15; i++ {
				if _, err := d2.Decrypt(ctx, j2); err == nil && ok.Add(1) >= 10 {
					once.Do(func() { close(tenth) })
				}
			}
		}()
	}
	close(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-tenth: // the load is under way
	case <-done:
		t.Fatalf("the load finished with only %d successful unlocks", ok.Load())
	}
	a.srv.Close() // replica A dies; the balancer keeps sending it connections
	wg.Wait()
	lb.set(b.addr)
	e.MustUnlock(d2, j2, "t")
	ok.Add(1)

	var allows int64
	ch := audit.NewChain()
	err := adminB.Audit(ctx, func(r *audit.Record) error {
		if r.Device == d2.ID && r.Action == "unlock" && r.Decision == audit.Allow {
			allows++
		}
		return ch.Next(r)
	})
	if err != nil {
		t.Fatalf("audit chain across replicas: %v", err)
	}
	if allows < ok.Load() {
		t.Fatalf("%d unlocks succeeded but only %d are in the audit log", ok.Load(), allows)
	}
	t.Logf("%d unlocks succeeded, %d allow records, chain of %d records", ok.Load(), allows, ch.Seq)
}
