package tangport_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/server/tangport"
	"github.com/tether-nbde/tether/tang"
)

// startTangPort serves the Tang port on a free loopback port with three
// visible key pairs, so that an advertisement is larger than the 2 KiB
// under which net/http would add a Content-Length by itself.
func startTangPort(t *testing.T, allow ...netip.Prefix) string {
	t.Helper()
	dir := t.TempDir()
	for range 3 {
		if _, err := tang.GenerateKeys(dir, jose.P521); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := tangport.NewMetrics()
	ts := &tang.Server{Dir: dir, Log: log, Observe: m.Observe}
	if err := ts.Load(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := tangport.NewServer(tangport.Handler(tangport.Config{Tang: ts, Allow: allow, Metrics: m, Log: log}), log)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// exchange sends raw bytes on a new connection and reads one response.
// The body of a refusal may be cut short by a reset (the server closes
// with the request unread), so a caller that wants the body checks bodyErr.
func exchange(t *testing.T, addr, raw string) (resp *http.Response, body []byte, bodyErr error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(c, raw) // a refused request may be answered before it is all sent
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, bodyErr = io.ReadAll(resp.Body)
	return resp, body, bodyErr
}

// TestReplies: the Tang port answers as it did before net/http served it
// (internal/httplite, issue 19): every reply with a
// Content-Length, none with a Date, and the limits of docs/PROTOCOL.md
// for every path, not only the tang handler's.
func TestReplies(t *testing.T) {
	addr := startTangPort(t)
	for _, path := range []string{"/adv", "/healthz", "/metrics"} {
		resp, body, err := exchange(t, addr, "GET "+path+" HTTP/1.1\r\nHost: k\r\n\r\n")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s, %v", path, resp.Status, err)
		}
		if resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) != 0 {
			t.Errorf("GET %s: Content-Length %d, Transfer-Encoding %v, body of %d bytes: want the length, not chunked", path, resp.ContentLength, resp.TransferEncoding, len(body))
		}
		if d, ok := resp.Header["Date"]; ok {
			t.Errorf("GET %s: a Date header %q", path, d)
		}
		if path == "/adv" && len(body) <= 2048 {
			t.Errorf("the advertisement has %d bytes, not over 2 KiB: this test checks nothing for its framing", len(body))
		}
	}
	long := "/healthz?" + strings.Repeat("a", 4<<10)
	big := 64<<10 - 100
	for _, c := range []struct {
		name, raw string
		want      int
	}{
		{"request line over 4 KiB", "GET " + long + " HTTP/1.1\r\nHost: k\r\n\r\n", 414},
		{"body declared over 1 MiB", fmt.Sprintf("POST /healthz HTTP/1.1\r\nHost: k\r\nContent-Length: %d\r\n\r\n", 2<<20), 413},
		{"head just under 64 KiB", "GET /healthz HTTP/1.1\r\nHost: k\r\nX: " + strings.Repeat("a", big) + "\r\n\r\n", 200},
		// The limit is 64 KiB and the 4 KiB read with the request line.
		{"head over 68 KiB", "GET /healthz HTTP/1.1\r\nHost: k\r\nX: " + strings.Repeat("a", 68<<10) + "\r\n\r\n", 431},
		{"two Transfer-Encodings", "POST /healthz HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 501},
		{"Content-Length with a sign", "POST /healthz HTTP/1.1\r\nHost: k\r\nContent-Length: +5\r\n\r\nhello", 400},
	} {
		resp, _, _ := exchange(t, addr, c.raw)
		if resp.StatusCode != c.want {
			t.Errorf("%s: %s, want %d", c.name, resp.Status, c.want)
		}
	}
}

// TestAllow: with Allow, the Tang endpoints refuse other source networks
// and /healthz and /metrics stay open for monitoring.
func TestAllow(t *testing.T) {
	addr := startTangPort(t, netip.MustParsePrefix("127.0.0.2/32"))
	for path, want := range map[string]int{"/adv": 403, "/rec/x": 403, "/healthz": 200, "/metrics": 200} {
		method := "GET"
		if path == "/rec/x" {
			method = "POST"
		}
		resp, _, _ := exchange(t, addr, method+" "+path+" HTTP/1.1\r\nHost: k\r\nContent-Length: 0\r\n\r\n")
		if resp.StatusCode != want {
			t.Errorf("%s %s from 127.0.0.1, Allow 127.0.0.2/32: %s, want %d", method, path, resp.Status, want)
		}
	}
}
