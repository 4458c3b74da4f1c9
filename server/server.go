package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
			// Buffered, so that the reply has a Content-Length as every
			// reply of the Tang port has.
			var b bytes.Buffer
			m.write(&b)
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
			w.Write(b.Bytes())
		default:
			ts.ServeHTTP(w, r)
		}
	})
	hh, stopManaged, err := startManaged(ctx, &cfg, log, h, m, conns)
	if err != nil {
		return err
	}
	defer stopManaged()
	// The Tang port is net/http's server. A hand-written HTTP/1.1 server
	// (internal/httplite) served it until issue 19: side by side at the
	// default curve it saved about 5% of the server CPU per /rec
	// (docs/BENCHMARKS.md, "Issue 19"), which the targets do not need,
	// for 500 lines of framing code of our own.
	srv := &http.Server{
		Handler:           tangPort(hh, log),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10, // net/http takes 4 KiB more before 431, as httplite did
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
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

// Limits of the Tang port (docs/PROTOCOL.md): a /rec body is a JWK of a
// few hundred bytes (the tang handler itself refuses more than 64 KiB),
// and tangd refuses request lines over 4 KiB.
const (
	maxTangBody        = 1 << 20
	maxTangRequestLine = 4 << 10
)

// tangPort wraps the Tang port's handler with what its replies have always
// been: a request line over maxTangRequestLine gets 414 and a body over
// maxTangBody 413, unread, whatever the path; a panicking handler answers
// 500; and replies carry no Date header (nothing on this port uses one,
// and the replies stay byte for byte as they were).
func tangPort(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = nil
		if len(r.Method)+len(r.RequestURI)+len(r.Proto)+2 > maxTangRequestLine {
			w.Header().Set("Connection", "close")
			http.Error(w, http.StatusText(http.StatusRequestURITooLong), http.StatusRequestURITooLong)
			return
		}
		if r.ContentLength > maxTangBody {
			w.Header().Set("Connection", "close")
			http.Error(w, http.StatusText(http.StatusRequestEntityTooLarge), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxTangBody)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("handler panic", "panic", p, "path", r.URL.Path)
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(w, r)
	})
}
