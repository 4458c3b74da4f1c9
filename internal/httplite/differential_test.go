package httplite

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"
)

// The differential test: the same bytes, sent on one connection to
// httplite and to net/http's server with the same handler, must give the
// same requests to the handler and the same status codes back. Limits
// are set so that neither side's size limits can be reached.

// memConn is one client connection in memory: reads return the client's
// bytes, then EOF (the client has sent everything and half-closed);
// writes are kept. Deadlines do nothing: nothing ever waits.
type memConn struct {
	mu     sync.Mutex
	in     *bytes.Reader
	out    bytes.Buffer
	closed chan struct{}
	once   sync.Once
}

func newMemConn(in []byte) *memConn {
	return &memConn{in: bytes.NewReader(in), closed: make(chan struct{})}
}

func (c *memConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.in.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// oneConnListener hands out one connection, then waits to be closed.
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if c := l.c; c != nil {
		l.c = nil
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }

// recorder is the handler on both sides: it reads the whole body and
// notes what the request was, as the handler saw it.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	note := fmt.Sprintf("%s %q %s host=%q cl=%d te=%q close=%v header=%q body=%q trailer=%q",
		r.Method, r.RequestURI, r.Proto, r.Host, r.ContentLength, r.TransferEncoding, r.Close, sorted(r.Header), b, sorted(r.Trailer))
	if err != nil {
		note += fmt.Sprintf(" error=%q", err)
	}
	rec.mu.Lock()
	rec.seen = append(rec.seen, note)
	rec.mu.Unlock()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
	}
	io.WriteString(w, "seen\n")
}

func sorted(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	slices.Sort(out)
	return out
}

// outcome is what one server made of a byte stream.
type outcome struct {
	seen   []string // requests the handler saw
	status []string // status codes sent, 100 Continue left out
	raw    string
}

var statusLine = regexp.MustCompile(`(?m)^HTTP/1\.[01] (\d{3})`)

func outcomeOf(rec *recorder, raw string) outcome {
	o := outcome{seen: rec.seen, raw: raw}
	for _, m := range statusLine.FindAllStringSubmatch(raw, -1) {
		if m[1] != "100" {
			o.status = append(o.status, m[1])
		}
	}
	return o
}

func serveLite(in []byte) outcome {
	rec := &recorder{}
	c := newMemConn(in)
	s := &Server{Handler: rec, MaxBodyBytes: 1 << 20, MaxHeaderBytes: 64 << 10, MaxRequestLine: 8 << 10}
	s.init()
	s.serveConn(&conn{nc: c, remote: "mem"})
	return outcomeOf(rec, c.output())
}

var discardLog = log.New(io.Discard, "", 0)

func serveNetHTTP(t testing.TB, in []byte) outcome {
	rec := &recorder{}
	c := newMemConn(in)
	l := &oneConnListener{c: c, done: make(chan struct{})}
	srv := &http.Server{Handler: rec, ErrorLog: discardLog, MaxHeaderBytes: 64 << 10}
	served := make(chan struct{})
	go func() { srv.Serve(l); close(served) }()
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("net/http did not finish with %q", in)
	}
	srv.Close()
	<-served
	return outcomeOf(rec, c.output())
}

// differ says how the two outcomes differ, or "".
func differ(lite, std outcome) string {
	if !slices.Equal(lite.seen, std.seen) {
		return fmt.Sprintf("handler saw\nhttplite: %q\nnet/http: %q", lite.seen, std.seen)
	}
	if !slices.Equal(lite.status, std.status) {
		return fmt.Sprintf("status codes\nhttplite: %v\nnet/http: %v\nhttplite sent %q\nnet/http sent %q", lite.status, std.status, lite.raw, std.raw)
	}
	return ""
}

// diffSeeds are the framing cases issue 21 found, and Tang's requests as
// clevis (curl) and tether send them.
var diffSeeds = []string{
	"GET /adv HTTP/1.1\r\nHost: keys.lan:7500\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
	"POST /rec/Hh7eKkVfSxz3wDcPz0lGvUoJbNzF0SzzBbZcS0XkVqA HTTP/1.1\r\nHost: keys.lan\r\nContent-Type: application/jwk+json\r\nContent-Length: 17\r\n\r\n{\"kty\":\"EC\",\"x\":1}",
	"GET /adv HTTP/1.1\r\nHost: x\r\n\r\nGET /adv/abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	// A chunked body, its trailer and the blank line, then a pipelined request.
	"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET /adv HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /adv HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
	"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX\x00Y: a\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
	"GET / HTTP/1.1\r\n\r\n",
	"GET http://x/ HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:\r\n\r\n",
	"GET / HTTP/1.1\r\nX: a\r\n b\r\nHost: x\r\n\r\n",
	"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/2.0\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}

// TestDifferentialSeeds runs the seeds outside fuzzing, so every go test
// holds httplite to net/http on them.
func TestDifferentialSeeds(t *testing.T) {
	for _, in := range diffSeeds {
		if d := differ(serveLite([]byte(in)), serveNetHTTP(t, []byte(in))); d != "" {
			t.Errorf("%q:\n%s", in, d)
		}
	}
}

// FuzzDifferential feeds the same bytes to httplite and to net/http's
// server and requires the same requests and the same answers.
func FuzzDifferential(f *testing.F) {
	for _, s := range diffSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 4000 {
			return // below every size limit of either server
		}
		if d := differ(serveLite(in), serveNetHTTP(t, in)); d != "" {
			t.Fatalf("%q:\n%s", in, d)
		}
	})
}
