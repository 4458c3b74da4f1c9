// Package servertest runs a managed key server for tests: the managed
// listener of package server (device API, admin API and dashboard on one
// mux) on a real TLS loopback listener, with a real SQLite store, a
// settable clock, a webhook receiver and an admin client, and devices
// that enrol and unlock through the real managed pin. Tests of
// server/managed, server/admin and server/dashboard drive it as clients
// do.
package servertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	managedpin "github.com/tether-nbde/tether/pin/managed"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

// Clock is a settable clock for keep-alive and approval deadlines.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Env is a managed server on a real TLS loopback listener with a real
// SQLite store, and an admin client.
type Env struct {
	T      *testing.T
	URL    string
	Admin  *admin.Client
	Clock  *Clock
	DBPath string
	St     store.Store
	M      *server.Managed
	Hooks  chan managed.Event
	Bodies *BodyLog
	Stop   func()       // takes the managed API down (the server is gone)
	Closed atomic.Int64 // connections the managed API has seen close
}

// BodyLog keeps every request body the server received.
type BodyLog struct {
	mu sync.Mutex
	b  [][]byte
}

// All is every body so far, one per line.
func (l *BodyLog) All() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Join(l.b, []byte("\n"))
}

// New starts a managed server with mc (its webhooks and clock set here)
// and stops it when the test ends.
func New(t *testing.T, mc server.ManagedConfig) *Env {
	t.Helper()
	ctx := context.Background()
	e := &Env{T: t, Clock: &Clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, Hooks: make(chan managed.Event, 100), Bodies: &BodyLog{}}
	e.DBPath = filepath.Join(t.TempDir(), "tether.db")
	st, err := store.OpenSQLite(ctx, e.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	e.St = st
	key := make([]byte, 32)
	rand.Read(key)
	kek, _ := managed.NewKEK(key)
	// A webhook receiver.
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev managed.Event
		json.NewDecoder(r.Body).Decode(&ev)
		e.Hooks <- ev
	})}
	go hs.Serve(hl)
	mc.Webhooks = append(mc.Webhooks, "http://"+hl.Addr().String())
	mc.Now = e.Clock.Now
	m, adminTok, err := server.NewManaged(ctx, st, kek, mc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if adminTok == "" {
		t.Fatal("first start made no admin token")
	}
	e.M = m
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := m.Handler()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		e.Bodies.mu.Lock()
		e.Bodies.b = append(e.Bodies.b, b)
		e.Bodies.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		h.ServeHTTP(w, r)
	}), TLSConfig: m.TLSConfig(), ErrorLog: log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				e.Closed.Add(1)
			}
		}}
	go srv.Serve(TLSListener(ln, srv))
	e.Stop = func() { srv.Close() }
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
		m.Close()
		st.Close()
	})
	e.URL = "https://" + ln.Addr().String()
	e.Admin = admin.NewClient(admin.Credentials{URL: e.URL, Pin: m.Pin(), Token: adminTok})
	return e
}

// Device is an enrolled device with its state directory.
type Device struct {
	Dir  string
	ID   string
	From string // source address
	Pin  managedpin.Pin
}

func (e *Env) Token(group string) string {
	e.T.Helper()
	tok, err := e.Admin.CreateToken(context.Background(), admin.TokenRequest{Group: group})
	if err != nil {
		e.T.Fatal(err)
	}
	return tok.Token
}

func (e *Env) Enroll(token, from string) *Device {
	e.T.Helper()
	dir := e.T.TempDir()
	id, info, err := managedpin.Enroll(context.Background(), managedpin.EnrollOptions{Server: e.URL, Token: token, Pin: e.M.Pin(), Dir: dir, Name: "host", LocalAddr: from})
	if err != nil {
		e.T.Fatalf("enroll: %v", err)
	}
	if id.State.Device != info.Device {
		e.T.Fatal("state and reply disagree")
	}
	return &Device{Dir: dir, ID: info.Device, From: from, Pin: managedpin.Pin{LocalAddr: from}}
}

func (d *Device) Encrypt(t *testing.T, secret string) *jose.JWE {
	t.Helper()
	cfg, _ := json.Marshal(managedpin.Config{State: d.Dir})
	j, err := d.Pin.Encrypt(context.Background(), cfg, []byte(secret), pin.Options{})
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	// Round trip through the compact form, as a JWE on disk would.
	j, err = jose.ParseCompact(j.Compact())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (d *Device) Decrypt(ctx context.Context, j *jose.JWE) (string, error) {
	out, err := d.Pin.Decrypt(ctx, j, pin.Options{})
	return string(out), err
}

func (e *Env) MustUnlock(d *Device, j *jose.JWE, want string) {
	e.T.Helper()
	got, err := d.Decrypt(context.Background(), j)
	if err != nil {
		e.T.Fatalf("unlock: %v", err)
	}
	if got != want {
		e.T.Fatalf("unlock gave %q, want %q", got, want)
	}
}

func (e *Env) MustFail(d *Device, j *jose.JWE, reason string) error {
	e.T.Helper()
	_, err := d.Decrypt(context.Background(), j)
	if err == nil {
		e.T.Fatal("unlock succeeded, want refusal")
	}
	if !strings.Contains(err.Error(), reason) {
		e.T.Fatalf("unlock error %q does not say %q", err, reason)
	}
	return err
}

func (e *Env) WaitHook(event string) managed.Event {
	e.T.Helper()
	for ev := range e.Hooks {
		if ev.Event == event {
			return ev
		}
	}
	panic("unreachable")
}

func (e *Env) VerifyAudit() {
	e.T.Helper()
	if _, err := e.Admin.VerifyAudit(context.Background()); err != nil {
		e.T.Fatalf("audit chain: %v", err)
	}
}

func TLSListener(ln net.Listener, srv *http.Server) net.Listener {
	return tls.NewListener(ln, srv.TLSConfig)
}

func InsecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
