package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/connlimit"
	"github.com/tether-nbde/tether/server/dashboard"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/server/tangport"
	"github.com/tether-nbde/tether/store"
)

// ManagedConfig turns on managed mode: device enrolment, per-device
// exchange keys, policy, audit and the admin API, served over TLS on a
// listener of their own. The Tang endpoints stay where they were, plain
// and unchanged, so stock clevis clients are not affected.
type ManagedConfig struct {
	Listen    string // TLS address of the managed and admin APIs; "" = managed mode off
	Store     string // store source (store.Open); "" = sqlite:DATA/tether.db
	KEKFile   string // key-encryption key file; "" = DATA/kek
	AdminFile string // admin credentials written on first start; "" = DATA/admin.json
	// TangAllow, if not empty, restricts the Tang endpoints to these
	// source networks (works with or without managed mode).
	TangAllow []netip.Prefix
	// Ready, if set, receives the managed listener's address.
	Ready func(net.Addr)
	// Config tunes the managed API (webhooks, approval timeout, unlock
	// rate, keep-alive sweep, certificate names, pending cap).
	managed.Config
	// UI configures the dashboard at /ui/.
	UI dashboard.Config
	// SaveAdmin, if set, receives the admin token that NewManaged creates
	// on first start, before the store records its hash, and must keep it
	// (startManaged writes the admin file). A start that fails at any
	// point thus leaves either no admin credential in the store (the next
	// start makes one) or one that was handed over: never a token nobody
	// holds.
	SaveAdmin func(token string) error
}

// Managed is what the managed listener serves: the device API (package
// managed), the admin API and the dashboard, on one mux.
type Managed struct {
	dev   *managed.Server
	admin *admin.API
	ui    *dashboard.Server
}

// NewManaged sets up managed mode on a store (managed.New) and, on first
// start, the admin credential. adminToken is non-empty if this call
// created it: the caller must hand it to the administrator (startManaged
// writes it to the admin file); it is never shown again.
func NewManaged(ctx context.Context, st store.Store, kek *managed.KEK, cfg ManagedConfig, log *slog.Logger) (m *Managed, adminToken string, err error) {
	if log == nil {
		log = slog.Default()
	}
	dev, err := managed.New(ctx, st, kek, cfg.Config, log)
	if err != nil {
		return nil, "", err
	}
	tok, err := admin.InitToken(ctx, st, cfg.SaveAdmin)
	if err != nil {
		dev.Close()
		return nil, "", err
	}
	a := admin.New(dev)
	return &Managed{dev: dev, admin: a, ui: dashboard.New(dev, a, cfg.UI)}, tok, nil
}

// Pin is the pin of the managed API's TLS key (what tokens carry).
func (m *Managed) Pin() string { return m.dev.Pin() }

// TLSConfig is the managed listener's TLS configuration.
func (m *Managed) TLSConfig() *tls.Config { return m.dev.TLSConfig() }

// SweepKeepAlive disables every enabled device whose keep-alive deadline
// has passed (managed.Server.SweepKeepAlive).
func (m *Managed) SweepKeepAlive(ctx context.Context) error { return m.dev.SweepKeepAlive(ctx) }

// Close stops the webhook sender after it has sent what is queued.
func (m *Managed) Close() { m.dev.Close() }

// Handler serves the device API, the admin API and the dashboard.
func (m *Managed) Handler() http.Handler {
	mux := http.NewServeMux()
	m.dev.Routes(mux)
	m.admin.Routes(mux)
	m.ui.AdminRoutes(mux) // the dashboard's accounts
	m.ui.Routes(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

// startManaged is Run's hook: if managed mode is configured, it starts the
// managed listener. stop shuts it down.
func startManaged(ctx context.Context, cfg *Config, log *slog.Logger, met *tangport.Metrics, conns connlimit.Budget) (stop func(), err error) {
	mc := cfg.Managed
	if mc.Listen == "" {
		return func() {}, nil
	}
	src := mc.Store
	if src == "" {
		src = "sqlite:" + filepath.Join(cfg.DataDir, "tether.db")
	}
	kekFile := mc.KEKFile
	if kekFile == "" {
		kekFile = filepath.Join(cfg.DataDir, "kek")
	}
	// Listen before anything is created: a busy port is the likeliest
	// failure of a first start, and it should leave nothing behind.
	ln, err := net.Listen("tcp", mc.Listen)
	if err != nil {
		return nil, listenError("the managed API", mc.Listen, "--managed-listen", err)
	}
	closeLn := true
	defer func() {
		if closeLn {
			ln.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if closeLn {
			unlock()
		}
	}()
	kek, created, err := managed.LoadOrCreateKEK(ctx, kekFile)
	if err != nil {
		return nil, err
	}
	if created {
		log.Warn("created a new key-encryption key: back it up separately from the store", "file", kekFile)
	}
	if kek.SealedBy() != "" {
		log.Info("key-encryption key unsealed", "file", kekFile, "policy", kek.SealedBy())
	}
	st, err := store.Open(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if u, ok := st.(store.Upgraded); ok {
		if from, to, up := u.SchemaUpgrade(); up {
			// Irreversible for a later migration: say so where the operator looks.
			log.Info("store schema upgraded", "from", from, "to", to)
		}
	}
	adminFile := mc.AdminFile
	if adminFile == "" {
		adminFile = filepath.Join(cfg.DataDir, "admin.json")
	}
	saved := false
	mc.SaveAdmin = func(tok string) error {
		// The pin is the stored certificate's, which NewManaged has
		// settled before it makes the token.
		pin, err := managed.StoredPin(ctx, st)
		if err != nil {
			return err
		}
		if err := admin.WriteCredentials(adminFile, admin.Credentials{URL: "https://" + localAddr(ln.Addr()), Pin: pin, Token: tok}); err != nil {
			return fmt.Errorf("write admin credentials: %w", err)
		}
		saved = true
		return nil
	}
	m, adminTok, err := NewManaged(ctx, st, kek, mc, log)
	if err != nil {
		st.Close()
		if _, serr := os.Stat(kekFile + ".new"); errors.Is(err, managed.ErrKEKMismatch) && serr == nil {
			return nil, fmt.Errorf("managed mode: %w; %s.new is there: a key-encryption key rotation was interrupted, run tether server kek rotate again to finish it", err, kekFile)
		}
		return nil, fmt.Errorf("managed mode: %w", err)
	}
	switch {
	case adminTok != "":
		log.Info("admin credentials written", "file", adminFile)
	case saved:
		// Another replica made the admin token first: ours is void.
		os.Remove(adminFile)
	default:
		if _, err := os.Stat(adminFile); errors.Is(err, os.ErrNotExist) {
			log.Warn("no admin credentials file here: copy it from where the server first started, or reissue it with tether admin reset-credentials", "file", adminFile)
		} else if w := admin.CredentialsModeWarning(adminFile); w != "" {
			log.Warn(w)
		}
	}
	if err := m.ui.Start(ctx, cfg.DataDir, KeyDir(cfg.DataDir), cfg.Curve, log); err != nil {
		st.Close()
		return nil, err
	}
	srv := &http.Server{
		Handler:           m.Handler(),
		TLSConfig:         m.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      managed.LongPoll + 30*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("managed API listening", "url", "https://"+ln.Addr().String(), "pin", m.Pin(), "max_connections", conns.Managed)
	if mc.Ready != nil {
		mc.Ready(ln.Addr())
	}
	capped := connlimit.New(ln, "managed", conns.Managed, log)
	met.AddListener(capped)
	go srv.Serve(tls.NewListener(capped, srv.TLSConfig))
	sctx, cancelSweep := context.WithCancel(context.Background())
	go m.dev.RunKeepAlive(sctx)
	closeLn = false
	stop = func() {
		cancelSweep()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(c) != nil {
			srv.Close()
		}
		m.Close()
		st.Close()
		unlock()
	}
	return stop, nil
}

// localAddr turns a listener address into one to connect to: an
// unspecified host becomes loopback.
func localAddr(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	if ap.Addr().IsUnspecified() {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()).String()
	}
	return ap.String()
}
