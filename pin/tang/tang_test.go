package tang_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	tangpin "github.com/tether-nbde/tether/pin/tang"
	"github.com/tether-nbde/tether/tang"
)

// mapClient is a Tang client whose connections to the named host:port go to
// the given address; everything else is refused.
func mapClient(hosts map[string]string) *tang.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &tang.Client{HTTP: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			to, ok := hosts[addr]
			if !ok {
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused (test)")}
			}
			return d.DialContext(ctx, network, to)
		},
	}}}
}

// serve runs tether's Tang handler on dir and returns its address.
func serve(t testing.TB, dir string) string {
	t.Helper()
	s := &tang.Server{Dir: dir}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClevisVectors decrypts JWEs made by clevis encrypt tang, including
// one that needs a rotated (hidden) tangd key and one on P-256.
func TestClevisVectors(t *testing.T) {
	t.Parallel()
	want := read(t, "secret.txt")
	for _, tc := range []struct{ jwe, keys string }{
		{"old.jwe", "keys"},
		{"new.jwe", "keys"},
		{"p256.jwe", "keys-p256"},
	} {
		t.Run(tc.jwe, func(t *testing.T) {
			t.Parallel()
			p := tangpin.Pin{Client: mapClient(map[string]string{"tang.invalid:80": serve(t, filepath.Join("testdata", tc.keys))})}
			j, err := jose.ParseCompact(string(read(t, tc.jwe)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Decrypt(context.Background(), j, pin.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("decrypted %q, want %q", got, want)
			}
			if d := p.Describe(j); d != "tang(http://tang.invalid)" {
				t.Errorf("Describe = %q", d)
			}
			// Tampering with the ciphertext is detected.
			bad := *j
			bad.Ciphertext = append([]byte(nil), j.Ciphertext...)
			bad.Ciphertext[0] ^= 1
			if _, err := p.Decrypt(context.Background(), &bad, pin.Options{}); !errors.Is(err, jose.ErrDecrypt) {
				t.Errorf("tampered ciphertext: %v", err)
			}
		})
	}
}

// TestClevisVectorKeyGone: a server without the key answers 404, and the
// error says so.
func TestClevisVectorKeyGone(t *testing.T) {
	t.Parallel()
	p := tangpin.Pin{Client: mapClient(map[string]string{"tang.invalid:80": serve(t, filepath.Join("testdata", "keys-p256"))})}
	j, _ := jose.ParseCompact(string(read(t, "new.jwe")))
	_, err := p.Decrypt(context.Background(), j, pin.Options{})
	var se *tang.ServerError
	if !errors.As(err, &se) || se.Code != 404 || !strings.Contains(err.Error(), "http://tang.invalid") {
		t.Fatalf("err = %v, want a 404 ServerError naming the server", err)
	}
}

// server is a tether Tang handler on fresh keys, reachable as http://keys.test.
type server struct {
	dir      string
	sig, exc *jose.JWK // visible
	oldSig   *jose.JWK // hidden (rotated)
	pin      tangpin.Pin
}

func newServer(t testing.TB) *server {
	t.Helper()
	dir := t.TempDir()
	old, err := tang.GenerateKeys(dir, jose.P256)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tang.Rotate(dir, jose.P256); err != nil {
		t.Fatal(err)
	}
	s := &server{dir: dir}
	for _, k := range old {
		if k.Signing() {
			s.oldSig = k.JWK
		}
	}
	keys, _ := tang.LoadKeyDir(dir)
	for _, k := range keys {
		switch {
		case k.Hidden:
		case k.Signing():
			s.sig = k.JWK
		default:
			s.exc = k.JWK
		}
	}
	s.pin = tangpin.Pin{Client: mapClient(map[string]string{"keys.test:80": serve(t, dir)})}
	return s
}

func (s *server) adv(t testing.TB) []byte {
	t.Helper()
	ks := jose.KeySet{Keys: []*jose.JWK{s.sig.Public(), s.exc.Public()}}
	ks.Keys[0].KeyOps = []string{"verify"}
	payload, _ := json.Marshal(ks)
	adv, err := jose.SignAdvertisement(payload, []*jose.JWK{s.sig})
	if err != nil {
		t.Fatal(err)
	}
	return adv
}

func tp(k *jose.JWK, alg string) string {
	s, _ := k.Thumbprint(alg)
	return s
}

func TestEncryptTrust(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	advFile := filepath.Join(t.TempDir(), "adv.jws")
	if err := os.WriteFile(advFile, s.adv(t), 0o600); err != nil {
		t.Fatal(err)
	}
	offline := tangpin.Pin{Client: mapClient(nil)} // every connection refused
	secret := []byte("s3cret")
	tests := []struct {
		name    string
		p       tangpin.Pin
		cfg     string
		trust   bool
		wantErr string // substring; "" means success
	}{
		{"thp S256", s.pin, `{"url":"http://keys.test","thp":"` + tp(s.sig, "S256") + `"}`, false, ""},
		{"thp S1", s.pin, `{"url":"http://keys.test","thp":"` + tp(s.sig, "S1") + `"}`, false, ""},
		{"thp S512", s.pin, `{"url":"http://keys.test","thp":"` + tp(s.sig, "S512") + `"}`, false, ""},
		// Like clevis: a rotated key is not among the advertised verify keys.
		{"thp of a rotated signing key", s.pin, `{"url":"http://keys.test","thp":"` + tp(s.oldSig, "S256") + `"}`, false, "did not sign"},
		{"thp any", s.pin, `{"url":"http://keys.test","thp":"any"}`, false, ""},
		{"-y", s.pin, `{"url":"http://keys.test"}`, true, ""},
		{"adv object", offline, `{"url":"http://keys.test","adv":` + string(s.adv(t)) + `}`, false, ""},
		{"adv file", offline, `{"url":"http://keys.test","adv":"` + advFile + `"}`, false, ""},
		{"no thp", s.pin, `{"url":"http://keys.test"}`, false, tp(s.sig, "S256")},
		{"wrong thp", s.pin, `{"url":"http://keys.test","thp":"` + tp(s.exc, "S256") + `"}`, false, "is not a signing key"},
		{"unknown thp", s.pin, `{"url":"http://keys.test","thp":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`, false, "keys.test"},
		{"missing url", s.pin, `{"thp":"x"}`, false, `"url"`},
		{"not an object", s.pin, `[1]`, false, "malformed"},
		{"adv file missing", offline, `{"url":"http://keys.test","adv":"/nonexistent/adv.jws"}`, false, "advertisement"},
		{"adv not signed", offline, `{"url":"http://keys.test","adv":{"payload":"e30","signatures":[]}}`, false, "advertisement"},
		{"unreachable", offline, `{"url":"http://keys.test","thp":"any"}`, false, "unreachable"},
	}
	for _, tc := range tests {
		j, err := tc.p.Encrypt(context.Background(), json.RawMessage(tc.cfg), secret, pin.Options{Trust: tc.trust, Timeout: 2 * time.Second})
		if tc.wantErr != "" {
			if err == nil {
				t.Errorf("%s: encrypt succeeded, want an error containing %q", tc.name, tc.wantErr)
			} else if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		// Whatever the trust path, the JWE decrypts against the server and
		// carries only the key set (no signatures) in its header.
		info, err := tangpin.Inspect(j)
		if err != nil || info.URL != "http://keys.test" || info.Kid != tp(s.exc, "S256") || len(info.Adv.Keys) != 2 {
			t.Errorf("%s: Inspect = %+v, %v", tc.name, info, err)
		}
		got, err := s.pin.Decrypt(context.Background(), j, pin.Options{})
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("%s: decrypt: %q, %v", tc.name, got, err)
		}
	}
	// The untrusted error lists the thumbprints in a typed error.
	_, err := s.pin.Encrypt(context.Background(), json.RawMessage(`{"url":"http://keys.test"}`), secret, pin.Options{})
	var ue *tangpin.UntrustedError
	if !errors.As(err, &ue) || len(ue.Thumbprints) != 1 || ue.Thumbprints[0] != tp(s.sig, "S256") {
		t.Errorf("untrusted: %v", err)
	}
}

// TestEncryptAfterRotation: bindings made before a rotation keep working,
// new ones use the new keys.
func TestEncryptAfterRotation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	j1, err := s.pin.Encrypt(context.Background(), json.RawMessage(`{"url":"http://keys.test"}`), []byte("one"), pin.Options{Trust: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the directory mtime move
	if _, _, err := tang.Rotate(s.dir, jose.P256); err != nil {
		t.Fatal(err)
	}
	j2, err := s.pin.Encrypt(context.Background(), json.RawMessage(`{"url":"http://keys.test"}`), []byte("two"), pin.Options{Trust: true})
	if err != nil {
		t.Fatal(err)
	}
	if j1.Header.Kid == j2.Header.Kid {
		t.Fatal("encryption after rotation still uses the old exchange key")
	}
	for want, j := range map[string]*jose.JWE{"one": j1, "two": j2} {
		got, err := s.pin.Decrypt(context.Background(), j, pin.Options{})
		if err != nil || string(got) != want {
			t.Errorf("decrypt %s: %q, %v", want, got, err)
		}
	}
}

// TestDecryptMalformed: header problems are reported without network access.
func TestDecryptMalformed(t *testing.T) {
	t.Parallel()
	j, _ := jose.ParseCompact(string(read(t, "new.jwe")))
	offline := tangpin.Pin{Client: mapClient(nil)}
	mod := func(f func(h *jose.Header)) *jose.JWE {
		c := *j
		f(&c.Header)
		return &c
	}
	for name, bad := range map[string]*jose.JWE{
		"alg dir":      mod(func(h *jose.Header) { h.Alg = "dir" }),
		"no epk":       mod(func(h *jose.Header) { h.Epk = nil }),
		"no kid":       mod(func(h *jose.Header) { h.Kid = "" }),
		"unknown kid":  mod(func(h *jose.Header) { h.Kid = "nope" }),
		"no url":       mod(func(h *jose.Header) { h.Clevis = json.RawMessage(`{"pin":"tang","tang":{"adv":{"keys":[]}}}`) }),
		"no adv":       mod(func(h *jose.Header) { h.Clevis = json.RawMessage(`{"pin":"tang","tang":{"url":"http://x"}}`) }),
		"clevis array": mod(func(h *jose.Header) { h.Clevis = json.RawMessage(`[]`) }),
	} {
		if _, err := offline.Decrypt(context.Background(), bad, pin.Options{}); err == nil || strings.Contains(err.Error(), "unreachable") {
			t.Errorf("%s: err = %v, want a header error", name, err)
		}
	}
}
