// Package server is tether's key server process: the Tang protocol
// endpoints, health and metrics, TLS, and graceful shutdown. The protocol
// itself lives in package tang; this package wires it to the network.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/tether-nbde/tether/internal/httplite"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

// Config configures a key server.
type Config struct {
	Listen  string      // address to listen on, e.g. ":7500"
	DataDir string      // created if missing; keys live in DataDir/tang
	Prefix  string      // optional path prefix for every endpoint
	Curve   *jose.Curve // curve of keys generated on first start
	TLSCert string      // PEM files; both empty means plain HTTP
	TLSKey  string
	Log     *slog.Logger
	// Ready, if set, receives the bound address once the server listens.
	Ready func(addr net.Addr)
	// Managed configures managed mode (managed.go); the zero value is off.
	Managed ManagedConfig
}

// KeyDir returns the directory that holds the Tang keys under a data dir.
func KeyDir(dataDir string) string { return filepath.Join(dataDir, "tang") }

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting, lets requests in flight finish (up to 10 s) and returns.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.Curve == nil {
		cfg.Curve = jose.P521
	}
	dir := KeyDir(cfg.DataDir)
	if _, err := tang.EnsureKeys(dir, cfg.Curve); err != nil {
		return fmt.Errorf("prepare keys in %s: %w", dir, err)
	}
	m := newMetrics()
	conns := budget(fileLimit(), cfg.Managed.Listen != "")
	ts := &tang.Server{Dir: dir, Prefix: cfg.Prefix, Log: log, Observe: m.observe}
	if err := ts.Load(); err != nil {
		return fmt.Errorf("load keys from %s: %w", dir, err)
	}
	prefix := "/" + strings.Trim(cfg.Prefix, "/")
	if prefix == "/" {
		prefix = ""
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case prefix + "/healthz":
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintln(w, "ok")
		case prefix + "/metrics":
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			m.write(w)
		default:
			ts.ServeHTTP(w, r)
		}
	})
	hh, stopManaged, err := startManaged(ctx, &cfg, log, h, m, conns)
	if err != nil {
		return err
	}
	defer stopManaged()
	// The Tang port is served by httplite: Tang's small requests and
	// replies cost less server CPU there than under net/http (about 7% per
	// P-256 /rec, measured when httplite had a parser of its own; it now
	// parses with net/http's, which costs 1–2 µs more per request in
	// BenchmarkServeRec (internal/httplite), so that it frames every request as
	// net/http does). The managed API keeps net/http.
	srv := &httplite.Server{
		Handler:           hh,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Log:               log,
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return listenError("the Tang endpoints", cfg.Listen, "--listen", err)
	}
	capped := newCapListener(ln, "tang", conns.Tang, log)
	m.addListener(capped)
	ln = capped
	scheme := "http"
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	log.Info("tether server listening", "url", scheme+"://"+ln.Addr().String()+prefix, "keys", dir,
		"max_connections", conns.Tang, "open_files_limit", conns.NoFile)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}
