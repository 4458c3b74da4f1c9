// Package httplite serves HTTP/1.1 for small request–response protocols —
// the Tang endpoints — with a fraction of net/http's per-request work: no
// background-read goroutine per request, no response streaming machinery,
// one write per response. Handlers are ordinary http.Handlers, so the same
// handler runs under net/http (tests, TLS-heavy setups) or here.
//
// It implements what Tang clients use: keep-alive and pipelining,
// Content-Length and chunked request bodies, Expect: 100-continue, HEAD.
// Responses are buffered in full (Tang replies are a few KiB) and sent
// with Content-Length. Not for large or streaming responses.
package httplite

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves HTTP/1.1 with Handler. Zero limits take the defaults.
type Server struct {
	Handler           http.Handler
	ReadHeaderTimeout time.Duration // default 10 s
	IdleTimeout       time.Duration // between requests on a connection; default 120 s
	WriteTimeout      time.Duration // default 30 s
	MaxRequestLine    int           // longer request lines get 414; default 4 KiB (as tangd)
	MaxHeaderBytes    int           // default 64 KiB; more gets 431
	MaxBodyBytes      int64         // larger bodies get 413 unread; default 1 MiB
	Log               *slog.Logger

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*conn]struct{}
	closing  atomic.Bool
	active   sync.WaitGroup
	shutdown chan struct{}
}

type conn struct {
	nc     net.Conn
	remote string // nc.RemoteAddr().String(), formatted once per connection
	idle   atomic.Bool
	w      responseWriter // reused for each request of the connection
}

func (s *Server) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
		s.shutdown = make(chan struct{})
	}
}

func orDefault[T int | int64 | time.Duration](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

// Serve accepts connections on ln until Shutdown, then returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				// Out of file descriptors or similar: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := &conn{nc: nc, remote: nc.RemoteAddr().String()}
		c.idle.Store(true)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Shutdown stops accepting, closes idle connections, and waits for
// requests in flight to finish (or ctx to end, which closes the rest).
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.closing.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		if c.idle.Load() {
			c.nc.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *Server) serveConn(c *conn) {
	defer func() {
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	maxLine := orDefault(s.MaxRequestLine, 4<<10)
	br := bufio.NewReaderSize(c.nc, maxLine+2)
	bw := bufio.NewWriterSize(c.nc, 4<<10)
	for {
		c.idle.Store(true)
		if s.closing.Load() {
			return
		}
		c.nc.SetReadDeadline(time.Now().Add(orDefault(s.IdleTimeout, 120*time.Second)))
		if _, err := br.Peek(1); err != nil {
			return
		}
		// A request has begun: it is finished even during a shutdown.
		s.active.Add(1)
		c.idle.Store(false)
		keep := s.serveRequest(c, br, bw)
		s.active.Done()
		if !keep {
			return
		}
	}
}

// serveRequest reads one request, runs the handler and writes the reply.
// It reports whether the connection may carry another request.
func (s *Server) serveRequest(c *conn, br *bufio.Reader, bw *bufio.Writer) bool {
	c.nc.SetReadDeadline(time.Now().Add(orDefault(s.ReadHeaderTimeout, 10*time.Second)))
	req, status := s.readRequest(c, br)
	if status != 0 {
		s.writeError(c, bw, status)
		return false
	}
	keep := wantsKeepAlive(req)

	// The body.
	var body io.Reader = http.NoBody
	chunked := false
	if te := req.Header.Get("Transfer-Encoding"); te != "" {
		if !strings.EqualFold(te, "chunked") || req.Header.Get("Content-Length") != "" {
			s.writeError(c, bw, http.StatusBadRequest)
			return false
		}
		chunked = true
		req.ContentLength = -1
	} else if cl := req.Header.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 || len(req.Header.Values("Content-Length")) > 1 {
			s.writeError(c, bw, http.StatusBadRequest)
			return false
		}
		req.ContentLength = n
	}
	maxBody := orDefault(s.MaxBodyBytes, 1<<20)
	if req.ContentLength > maxBody {
		s.writeError(c, bw, http.StatusRequestEntityTooLarge)
		return false
	}
	if (req.ContentLength > 0 || chunked) && strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if bw.Flush() != nil {
			return false
		}
	}
	switch {
	case chunked:
		// One byte over the limit lets the handler see that it is too large.
		body = io.LimitReader(httputil.NewChunkedReader(br), maxBody+1)
	case req.ContentLength > 0:
		body = io.LimitReader(br, req.ContentLength)
	}
	// One deadline covers reading the body, the handler and the reply.
	c.nc.SetDeadline(time.Now().Add(orDefault(s.WriteTimeout, 30*time.Second)))
	req.Body = io.NopCloser(body)

	w := &c.w
	w.reset()
	s.handle(w, req)

	// Whatever the handler left unread must be read (or the connection
	// closed) before the next request.
	if body != http.NoBody {
		if n, err := io.Copy(io.Discard, io.LimitReader(body, maxBody+1)); err != nil || n > maxBody || chunked && !drained(body) {
			keep = false
		}
	}
	if s.closing.Load() {
		keep = false
	}
	w.writeTo(bw, req.Method == http.MethodHead, keep)
	return bw.Flush() == nil && keep
}

func drained(r io.Reader) bool {
	var b [1]byte
	n, err := r.Read(b[:])
	return n == 0 && err == io.EOF
}

func (s *Server) handle(w *responseWriter, req *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if s.Log != nil {
				s.Log.Error("handler panic", "panic", p, "path", req.URL.Path)
			}
			w.reset()
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	s.Handler.ServeHTTP(w, req)
}

// readRequest parses the request line and headers. A non-zero status
// means the request is malformed and gets that answer.
func (s *Server) readRequest(c *conn, br *bufio.Reader) (*http.Request, int) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, http.StatusRequestURITooLong
	}
	if err != nil {
		return nil, http.StatusBadRequest
	}
	method, rest, ok1 := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
	uri, proto, ok2 := strings.Cut(rest, " ")
	major, minor, ok3 := http.ParseHTTPVersion(proto)
	if !ok1 || !ok2 || !ok3 || major != 1 || method == "" || uri == "" {
		return nil, http.StatusBadRequest
	}
	var u *url.URL
	if isPlainPath(uri) {
		u = &url.URL{Path: uri} // what ParseRequestURI gives, without its work
	} else if u, err = url.ParseRequestURI(uri); err != nil {
		return nil, http.StatusBadRequest
	}
	hdr := http.Header{}
	size := 0
	maxHdr := orDefault(s.MaxHeaderBytes, 64<<10)
	for {
		l, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, http.StatusRequestHeaderFieldsTooLarge
		}
		if err != nil {
			return nil, http.StatusBadRequest
		}
		if size += len(l); size > maxHdr {
			return nil, http.StatusRequestHeaderFieldsTooLarge
		}
		l = bytes.TrimRight(l, "\r\n")
		if len(l) == 0 {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			return nil, http.StatusBadRequest // obsolete line folding
		}
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok || len(k) == 0 || bytes.ContainsAny(k, " \t") {
			return nil, http.StatusBadRequest
		}
		key := textproto.CanonicalMIMEHeaderKey(string(k))
		hdr[key] = append(hdr[key], string(bytes.TrimSpace(v)))
	}
	req := &http.Request{
		Method: method, URL: u, Proto: proto, ProtoMajor: major, ProtoMinor: minor,
		Header: hdr, Host: hdr.Get("Host"), RemoteAddr: c.remote, RequestURI: uri,
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		req.TLS = &cs
	}
	return req, 0
}

// isPlainPath reports whether uri is an absolute path made only of
// unreserved characters and slashes (Tang's paths: base64url key IDs), for
// which url.ParseRequestURI would just set Path.
func isPlainPath(uri string) bool {
	if len(uri) == 0 || uri[0] != '/' {
		return false
	}
	for i := 0; i < len(uri); i++ {
		switch c := uri[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '/', c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

func wantsKeepAlive(req *http.Request) bool {
	conn := strings.ToLower(strings.Join(req.Header.Values("Connection"), ","))
	if req.ProtoMinor == 0 {
		return strings.Contains(conn, "keep-alive")
	}
	return !strings.Contains(conn, "close")
}

func (s *Server) writeError(c *conn, bw *bufio.Writer, status int) {
	w := &responseWriter{header: http.Header{}}
	http.Error(w, http.StatusText(status), status)
	c.nc.SetWriteDeadline(time.Now().Add(orDefault(s.WriteTimeout, 30*time.Second)))
	w.writeTo(bw, false, false)
	bw.Flush()
}

// responseWriter buffers a whole response.
type responseWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(b)
}

func (w *responseWriter) reset() {
	if w.header == nil {
		w.header = http.Header{}
	}
	clear(w.header)
	w.code = 0
	w.body.Reset()
}

func (w *responseWriter) writeTo(bw *bufio.Writer, head, keep bool) {
	code := w.code
	if code == 0 {
		code = http.StatusOK
	}
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
	w.header.Del("Content-Length")
	w.header.Del("Transfer-Encoding")
	w.header.Del("Connection")
	for k, vs := range w.header {
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("Content-Length: ")
	bw.WriteString(strconv.Itoa(w.body.Len()))
	if !keep {
		bw.WriteString("\r\nConnection: close")
	}
	bw.WriteString("\r\n\r\n")
	if !head {
		bw.Write(w.body.Bytes())
	}
}
