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

	"github.com/tether-nbde/tether/internal/version"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/server/announce"
	"github.com/tether-nbde/tether/server/connlimit"
	"github.com/tether-nbde/tether/server/tangport"
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
	// Managed configures managed mode (listener.go); the zero value is off.
	Managed ManagedConfig
	// Announce makes the Tang port findable on the local network with
	// multicast DNS (server/announce); it stays off on loopback.
	Announce bool
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
	m := tangport.NewMetrics()
	conns := connlimit.Share(connlimit.FileLimit(), cfg.Managed.Listen != "")
	ts := &tang.Server{Dir: dir, Prefix: cfg.Prefix, Log: log, Observe: m.Observe}
	if err := ts.Load(); err != nil {
		return fmt.Errorf("load keys from %s: %w", dir, err)
	}
	stopManaged, err := startManaged(ctx, &cfg, log, m, conns)
	if err != nil {
		return err
	}
	defer stopManaged()
	srv := tangport.NewServer(tangport.Handler(tangport.Config{
		Tang: ts, Prefix: cfg.Prefix, Allow: cfg.Managed.TangAllow, Metrics: m, Log: log,
	}), log)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return listenError("the Tang endpoints", cfg.Listen, "--listen", err)
	}
	capped := connlimit.New(ln, "tang", conns.Tang, log)
	m.AddListener(capped)
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
	prefix := "/" + strings.Trim(cfg.Prefix, "/")
	if prefix == "/" {
		prefix = ""
	}
	log.Info("tether server listening", "url", scheme+"://"+ln.Addr().String()+prefix, "keys", dir,
		"max_connections", conns.Tang, "open_files_limit", conns.NoFile)
	if cfg.Announce {
		defer startAnnounce(&cfg, ts, capped.Addr(), scheme == "https", log)()
	} else {
		log.Info("not announcing on the network: turned off (--announce=false)")
	}
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

// startAnnounce announces the Tang port on the local network and returns
// what stops it. A server that cannot announce still serves: it is logged.
func startAnnounce(cfg *Config, ts *tang.Server, addr net.Addr, tls bool, log *slog.Logger) func() {
	a, err := announce.Start(announce.Config{
		Addr: addr, Path: cfg.Prefix, TLS: tls, Server: "tether " + version.Version,
		Thumbprints: ts.SigningThumbprints, Log: log,
	})
	if errors.Is(err, announce.ErrLoopback) {
		log.Info("not announcing on the network: listening on loopback only")
		return func() {}
	}
	if err != nil {
		log.Warn("not announcing on the network; clients can still be given the address", "err", err)
		return func() {}
	}
	return func() { a.Close() }
}
