package httplite

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sinkConn reads a prepared byte stream and discards what is written.
type sinkConn struct{ in *bytes.Reader }

func (c *sinkConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *sinkConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *sinkConn) Close() error                     { return nil }
func (c *sinkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *sinkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *sinkConn) SetDeadline(time.Time) error      { return nil }
func (c *sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkServeRec serves 1000 pipelined /rec-shaped requests on one
// connection per iteration: the server's HTTP work alone (the handler
// only reads the body and answers a fixed JWK-sized reply).
func BenchmarkServeRec(b *testing.B) {
	body := strings.Repeat("x", 220)
	one := "POST /rec/Hh7eKkVfSxz3wDcPz0lGvUoJbNzF0SzzBbZcS0XkVqA HTTP/1.1\r\nHost: keys.lan:7500\r\nUser-Agent: curl/7.88.1\r\n" +
		"Accept: */*\r\nContent-Type: application/jwk+json\r\nContent-Length: 220\r\n\r\n" + body
	in := []byte(strings.Repeat(one, 1000))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/jwk+json")
		io.WriteString(w, body)
	})
	b.ReportAllocs()
	for b.Loop() {
		s := &Server{Handler: h}
		s.init()
		s.serveConn(&conn{nc: &sinkConn{in: bytes.NewReader(in)}, remote: "bench"})
	}
}
