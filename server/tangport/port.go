// Package tangport serves the key server's Tang port: the Tang protocol
// endpoints of package tang (GET /adv, GET /adv/{kid}, POST /rec/{kid})
// under an optional path prefix, with /healthz and /metrics beside them.
//
// It promises what stock clevis clients see from tangd: the endpoints,
// status codes and limits of docs/PROTOCOL.md, replies with a
// Content-Length (never chunked) and without a Date header, whether or not
// managed mode runs beside it. The port has no authentication; Allow
// restricts it to source networks (/healthz and /metrics stay open).
package tangport

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tether-nbde/tether/tang"
)

// Limits of the Tang port (docs/PROTOCOL.md): a /rec body is a JWK of a
// few hundred bytes (the tang handler itself refuses more than 64 KiB),
// and tangd refuses request lines over 4 KiB.
const (
	maxBody        = 1 << 20
	maxRequestLine = 4 << 10
)

// Config is what the Tang port serves.
type Config struct {
	Tang    *tang.Server
	Prefix  string         // path prefix of every endpoint, as tang.Server's
	Allow   []netip.Prefix // if not empty, the source networks the Tang endpoints answer
	Metrics *Metrics       // counts the Tang requests (set as Tang.Observe) and serves /metrics
	Log     *slog.Logger
}

// Handler returns the handler of the Tang port.
func Handler(c Config) http.Handler {
	prefix := "/" + strings.Trim(c.Prefix, "/")
	if prefix == "/" {
		prefix = ""
	}
	tangH := allow(c.Allow, c.Tang)
	return limits(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case prefix + "/healthz":
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintln(w, "ok")
		case prefix + "/metrics":
			// Buffered, so that the reply has a Content-Length as every
			// reply of the Tang port has.
			var b bytes.Buffer
			c.Metrics.Write(&b)
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
			w.Write(b.Bytes())
		default:
			tangH.ServeHTTP(w, r)
		}
	}), c.Log)
}

// NewServer returns the HTTP server of the Tang port, with its timeouts
// and header limit.
//
// It is net/http's server. A hand-written HTTP/1.1 server
// (internal/httplite) served the port until issue 19: side by side at the
// default curve it saved about 5% of the server CPU per /rec
// (docs/BENCHMARKS.md, "Issue 19"), which the targets do not need, for 500
// lines of framing code of our own.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10, // net/http takes 4 KiB more before 431, as httplite did
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// limits wraps the port's handler with what its replies have always been:
// a request line over maxRequestLine gets 414 and a body over maxBody 413,
// unread, whatever the path; a panicking handler answers 500; and replies
// carry no Date header (nothing on this port uses one, and the replies
// stay byte for byte as they were).
func limits(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = nil
		if len(r.Method)+len(r.RequestURI)+len(r.Proto)+2 > maxRequestLine {
			w.Header().Set("Connection", "close")
			http.Error(w, http.StatusText(http.StatusRequestURITooLong), http.StatusRequestURITooLong)
			return
		}
		if r.ContentLength > maxBody {
			w.Header().Set("Connection", "close")
			http.Error(w, http.StatusText(http.StatusRequestEntityTooLarge), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
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

// allow answers 403 to requests from outside the allowed networks.
func allow(allowed []netip.Prefix, next http.Handler) http.Handler {
	if len(allowed) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var src netip.Addr
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			src = ap.Addr().Unmap()
		}
		for _, p := range allowed {
			if p.Contains(src) {
				next.ServeHTTP(w, r)
				return
			}
		}
		http.Error(w, "forbidden: source network not allowed", http.StatusForbidden)
	})
}
