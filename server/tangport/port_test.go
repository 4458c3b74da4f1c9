package tangport_test

import (
	"bufio"
	"bytes"
	"encoding/json"
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

// A recovery prepared against the port's advertisement: the /rec path of
// its first exchange key, the blinded key to post, and the secret the
// reply must unblind to.
type recovery struct {
	path string
	body []byte
	r    *tang.Recovery
	z    []byte
}

func newRecovery(t *testing.T, addr string) *recovery {
	t.Helper()
	resp, adv, err := exchange(t, addr, "GET /adv HTTP/1.1\r\nHost: k\r\n\r\n")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /adv: %s, %v", resp.Status, err)
	}
	ks, _, err := tang.VerifyAdvertisement(adv)
	if err != nil {
		t.Fatal(err)
	}
	s := ks.WithOp("deriveKey")[0]
	kid, err := s.Thumbprint("S256")
	if err != nil {
		t.Fatal(err)
	}
	epk, z, err := tang.Bind(s)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tang.NewRecovery(epk, s)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(r.Request)
	if err != nil {
		t.Fatal(err)
	}
	return &recovery{path: "/rec/" + kid, body: body, r: r, z: z}
}

// chunked is rc's body in two chunks, without the last chunk.
func (rc *recovery) chunked() string {
	h := len(rc.body) / 2
	return fmt.Sprintf("%x\r\n%s\r\n%x\r\n%s\r\n", h, rc.body[:h], len(rc.body)-h, rc.body[h:])
}

// check fails unless resp is a 200 whose key unblinds to rc's secret.
func (rc *recovery) check(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s %q, want 200 and the recovered key", what, resp.Status, clip(body))
	}
	var y jose.JWK
	if err := jose.UnmarshalJWK(body, &y); err != nil {
		t.Fatalf("%s: reply %q: %v", what, body, err)
	}
	z, err := rc.r.Finish(&y)
	if err != nil || !bytes.Equal(z, rc.z) {
		t.Fatalf("%s: the reply does not unblind to the bound secret (%v)", what, err)
	}
}

// pipeline sends raw on one connection, all in one write, and reads the
// replies in order until the server closes the connection. The requests'
// methods tell http.ReadResponse how each reply is framed.
func pipeline(t *testing.T, addr, raw string, methods ...string) (resps []*http.Response, bodies [][]byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := 0; ; i++ {
		if _, err := br.Peek(1); err == io.EOF {
			return resps, bodies
		}
		m := "GET"
		if i < len(methods) {
			m = methods[i]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("reply %d: %v (replies so far: %d)", i+1, err, len(resps))
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reply %d: body: %v", i+1, err)
		}
		resps, bodies = append(resps, resp), append(bodies, body)
	}
}

// TestChunkedThenPipelined (issue 21, defect 6): a chunked body is read to
// the end of its trailers before the next request on the connection. The
// old parser (internal/httplite before 2e58ddb) stopped at the last chunk's
// size line, so the trailer lines (or the blank line ending them) were read
// as the next request line: the pipelined GET /adv got a 400 and the
// connection was closed. net/http reads the trailers with the body.
//
// This test and the two after it fail against that parser (run with
// internal/httplite of d071168 serving this package's Handler).
func TestChunkedThenPipelined(t *testing.T) {
	addr := startTangPort(t)
	for name, last := range map[string]string{
		"with trailers":    "0\r\nX-Checksum: 3q2+7w==\r\nX-Other: 1\r\n\r\n",
		"without trailers": "0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			rc := newRecovery(t, addr)
			raw := "POST " + rc.path + " HTTP/1.1\r\nHost: k\r\nContent-Type: application/jwk+json\r\nTransfer-Encoding: chunked\r\n\r\n" +
				rc.chunked() + last +
				"GET /adv HTTP/1.1\r\nHost: k\r\n\r\n" +
				"GET /healthz HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n"
			resps, bodies := pipeline(t, addr, raw, "POST")
			if len(resps) != 3 {
				for i, r := range resps {
					t.Logf("reply %d: %s %q", i+1, r.Status, clip(bodies[i]))
				}
				t.Fatalf("%d replies to three pipelined requests, want 3", len(resps))
			}
			rc.check(t, "the chunked POST /rec", resps[0], bodies[0])
			if resps[1].StatusCode != 200 {
				t.Fatalf("the GET /adv after it: %s %q", resps[1].Status, clip(bodies[1]))
			}
			if _, _, err := tang.VerifyAdvertisement(bodies[1]); err != nil {
				t.Errorf("the GET /adv after it: %v", err)
			}
			if resps[2].StatusCode != 200 || string(bodies[2]) != "ok\n" {
				t.Errorf("the GET /healthz last: %s %q", resps[2].Status, bodies[2])
			}
		})
	}
}

// TestHTTP10Chunked (issue 21, defect 6): on an HTTP/1.0 request the Tang
// port ignores Transfer-Encoding, as net/http does (Go issue 12785;
// chunked is an HTTP/1.1 coding): the body is framed by Content-Length
// alone, and without one it is empty. It is neither decoded as chunked nor
// refused. The old parser decoded it as chunked whatever the version, and
// refused Content-Length beside it with 400.
func TestHTTP10Chunked(t *testing.T) {
	addr := startTangPort(t)

	t.Run("without Content-Length", func(t *testing.T) {
		// /rec sees an empty body (400), and the chunks that follow are
		// the next request on the kept-alive connection: the size line
		// "NN" is not a request line, so 400 again and the connection is
		// closed. The old parser answered 200 with the recovered key.
		rc := newRecovery(t, addr)
		raw := "POST " + rc.path + " HTTP/1.0\r\nContent-Type: application/jwk+json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n" +
			rc.chunked() + "0\r\n\r\n"
		resps, bodies := pipeline(t, addr, raw, "POST")
		if len(resps) != 2 {
			t.Fatalf("%d replies, want 2 (the POST with no body, then its chunks as a request)", len(resps))
		}
		if resps[0].StatusCode != 400 || resps[0].Proto != "HTTP/1.0" || string(bodies[0]) != "Bad Request\n" {
			t.Errorf("the POST: %s %s %q, want HTTP/1.0 400 \"Bad Request\\n\" (/rec with an empty body)", resps[0].Proto, resps[0].Status, clip(bodies[0]))
		}
		if resps[1].StatusCode != 400 || !resps[1].Close || string(bodies[1]) != "400 Bad Request" {
			t.Errorf("the chunks as a request: %s %q, close %v; want net/http's 400 \"400 Bad Request\" and the connection closed", resps[1].Status, bodies[1], resps[1].Close)
		}
	})

	t.Run("with Content-Length", func(t *testing.T) {
		// Content-Length frames the body; the request after it is read
		// where Content-Length ends.
		rc := newRecovery(t, addr)
		raw := fmt.Sprintf("POST %s HTTP/1.0\r\nContent-Type: application/jwk+json\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s",
			rc.path, len(rc.body), rc.body) +
			"GET /healthz HTTP/1.0\r\n\r\n"
		resps, bodies := pipeline(t, addr, raw, "POST")
		if len(resps) != 2 {
			t.Fatalf("%d replies, want 2", len(resps))
		}
		rc.check(t, "the POST framed by its Content-Length", resps[0], bodies[0])
		if resps[1].StatusCode != 200 || string(bodies[1]) != "ok\n" {
			t.Errorf("the GET /healthz after it: %s %q", resps[1].Status, bodies[1])
		}
	})
}

// TestMalformedHeaderFields (issue 21, defect 6): control characters in a
// header field are refused with net/http's 400 and the connection closed.
// The old parser split lines at LF, trimmed CR and LF only at the line's
// end and checked names only for spaces, so these requests got 200 and
// the advertisement.
func TestMalformedHeaderFields(t *testing.T) {
	addr := startTangPort(t)
	for name, field := range map[string]string{
		"bare CR inside a header value": "X-A: a\rb",
		"bare CR ending a header value": "X-A: ab\r",
		"NUL in a header name":          "X-\x00A: b",
		"NUL in a header value":         "X-A: a\x00b",
	} {
		resp, body, err := exchange(t, addr, "GET /adv HTTP/1.1\r\nHost: k\r\n"+field+"\r\n\r\n")
		if resp.StatusCode != 400 || !resp.Close || err != nil || string(body) != "400 Bad Request" {
			t.Errorf("%s (%q): %s %q (%v), close %v; want net/http's 400 \"400 Bad Request\" and the connection closed", name, field, resp.Status, clip(body), err, resp.Close)
		}
	}
}

// clip shortens a reply body for a failure message.
func clip(b []byte) []byte {
	if len(b) > 80 {
		return append(b[:80:80], "..."...)
	}
	return b
}
