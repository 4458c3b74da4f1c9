package earlydial_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/earlydial"
	"github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/tang"
)

// clevisHeader is the protected header of a JWE made by clevis encrypt tang
// (pin/tang/testdata/new.jwe), with its server URL replaced by u.
func clevisHeader(t testing.TB, u string) string {
	t.Helper()
	data, err := os.ReadFile("../../pin/tang/testdata/new.jwe")
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := base64.RawURLEncoding.DecodeString(strings.SplitN(string(data), ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	const clevisURL = `"url":"http://tang.invalid"`
	if !bytes.Contains(hdr, []byte(clevisURL)) {
		t.Fatalf("new.jwe's header has no %s: %s", clevisURL, hdr)
	}
	return strings.Replace(string(hdr), clevisURL, `"url":`+strconv.Quote(u), 1)
}

// compact makes a compact JWE with protected header hdr; the other parts
// do not matter here.
func compact(hdr string) []byte {
	return []byte(base64.RawURLEncoding.EncodeToString([]byte(hdr)) + "..iv.ct.tag")
}

func TestTangServer(t *testing.T) {
	tests := []struct {
		name, hdr string
		want      string // "" when no early connection is right
	}{
		{"clevis, IPv4 and port", clevisHeader(t, "http://192.0.2.7:7500"), "192.0.2.7:7500"},
		{"clevis, default port", clevisHeader(t, "http://192.0.2.7"), "192.0.2.7:80"},
		{"clevis, path", clevisHeader(t, "http://127.0.0.1:8080/tang/"), "127.0.0.1:8080"},
		{"clevis, query", clevisHeader(t, "http://10.0.0.1?x"), "10.0.0.1:80"},
		{"host name needs the resolver", clevisHeader(t, "http://tang.lan:7500"), ""},
		{"IPv6", clevisHeader(t, "http://[::1]:7500"), ""},
		{"https", clevisHeader(t, "https://192.0.2.7"), ""},
		{"user info", clevisHeader(t, "http://u@192.0.2.7"), ""},
		{"octet with leading zero", clevisHeader(t, "http://192.0.2.07"), ""},
		{"octet over 255", clevisHeader(t, "http://192.0.2.256"), ""},
		{"three octets", clevisHeader(t, "http://192.0.2:80"), ""},
		{"five octets", clevisHeader(t, "http://1.192.0.2.7"), ""},
		{"port 0", clevisHeader(t, "http://192.0.2.7:0"), ""},
		{"port over 65535", clevisHeader(t, "http://192.0.2.7:65536"), ""},
		{"port with leading zero", clevisHeader(t, "http://192.0.2.7:080"), ""},
		{"empty port", clevisHeader(t, "http://192.0.2.7:"), ""},
		{"tether, compact", `{"alg":"ECDH-ES","clevis":{"pin":"tang","tang":{"url":"http://127.0.0.1:1234"}},"enc":"A256GCM"}`, "127.0.0.1:1234"},
		{"another pin", `{"clevis":{"pin":"https","https":{"url":"http://127.0.0.1:1234"}}}`, ""},
		{"url outside the tang member", `{"x":{"url":"http://127.0.0.1:1"},"clevis":{"pin":"tang","tang":{"url":"http://127.0.0.1:2"}}}`, ""},
		{"two urls", `{"clevis":{"pin":"tang","tang":{"url":"http://127.0.0.1:1","adv":{"url":"http://127.0.0.1:2"}}}}`, ""},
		{"sss", `{"clevis":{"pin":"sss","sss":{"t":1,"jwe":[]}}}`, ""},
		{"not JSON", `"url":"http://127.0.0.1:1"`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hostport, ip, port, ok := earlydial.TangServer(compact(tc.hdr))
			if tc.want == "" {
				if ok {
					t.Fatalf("connects to %s for %s", hostport, tc.hdr)
				}
				return
			}
			if !ok || hostport != tc.want {
				t.Fatalf("got %q, %v; want %q", hostport, ok, tc.want)
			}
			checkAddr(t, hostport, ip, port)
		})
	}
	for _, in := range []string{"", "no dot", "!!!.x", "e30.x"} {
		if _, _, _, ok := earlydial.TangServer([]byte(in)); ok {
			t.Errorf("connects for %q", in)
		}
	}
}

// checkAddr checks that ip and port are the address hostport names.
func checkAddr(t testing.TB, hostport string, ip [4]byte, port int) {
	t.Helper()
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	want := net.ParseIP(host).To4()
	if want == nil || !bytes.Equal(want, ip[:]) || p != strconv.Itoa(port) {
		t.Fatalf("%q gives address %v port %d", hostport, ip, port)
	}
}

// FuzzTangServer: for any protected header, whenever tangServer picks an
// address, it is a valid IPv4 address and port, and the very one the tang
// client would dial for that header's URL.
func FuzzTangServer(f *testing.F) {
	f.Add(clevisHeader(f, "http://192.0.2.7:7500"))
	f.Add(`{"clevis":{"pin":"tang","tang":{"url":"http://127.0.0.1"}}}`)
	f.Add(`{"clevis":{"pin":"tang","tang":{"url":"http://1.2.3.4:5/x?y#z"}}}`)
	f.Add(`{"clevis":{"pin":"tang","tang":{"URL":"http://1.2.3.4:5","url":"http://1.2.3.4:6"}}}`)
	f.Fuzz(func(t *testing.T, hdr string) {
		hostport, ip, port, ok := earlydial.TangServer(compact(hdr))
		if !ok {
			return
		}
		checkAddr(t, hostport, ip, port)
		var h struct {
			Clevis struct {
				Pin  string
				Tang struct{ URL string }
			}
		}
		if json.Unmarshal([]byte(hdr), &h) != nil || h.Clevis.Pin != "tang" {
			return // decrypt stops before it dials: the connection goes unused
		}
		u, err := url.Parse(h.Clevis.Tang.URL)
		if err != nil || u.Scheme != "http" {
			return
		}
		dial := u.Host
		if u.Port() == "" {
			dial = net.JoinHostPort(u.Hostname(), "80")
		}
		if dial != hostport {
			t.Fatalf("connects to %s, the tang client dials %s, for %s", hostport, dial, hdr)
		}
	})
}

// stdinFile returns a file holding data, opened for reading as stdin is.
func stdinFile(t *testing.T, data []byte) *os.File {
	t.Helper()
	name := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestStart: for a JWE made by tether encrypt, start reads stdin whole,
// connects to the server, and hands that connection over once, to the
// right address only.
func TestStart(t *testing.T) {
	t.Cleanup(earlydial.Reset)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	cfg, _ := json.Marshal(map[string]string{"url": "http://" + addr, "adv": "../../pin/tang/testdata/adv.jws"})
	j, err := pin.Encrypt(context.Background(), "tang", cfg, []byte("secret"), pin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := []byte(j.Compact() + "\n")

	earlydial.Start(stdinFile(t, in))
	data, err, read := earlydial.Stdin()
	if !read || err != nil || !bytes.Equal(data, in) {
		t.Fatalf("Stdin() = %d bytes, %v, %v; want the %d bytes of the JWE", len(data), err, read, len(in))
	}
	l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	server, err := l.Accept()
	if err != nil {
		t.Fatalf("no connection from start: %v", err)
	}
	defer server.Close()

	if f := earlydial.Take("127.0.0.1:1"); f != nil {
		t.Fatal("Take hands the connection out for another address")
	}
	f := earlydial.Take(addr)
	if f == nil {
		t.Fatal("Take gives nothing for the JWE's server")
	}
	defer f.Close()
	if again := earlydial.Take(addr); again != nil {
		t.Fatal("Take hands the connection out twice")
	}
	conn, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	server.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "ping" {
		t.Fatalf("server read %q, %v: Take's socket is not the accepted connection", got, err)
	}
}

// TestStartWithoutConnecting: stdin is read, but nothing is connected,
// for JWEs whose server is not known before main, and input too large.
func TestStartWithoutConnecting(t *testing.T) {
	sss, err := os.ReadFile("../../pin/tang/testdata/sss.jwe")
	if err != nil {
		t.Fatal(err)
	}
	tooLarge := bytes.Repeat([]byte("a"), earlydial.MaxInput+10)
	copy(tooLarge, compact(`{"clevis":{"pin":"tang","tang":{"url":"http://127.0.0.1:1"}}}`))
	for name, in := range map[string][]byte{
		"sss":       sss,
		"host name": compact(clevisHeader(t, "http://localhost:1")),
		"empty":     nil,
		"too large": tooLarge,
	} {
		t.Run(name, func(t *testing.T) {
			t.Cleanup(earlydial.Reset)
			earlydial.Start(stdinFile(t, in))
			data, err, read := earlydial.Stdin()
			want := in
			if len(in) > earlydial.MaxInput {
				want = in[:earlydial.MaxInput+1] // decrypt then says it is too large
			}
			if !read || err != nil || !bytes.Equal(data, want) {
				t.Fatalf("Stdin() = %d bytes, %v, %v; want %d bytes", len(data), err, read, len(want))
			}
			for _, a := range []string{"127.0.0.1:1", "127.84.1.1:7500", "localhost:1"} {
				if f := earlydial.Take(a); f != nil {
					f.Close()
					t.Fatalf("connected to %s", a)
				}
			}
		})
	}
}

// TestStartTerminal: a terminal on stdin is left to decrypt, which refuses
// it with its own message.
func TestStartTerminal(t *testing.T) {
	t.Cleanup(earlydial.Reset)
	f, err := os.Open("/dev/null") // a character device, as a terminal is
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	earlydial.Start(f)
	if _, _, read := earlydial.Stdin(); read {
		t.Fatal("start read from a character device")
	}
}

func TestIsDecrypt(t *testing.T) {
	for args, want := range map[string]bool{
		"decrypt":                    true,
		"decrypt --timeout 3s":       true,
		"decrypt -timeout 3s":        true,
		"decrypt --timeout=3s":       true,
		"decrypt -timeout=3s":        true,
		"":                           false,
		"encrypt tang {}":            false,
		"decrypt --help":             false,
		"decrypt -h":                 false,
		"decrypt extra":              false,
		"decrypt --timeout":          false,
		"decrypt --timeout 3s extra": false,
		"luks unlock /dev/sda2":      false,
	} {
		if got := earlydial.IsDecrypt(strings.Fields(args)); got != want {
			t.Errorf("isDecrypt(%q) = %v, want %v", args, got, want)
		}
	}
}
