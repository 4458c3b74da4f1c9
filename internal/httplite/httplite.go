// Package httplite serves HTTP/1.1 for small request–response protocols —
// the Tang endpoints — with a fraction of net/http's per-request work: no
// background-read goroutine per request, no response streaming machinery,
// one write per response. Handlers are ordinary http.Handlers, so the same
// handler runs under net/http (tests, TLS-heavy setups) or here.
//
// It implements what Tang clients use: keep-alive and pipelining,
// Content-Length and chunked request bodies, Expect: 100-continue, HEAD.
// Requests are parsed by net/http's own parser (http.ReadRequest) and
// accepted or refused by the rules of net/http's server, so a byte stream
// means the same requests here as there; FuzzDifferential checks it.
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
	"math"
	"net"
	"net/http"
	"net/textproto"
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
	cr := &connReader{nc: c.nc, remain: noLimit}
	br := bufio.NewReaderSize(cr, 4<<10)
	bw := bufio.NewWriterSize(c.nc, 4<<10)
	lastMethod := ""
	for first := true; ; first = false {
		c.idle.Store(true)
		if s.closing.Load() {
			return
		}
		c.nc.SetReadDeadline(time.Now().Add(orDefault(s.IdleTimeout, 120*time.Second)))
		// As net/http: the first request starts with its first byte; a
		// later one is awaited with four (shorter leftovers before EOF
		// end the connection without an answer).
		peek := 4
		if first {
			peek = 1
		}
		if _, err := br.Peek(peek); err != nil {
			return
		}
		// A request has begun: it is finished even during a shutdown.
		s.active.Add(1)
		c.idle.Store(false)
		keep := s.serveRequest(c, cr, br, bw, &lastMethod)
		s.active.Done()
		if !keep {
			return
		}
	}
}

// noLimit is connReader's remain when no request head is being read.
const noLimit = math.MaxInt64

// connReader is the connection as the parser reads it: while a request
// head is read, at most remain bytes (as net/http's connReader), so that
// a client cannot make the header parser buffer without end.
//
// It also keeps a copy of what it reads while recording: the bytes of
// the request head, for the one question http.ReadRequest leaves open
// (was there a Host line at all; see hostHeader).
type connReader struct {
	nc        net.Conn
	remain    int64
	recording bool
	rec       []byte
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.nc.Read(p)
	r.remain -= int64(n)
	if r.recording {
		r.rec = append(r.rec, p[:n]...)
	}
	return n, err
}

// maxPostHandlerRead is how much of a body the handler left unread is
// read away to keep the connection, as net/http's maxPostHandlerReadBytes.
const maxPostHandlerRead = 256 << 10

// serveRequest reads one request, runs the handler and writes the reply.
// It reports whether the connection may carry another request.
//
// Parsing and framing are net/http's own (http.ReadRequest) and the
// checks and keep-alive rules around it are those of net/http's server,
// so that every byte stream is split into the same requests, accepted or
// refused alike (FuzzDifferential holds the two side by side). What
// differs are limits: MaxRequestLine (414), MaxHeaderBytes (431) and
// MaxBodyBytes (413).
func (s *Server) serveRequest(c *conn, cr *connReader, br *bufio.Reader, bw *bufio.Writer, lastMethod *string) bool {
	c.nc.SetReadDeadline(time.Now().Add(orDefault(s.ReadHeaderTimeout, 10*time.Second)))
	if *lastMethod == http.MethodPost {
		// RFC 7230 section 3 tolerance for clients that end a POST body
		// with an extra CRLF, as net/http has.
		peek, _ := br.Peek(4)
		n := 0
		for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
			n++
		}
		br.Discard(n)
	}
	cr.remain = int64(orDefault(s.MaxHeaderBytes, 64<<10))
	// The head is what is buffered now plus what the parser reads, less
	// what it leaves buffered.
	pre, _ := br.Peek(br.Buffered())
	cr.rec = append(cr.rec[:0], pre...)
	cr.recording = true
	req, err := http.ReadRequest(br)
	cr.recording = false
	head := cr.rec[:len(cr.rec)-br.Buffered()]
	if cap(cr.rec) > 4<<10 {
		cr.rec = nil // a rare large head is not kept for the connection's life
	}
	hitLimit := cr.remain <= 0
	cr.remain = noLimit
	if err != nil {
		var ne net.Error
		var oe *net.OpError
		switch {
		case hitLimit:
			s.writeError(c, bw, http.StatusRequestHeaderFieldsTooLarge)
		case unsupportedTE(err):
			s.writeError(c, bw, http.StatusNotImplemented)
		case err == io.EOF, errors.As(err, &ne) && ne.Timeout(), errors.As(err, &oe) && oe.Op == "read":
			// The client went away or stayed silent: nobody to answer.
		default:
			s.writeError(c, bw, http.StatusBadRequest)
		}
		return false
	}
	*lastMethod = req.Method
	if status := s.check(req, head); status != 0 {
		s.writeError(c, bw, status)
		return false
	}
	delete(req.Header, "Host")
	req.RemoteAddr = c.remote
	if tc, ok := c.nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		req.TLS = &cs
	}
	keep := keepAlive(req)

	maxBody := orDefault(s.MaxBodyBytes, 1<<20)
	if req.ContentLength > maxBody {
		s.writeError(c, bw, http.StatusRequestEntityTooLarge)
		return false
	}
	var body io.Reader = req.Body // net/http's own body reader: Content-Length or chunked, trailers included
	var cont *continueReader
	if hasToken(req.Header.Get("Expect"), "100-continue") {
		if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
			cont = &continueReader{r: body, bw: bw}
			body = cont
		}
	} else if req.Header.Get("Expect") != "" {
		s.writeError(c, bw, http.StatusExpectationFailed)
		return false
	}
	// One deadline covers reading the body, the handler and the reply.
	c.nc.SetDeadline(time.Now().Add(orDefault(s.WriteTimeout, 30*time.Second)))
	// One byte over the limit lets the handler see that it is too large.
	req.Body = io.NopCloser(io.LimitReader(body, maxBody+1))

	w := &c.w
	w.reset()
	s.handle(w, req)
	if w.header.Get("Connection") == "close" {
		keep = false
	}

	// Whatever the handler left unread is read away (or the connection
	// closed) before the next request, as net/http does.
	if req.ContentLength != 0 && keep {
		if cont != nil {
			keep = cont.sawEOF
		} else if _, err := io.CopyN(io.Discard, body, maxPostHandlerRead+1); err != io.EOF {
			keep = false
		}
	}
	if s.closing.Load() {
		keep = false
	}
	w.writeTo(bw, req.Method == http.MethodHead, keep, req.ProtoMinor == 0)
	return bw.Flush() == nil && keep
}

// check applies what net/http's server checks after parsing; a non-zero
// status refuses the request. head is the request's head as read.
func (s *Server) check(req *http.Request, head []byte) int {
	// net/http passes on "PRI * HTTP/2.0", the HTTP/2 preface, for a
	// handler that would take the connection over; then it closes.
	pri := req.ProtoMajor == 2 && req.ProtoMinor == 0 && req.Method == "PRI" && req.RequestURI == "*"
	if req.ProtoMajor != 1 && !pri {
		return http.StatusHTTPVersionNotSupported
	}
	if len(req.Method)+len(req.RequestURI)+len(req.Proto)+2 > orDefault(s.MaxRequestLine, 4<<10) {
		return http.StatusRequestURITooLong
	}
	hosts, haveHost := hostHeader(req, head)
	h2Upgrade := pri && len(req.Header) == 0 && req.URL.Path == "*"
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && !h2Upgrade && req.Method != http.MethodConnect {
		return http.StatusBadRequest
	}
	if len(hosts) == 1 && !validHostHeader(hosts[0]) {
		return http.StatusBadRequest
	}
	for k, vv := range req.Header {
		if !validHeaderFieldName(k) {
			return http.StatusBadRequest
		}
		for _, v := range vv {
			if !validHeaderFieldValue(v) {
				return http.StatusBadRequest
			}
		}
	}
	return 0
}

// hostHeader returns the request's Host header lines, which
// http.ReadRequest removes from req.Header. When the request target has no
// host and Host is not empty, req.Host is that one line (ReadRequest
// refuses two); otherwise — no Host line, an empty one, or a target with a
// host — the head is parsed again to tell, as rarely happens.
func hostHeader(req *http.Request, head []byte) ([]string, bool) {
	if req.URL.Host == "" && req.Host != "" {
		return []string{req.Host}, true
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	if _, err := tp.ReadLine(); err != nil {
		return nil, false
	}
	h, _ := tp.ReadMIMEHeader()
	hosts, ok := h["Host"]
	return hosts, ok
}

// keepAlive is net/http's rule for keeping the connection after the
// reply (which always has a Content-Length here).
func keepAlive(req *http.Request) bool {
	conn := req.Header.Get("Connection")
	if req.ProtoMajor == 1 && req.ProtoMinor == 0 {
		return hasToken(conn, "keep-alive")
	}
	return !req.Close && !hasToken(conn, "close")
}

// unsupportedTE reports whether http.ReadRequest refused the request for
// its Transfer-Encoding, which net/http answers 501. The error type is not
// exported; TestStatusLikeNetHTTP notices if its text changes.
func unsupportedTE(err error) bool {
	m := err.Error()
	return strings.HasPrefix(m, "unsupported transfer encoding") || strings.HasPrefix(m, "too many transfer encodings")
}

// continueReader sends "100 Continue" when the handler first reads the
// body, as net/http does, and notes whether the body was read to its end.
type continueReader struct {
	r      io.Reader
	bw     *bufio.Writer
	sent   bool
	sawEOF bool
}

func (c *continueReader) Read(p []byte) (int, error) {
	if !c.sent {
		c.sent = true
		c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := c.bw.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := c.r.Read(p)
	if err == io.EOF {
		c.sawEOF = true
	}
	return n, err
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

func (s *Server) writeError(c *conn, bw *bufio.Writer, status int) {
	w := &responseWriter{header: http.Header{}}
	http.Error(w, http.StatusText(status), status)
	c.nc.SetWriteDeadline(time.Now().Add(orDefault(s.WriteTimeout, 30*time.Second)))
	w.writeTo(bw, false, false, false)
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

func (w *responseWriter) writeTo(bw *bufio.Writer, head, keep, http10 bool) {
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
		// As net/http's Header.Write: a name that is not a token is
		// dropped, CR and LF in a value become spaces, so that no
		// handler can split the response.
		if !validHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(headerNewlineToSpace.Replace(v)))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("Content-Length: ")
	bw.WriteString(strconv.Itoa(w.body.Len()))
	switch {
	case !keep:
		bw.WriteString("\r\nConnection: close")
	case http10:
		bw.WriteString("\r\nConnection: keep-alive")
	}
	bw.WriteString("\r\n\r\n")
	if !head {
		bw.Write(w.body.Bytes())
	}
}

var headerNewlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")
