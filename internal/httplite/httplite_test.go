package httplite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// echo answers with the method, path and body, so tests see what arrived.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/panic":
		panic("boom")
	case "/slow":
		time.Sleep(300 * time.Millisecond)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s %q", r.Method, r.URL.Path, b)
})

func start(t *testing.T, h http.Handler) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, MaxBodyBytes: 1 << 10}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, ln.Addr().String()
}

// exchange writes raw bytes on one connection and reads responses.
func exchange(t *testing.T, addr, raw string, n int) ([]*http.Response, []string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var resps []*http.Response
	var bodies []string
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response %d: %v", len(resps)+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resps, bodies = append(resps, resp), append(bodies, string(b))
	}
	return resps, bodies, c
}

func TestKeepAliveAndPipelining(t *testing.T) {
	_, addr := start(t, echo)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// Four requests written at once; the replies come back in order.
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
		"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []struct{ method, body string }{
		{"GET", `GET /a ""`}, {"POST", `POST /b "hello"`}, {"HEAD", ``}, {"POST", `POST /d "abcde"`},
	} {
		resp, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != want.body {
			t.Errorf("%s: %d %q, want %q", want.method, resp.StatusCode, b, want.body)
		}
		if want.method == "HEAD" && resp.ContentLength != int64(len(`HEAD /c ""`)) {
			t.Errorf("HEAD content length %d", resp.ContentLength)
		}
	}
}

func TestExpectContinue(t *testing.T) {
	_, addr := start(t, echo)
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue first, got %q", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "abc")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != `POST /x "abc"` {
		t.Fatalf("got %q", b)
	}
}

func TestConnectionClose(t *testing.T) {
	_, addr := start(t, echo)
	for _, raw := range []string{
		"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET /a HTTP/1.0\r\n\r\n",
	} {
		resps, _, c := exchange(t, addr, raw, 1)
		if !resps[0].Close {
			t.Errorf("%q: response does not say Connection: close", raw)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("%q: connection still open", raw)
		}
		c.Close()
	}
}

// TestMalformed: each refusal and its status, net/http's where net/http
// has one (FuzzDifferential compares the rest), and the limits.
func TestMalformed(t *testing.T) {
	_, addr := start(t, echo)
	for raw, code := range map[string]int{
		"GET /" + strings.Repeat("a", 5000) + " HTTP/1.1\r\nHost: x\r\n\r\n":                             414,
		"GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 70000) + "\r\n\r\n":                     431,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n":                                     413,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n":                                       400,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd":                                   400,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n":                   400,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n":                                  501,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n": 501,
		"POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\na":                     417,
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n":                                                   400,
		"GET / HTTP/1.1\r\nHost: x\r\nX\x00Y: a\r\n\r\n":                                                 400,
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01\r\n\r\n":                                                  400,
		"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n":                                                   400,
		"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n":                                                            400,
		"GET / HTTP/1.1\r\n\r\n":                                                                         400, // no Host
		"G@T / HTTP/1.1\r\nHost: x\r\n\r\n":                                                              400,
		"NONSENSE\r\n\r\n":                                                                               400,
		"GET / HTTP/2.0\r\n\r\n":                                                                         505,
		"GET / HTTP/1.1\r\n bad\r\n\r\n":                                                                 400,
	} {
		resps, _, c := exchange(t, addr, raw, 1)
		c.Close()
		if resps[0].StatusCode != code {
			t.Errorf("%.60q: %d, want %d", raw, resps[0].StatusCode, code)
		}
	}
}

func TestPanicIs500(t *testing.T) {
	_, addr := start(t, echo)
	resps, _, c := exchange(t, addr, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n", 2)
	c.Close()
	if resps[0].StatusCode != 500 || resps[1].StatusCode != 200 {
		t.Fatalf("codes %d %d", resps[0].StatusCode, resps[1].StatusCode)
	}
}

// TestNetHTTPClient uses Go's client, which reuses connections.
func TestNetHTTPClient(t *testing.T) {
	var conns atomic.Int64
	_, addr := start(t, echo)
	tr := &http.Transport{DialContext: func(ctx context.Context, n, a string) (net.Conn, error) {
		conns.Add(1)
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}}
	c := &http.Client{Transport: tr}
	for i := range 20 {
		resp, err := c.Post("http://"+addr+"/p", "text/plain", strings.NewReader(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != fmt.Sprintf(`POST /p "%d"`, i) {
			t.Fatalf("got %q", b)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 20 requests: keep-alive does not work", n)
	}
}

// TestShutdownFinishesInFlight: a request in flight completes, idle
// connections are closed, Serve returns.
func TestShutdownFinishesInFlight(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	s := &Server{Handler: echo}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()
	idle, _ := net.Dial("tcp", addr)
	defer idle.Close()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r != `GET /slow ""` {
		t.Fatalf("in-flight request: %q", r)
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("idle connection not closed: %d %v", n, err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func FuzzServeRequest(f *testing.F) {
	for _, s := range []string{
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
		"POST /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		s := &Server{Handler: echo, MaxBodyBytes: 1 << 10, ReadHeaderTimeout: time.Second, IdleTimeout: time.Second, WriteTimeout: time.Second}
		s.init()
		c := &conn{nc: server, remote: "pipe"}
		done := make(chan struct{})
		go func() { s.serveConn(c); close(done) }()
		go func() { client.Write(in); time.Sleep(10 * time.Millisecond); client.Close() }()
		go io.Copy(io.Discard, client)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("connection not finished for %q", in)
		}
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestResponseHeadersSanitised: a handler cannot split the response with
// CR or LF in a header value, nor write a header name that is not a token;
// net/http's Header.Write turns the first into spaces and drops the second.
func TestResponseHeadersSanitised(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Kid", "abc\r\nX-Injected: 1")
		w.Header()["Bad Name"] = []string{"v"}
		w.Header()["X-Lf"] = []string{"a\nb"}
		io.WriteString(w, "ok")
	}))
	resps, bodies, c := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 2)
	c.Close()
	for i, resp := range resps {
		if resp.Header.Get("X-Injected") != "" || resp.Header.Get("X-Kid") != "abc  X-Injected: 1" ||
			resp.Header.Get("X-Lf") != "a b" || len(resp.Header["Bad Name"]) != 0 || bodies[i] != "ok" {
			t.Fatalf("response %d: %v %q", i, resp.Header, bodies[i])
		}
	}
}
