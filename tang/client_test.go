package tang_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

// recoverFrom runs a whole bind and recovery against the server at base
// with the given client and checks that the recovered Z is the bound one.
func recoverFrom(t *testing.T, c *tang.Client, base string, kd *keyDir) error {
	t.Helper()
	epk, z, err := tang.Bind(kd.exc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := c.Recover(ctx, base, thp(t, kd.exc, "S256"), epk, kd.exc)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, z) {
		t.Fatalf("recovered Z differs from the bound one")
	}
	return nil
}

// TestRecoverPaths recovers through both client paths (the direct one for
// plain http with the default client, net/http with a custom client)
// against tether's handler, served the ways a real deployment may serve it.
func TestRecoverPaths(t *testing.T) {
	t.Parallel()
	kd := newKeyDir(t, jose.P521)
	s := &tang.Server{Dir: kd.dir}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	check := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = append(seen, r.Method+" "+r.Host+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
			next.ServeHTTP(w, r)
		})
	}
	// chunked flushes before the handler writes, so the reply has no
	// Content-Length. It reads the request first: net/http discards an
	// unread body once the response has begun.
	chunked := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				t.Error(err)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			w.(http.Flusher).Flush()
			next.ServeHTTP(w, r)
		})
	}
	for _, tc := range []struct {
		name    string
		handler http.Handler
		prefix  string
	}{
		{"plain", check(s), ""},
		{"path prefix", check(http.StripPrefix("/tang", s)), "/tang"},
		{"chunked reply", check(chunked(s)), ""},
	} {
		ts := httptest.NewServer(tc.handler)
		for _, client := range []struct {
			name string
			c    *tang.Client
		}{{"direct", nil}, {"net/http", &tang.Client{HTTP: ts.Client()}}} {
			seen = nil
			if err := recoverFrom(t, client.c, ts.URL+tc.prefix+"/", kd); err != nil {
				t.Errorf("%s, %s client: %v", tc.name, client.name, err)
				continue
			}
			want := "POST " + strings.TrimPrefix(ts.URL, "http://") + " " + tc.prefix + "/rec/" + thp(t, kd.exc, "S256") + " application/jwk+json"
			if len(seen) != 1 || seen[0] != want {
				t.Errorf("%s, %s client: server saw %q, want [%q]", tc.name, client.name, seen, want)
			}
		}
		ts.Close()
	}
}

// TestRecoverAgainstTangd recovers over the direct path from stock tangd,
// started per connection as systemd starts it.
func TestRecoverAgainstTangd(t *testing.T) {
	t.Parallel()
	kd := tangdKeyDir(t)
	tangd := testenv.StartTangdDir(t, kd.dir, false)
	if err := recoverFrom(t, nil, tangd.URL, kd); err != nil {
		t.Fatal(err)
	}
}

// TestRecoverErrors checks that each way a server can fail gives an error
// that names the server and says what happened.
func TestRecoverErrors(t *testing.T) {
	t.Parallel()
	kd := newKeyDir(t, jose.P256)
	status := func(code int) string {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(code)
		}))
		t.Cleanup(ts.Close)
		return ts.URL
	}
	// raw reads the request, answers with reply (which is not HTTP, or
	// nothing) and closes the connection.
	raw := func(reply string) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Read(make([]byte, 4096))
				c.Write([]byte(reply))
				c.Close()
			}
		}()
		return "http://" + l.Addr().String()
	}
	notJSON := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html>hello</html>")
	}))
	t.Cleanup(notJSON.Close)

	for _, tc := range []struct {
		name, base string
		timeout    time.Duration
		want       string
		code       int
	}{
		{name: "404", base: status(404), want: "does not know the key (404)", code: 404},
		{name: "403", base: status(403), want: "refused the request (403)", code: 403},
		{name: "500", base: status(500), want: "answered 500", code: 500},
		{name: "refused", base: testenv.ClosedPort(t), want: "is unreachable"},
		{name: "silent", base: testenv.Blackhole(t), timeout: 300 * time.Millisecond, want: "did not answer in time"},
		{name: "hangup", base: raw(""), want: "EOF"},
		{name: "not http", base: raw("SSH-2.0-OpenSSH_9.2\r\n"), want: "malformed HTTP"},
		{name: "not a key", base: notJSON.URL, want: "sent an invalid reply"},
	} {
		epk, _, err := tang.Bind(kd.exc)
		if err != nil {
			t.Fatal(err)
		}
		timeout := tc.timeout
		if timeout == 0 {
			timeout = 5 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		_, err = (*tang.Client)(nil).Recover(ctx, tc.base, thp(t, kd.exc, "S256"), epk, kd.exc)
		took := time.Since(start)
		cancel()
		switch {
		case err == nil:
			t.Errorf("%s: recovered from a failing server", tc.name)
		case !strings.Contains(err.Error(), tc.base) || !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: error %q, want it to name %s and say %q", tc.name, err, tc.base, tc.want)
		case took > timeout+2*time.Second:
			t.Errorf("%s: took %v with a %v timeout", tc.name, took, timeout)
		}
		var se *tang.ServerError
		if tc.code != 0 && (!errors.As(err, &se) || se.Code != tc.code) {
			t.Errorf("%s: error %v is not a ServerError with code %d", tc.name, err, tc.code)
		}
	}
}

// TestRecoverCanceled checks that canceling the context ends a recovery
// that waits on a silent server at once, not at the deadline.
func TestRecoverCanceled(t *testing.T) {
	t.Parallel()
	kd := newKeyDir(t, jose.P256)
	epk, _, err := tang.Bind(kd.exc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err = (*tang.Client)(nil).Recover(ctx, testenv.Blackhole(t), thp(t, kd.exc, "S256"), epk, kd.exc)
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("got %v, want a canceled error", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("cancel took %v to end the recovery", took)
	}
}

// TestRecoverBadURL checks URLs that cannot name a server.
func TestRecoverBadURL(t *testing.T) {
	t.Parallel()
	kd := newKeyDir(t, jose.P256)
	epk, _, err := tang.Bind(kd.exc)
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{"tang.example", "http://", "http://[::1", "://x"} {
		_, err := (*tang.Client)(nil).Recover(context.Background(), base, thp(t, kd.exc, "S256"), epk, kd.exc)
		if err == nil || !strings.Contains(err.Error(), "bad server url") {
			t.Errorf("%q: got %v, want a bad server url error", base, err)
		}
	}
}
