package https_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/https"
	_ "github.com/tether-nbde/tether/pin/tang"
	"github.com/tether-nbde/tether/tang"
)

// ca is a throwaway certificate authority for one test.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *ca {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate for 127.0.0.1 (server or client).
func (c *ca) issue(t *testing.T, client bool) (tls.Certificate, []byte, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return tc, certPEM, keyPEM
}

// keyServer serves key material over HTTPS; the handler can be swapped.
type keyServer struct {
	*httptest.Server
	material []byte
	token    string       // required bearer token, if set
	gone     atomic.Bool  // material removed: 404
	hits     atomic.Int64 // requests seen
	leaf     *x509.Certificate
}

func startKeyServer(t *testing.T, c *ca, clientCAs *x509.CertPool) *keyServer {
	ks := &keyServer{material: []byte(strings.Repeat("k", 8) + "-0123456789abcdef-random-material")}
	ks.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.hits.Add(1)
		if ks.token != "" && r.Header.Get("Authorization") != "Bearer "+ks.token {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if ks.gone.Load() {
			http.NotFound(w, r)
			return
		}
		w.Write(ks.material)
	}))
	cert, _, _ := c.issue(t, false)
	ks.leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	ks.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		ks.TLS.ClientCAs = clientCAs
		ks.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	}
	ks.StartTLS()
	t.Cleanup(ks.Close)
	return ks
}

func writeFile(t *testing.T, name string, data []byte) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func cfgJSON(t *testing.T, v map[string]any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var opts = pin.Options{Timeout: 2 * time.Second, Warn: io.Discard}

func roundTrip(t *testing.T, cfg json.RawMessage) (*jose.JWE, error) {
	t.Helper()
	ctx := context.Background()
	j, err := pin.Encrypt(ctx, "https", cfg, []byte("the secret"), opts)
	if err != nil {
		return nil, err
	}
	j2, err := jose.ParseCompact(j.Compact())
	if err != nil {
		t.Fatal(err)
	}
	got, err := pin.Decrypt(ctx, j2, opts)
	if err != nil {
		return j2, err
	}
	if string(got) != "the secret" {
		t.Fatalf("decrypted %q", got)
	}
	return j2, nil
}

func TestPinnedKey(t *testing.T) {
	c := newCA(t)
	ks := startKeyServer(t, c, nil)
	j, err := roundTrip(t, cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": "sha256//" + https.SPKIPin(ks.leaf)}))
	if err != nil {
		t.Fatal(err)
	}
	// Neither the material nor the secret is in the JWE.
	hdr, _ := jose.B64.DecodeString(j.Protected)
	for _, s := range []string{string(ks.material), jose.B64.EncodeToString(ks.material), "the secret"} {
		if strings.Contains(string(hdr), s) || strings.Contains(j.Compact(), s) {
			t.Fatalf("JWE contains %q", s)
		}
	}
	// Removing the material revokes the binding, with a clear error and no retries.
	ks.gone.Store(true)
	before := ks.hits.Load()
	_, err = pin.Decrypt(context.Background(), j, opts)
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("after removal: %v", err)
	}
	if n := ks.hits.Load() - before; n != 1 {
		t.Errorf("a permanent error was retried: %d requests", n)
	}
}

func TestWrongPinRefused(t *testing.T) {
	c := newCA(t)
	ks := startKeyServer(t, c, nil)
	other := startKeyServer(t, c, nil) // same CA, other key
	_, err := pin.Encrypt(context.Background(), "https",
		cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": https.SPKIPin(other.leaf)}), []byte("x"), opts)
	if err == nil || !strings.Contains(err.Error(), "does not match the pinned key") {
		t.Fatalf("wrong pin: %v", err)
	}
	if ks.hits.Load() != 0 {
		t.Error("material was requested over a connection with the wrong key")
	}
}

func TestCAFile(t *testing.T) {
	c := newCA(t)
	ks := startKeyServer(t, c, nil)
	if _, err := roundTrip(t, cfgJSON(t, map[string]any{"url": ks.URL, "ca_file": writeFile(t, "ca.pem", c.pem)})); err != nil {
		t.Fatal(err)
	}
	// Another CA does not vouch for the server.
	_, err := pin.Encrypt(context.Background(), "https",
		cfgJSON(t, map[string]any{"url": ks.URL, "ca_file": writeFile(t, "other.pem", newCA(t).pem)}), []byte("x"), opts)
	if err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("other CA: %v", err)
	}
}

func TestNoTrustAnchorNeedsY(t *testing.T) {
	_, err := pin.Encrypt(context.Background(), "https", json.RawMessage(`{"url":"https://127.0.0.1:1/k"}`), []byte("x"), opts)
	if err == nil || !strings.Contains(err.Error(), "pin_sha256") {
		t.Fatalf("got %v", err)
	}
}

func TestClientCertificate(t *testing.T) {
	c := newCA(t)
	clientCA := newCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	ks := startKeyServer(t, c, pool)
	_, certPEM, keyPEM := clientCA.issue(t, true)
	pinv := https.SPKIPin(ks.leaf)
	cfg := cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": pinv,
		"cert_file": writeFile(t, "c.pem", certPEM), "key_file": writeFile(t, "k.pem", keyPEM), "allow_plain_credentials": true})
	if _, err := roundTrip(t, cfg); err != nil {
		t.Fatal(err)
	}
	// Without the certificate the server refuses the handshake.
	_, err := pin.Encrypt(context.Background(), "https", cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": pinv, "attempts": 1}), []byte("x"), opts)
	if err == nil {
		t.Fatal("encrypt without client certificate succeeded")
	}
}

func TestBearerToken(t *testing.T) {
	c := newCA(t)
	ks := startKeyServer(t, c, nil)
	ks.token = "s3cret-token"
	pinv := https.SPKIPin(ks.leaf)
	good := cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": pinv, "token_file": writeFile(t, "tok", []byte("s3cret-token\n")),
		"allow_plain_credentials": true})
	if _, err := roundTrip(t, good); err != nil {
		t.Fatal(err)
	}
	bad := cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": pinv, "token_file": writeFile(t, "tok", []byte("wrong")),
		"allow_plain_credentials": true})
	_, err := pin.Encrypt(context.Background(), "https", bad, []byte("x"), opts)
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Fatalf("wrong token: %v", err)
	}
}

// TestPlainCredentialsRefused: a token or client key is not written into
// the header in the clear unless the configuration accepts it, and the
// server is not asked first; accepted, it comes with a warning.
func TestPlainCredentialsRefused(t *testing.T) {
	c := newCA(t)
	clientCA := newCA(t)
	_, certPEM, keyPEM := clientCA.issue(t, true)
	ks := startKeyServer(t, c, nil)
	ks.token = "s3cret-token"
	tok := writeFile(t, "tok", []byte("s3cret-token"))
	for _, tc := range []struct {
		cfg  map[string]any
		what string
	}{
		{map[string]any{"token_file": tok}, "the bearer token"},
		{map[string]any{"cert_file": writeFile(t, "c.pem", certPEM), "key_file": writeFile(t, "k.pem", keyPEM)}, "the client key"},
		{map[string]any{"token_file": tok, "cert_file": writeFile(t, "c.pem", certPEM), "key_file": writeFile(t, "k.pem", keyPEM)},
			"the bearer token and the client key"},
	} {
		tc.cfg["url"], tc.cfg["pin_sha256"] = ks.URL, https.SPKIPin(ks.leaf)
		_, err := pin.Encrypt(context.Background(), "https", cfgJSON(t, tc.cfg), []byte("x"), opts)
		var pe *pin.PlainCredentialsError
		if !errors.As(err, &pe) || pe.Pin != "https" || !strings.HasPrefix(err.Error(), "https: "+tc.what+" would be stored in the clear") {
			t.Errorf("%v: got %v", tc.cfg, err)
		}
	}
	if n := ks.hits.Load(); n != 0 {
		t.Fatalf("the server was asked %d times before the refusal", n)
	}
	var warn strings.Builder
	o := opts
	o.Warn = &warn
	j, err := pin.Encrypt(context.Background(), "https", cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": https.SPKIPin(ks.leaf),
		"token_file": tok, "allow_plain_credentials": true}), []byte("x"), o)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := jose.B64.DecodeString(j.Protected)
	if !strings.Contains(string(hdr), "s3cret-token") || !strings.Contains(warn.String(), "tether: warning: https: the bearer token is stored in the clear") ||
		!strings.Contains(warn.String(), ks.URL) {
		t.Fatalf("opt-in: header %s\nwarning %q", hdr, warn.String())
	}
	// No credentials: nothing to protect, nothing stored, no warning.
	warn.Reset()
	ks.token = ""
	j, err = pin.Encrypt(context.Background(), "https", cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": https.SPKIPin(ks.leaf)}), []byte("x"), o)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ = jose.B64.DecodeString(j.Protected)
	if strings.Contains(string(hdr), `"cred`) || warn.Len() != 0 {
		t.Fatalf("no credentials: header %s, warning %q", hdr, warn.String())
	}
}

// TestProtectedCredentials keeps the bearer token out of the JWE header by
// encrypting it with a tang pin: without the tang server, no token.
func TestProtectedCredentials(t *testing.T) {
	c := newCA(t)
	ks := startKeyServer(t, c, nil)
	ks.token = "s3cret-token"
	dir := t.TempDir()
	if _, err := tang.GenerateKeys(dir, jose.P256); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(&tang.Server{Dir: dir})
	cfg := cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": https.SPKIPin(ks.leaf),
		"token_file": writeFile(t, "tok", []byte("s3cret-token")),
		"protect":    map[string]any{"pin": "tang", "config": map[string]any{"url": ts.URL}}})
	ctx := context.Background()
	j, err := pin.Encrypt(ctx, "https", cfg, []byte("the secret"), pin.Options{Trust: true, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := jose.B64.DecodeString(j.Protected)
	if strings.Contains(string(hdr), "s3cret-token") {
		t.Fatal("token in the clear in the JWE header")
	}
	if got, err := pin.Decrypt(ctx, j, opts); err != nil || string(got) != "the secret" {
		t.Fatalf("decrypt: %q %v", got, err)
	}
	ts.Close()
	if _, err := pin.Decrypt(ctx, j, opts); err == nil || !strings.Contains(err.Error(), "unlock credentials") {
		t.Fatalf("decrypt without the tang server: %v", err)
	}
}

func TestUnreachableAndSilent(t *testing.T) {
	c := newCA(t)
	ks := startKeyServer(t, c, nil)
	j, err := roundTrip(t, cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": https.SPKIPin(ks.leaf), "attempts": 2}))
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()
	if _, err := pin.Decrypt(context.Background(), j, opts); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("closed server: %v", err)
	}
	// A listener that accepts and never answers.
	l, err := net.Listen("tcp", strings.TrimPrefix(ks.URL, "https://"))
	if err != nil {
		t.Skipf("port reuse: %v", err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	_, err = pin.Decrypt(context.Background(), j, pin.Options{Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "did not answer in time") {
		t.Fatalf("silent server: %v", err)
	}
}

func TestShortMaterialRefused(t *testing.T) {
	c := newCA(t)
	ks := startKeyServer(t, c, nil)
	ks.material = []byte("short")
	_, err := pin.Encrypt(context.Background(), "https", cfgJSON(t, map[string]any{"url": ks.URL, "pin_sha256": https.SPKIPin(ks.leaf)}), []byte("x"), opts)
	if err == nil || !strings.Contains(err.Error(), "at least") {
		t.Fatalf("short material: %v", err)
	}
}
