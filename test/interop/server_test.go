package interop

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tether test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// The server serves the Tang protocol over HTTPS, and tether encrypts and
// decrypts through it when it trusts the certificate.
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	srv := startTether(t, "", "", "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("URL %s", srv.URL)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if keys := advKeys(t, client, srv.URL); len(keys) != 2 {
		t.Fatalf("https /adv: %d keys", len(keys))
	}
	// Plain HTTP on the TLS port does not get an advertisement.
	if resp, err := http.Get("http://" + srv.Addr + "/adv"); err == nil {
		if resp.StatusCode == 200 {
			t.Error("plain HTTP on the TLS port answered 200")
		}
		resp.Body.Close()
	}
	// tether (Go) reads extra roots from SSL_CERT_FILE.
	run := func(stdin []byte, args ...string) []byte {
		cmd := exec.Command(testenv.TetherBin(t), args...)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+certFile)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tether %s: %v\n%s", args[0], err, stderr.String())
		}
		return out
	}
	jwe := run(secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": srv.signingThp(t)}))
	if got := run(jwe, "decrypt"); !bytes.Equal(got, secret) {
		t.Fatalf("decrypt over https: %q", got)
	}
	// Without trusting the certificate, the error is one clean line.
	stdout, stderr, code := tether(t, jwe, "decrypt")
	failsCleanly(t, "untrusted certificate", stdout, stderr, code)
}

// SIGTERM: a request in flight completes, then the server exits 0.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	srv := startTether(t, "", "")
	keys, err := tang.LoadKeyDir(filepath.Join(srv.Data, "tang"))
	if err != nil {
		t.Fatal(err)
	}
	var exc *jose.JWK
	for _, k := range keys {
		if k.Exchange() {
			exc = k.JWK
		}
	}
	epk, z, err := tang.Bind(exc.Public())
	if err != nil {
		t.Fatal(err)
	}
	r, _ := tang.NewRecovery(epk, exc.Public())
	body, _ := json.Marshal(r.Request)
	kid, _ := exc.Thumbprint("S256")

	c, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// Headers and half of the body, then SIGTERM, then the rest.
	fmt.Fprintf(c, "POST /rec/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/jwk+json\r\nContent-Length: %d\r\n\r\n", kid, len(body))
	c.Write(body[:len(body)/2])
	time.Sleep(200 * time.Millisecond)
	srv.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	select {
	case <-srv.done:
		t.Fatal("server exited with a request in flight")
	default:
	}
	c.Write(body[len(body)/2:])
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	reply, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("in-flight request: %d %s", resp.StatusCode, reply)
	}
	y, err := jose.ParseJWK(reply)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Finish(y)
	if err != nil || !bytes.Equal(got, z) {
		t.Fatalf("in-flight recovery gave a wrong key: %v", err)
	}
	c.Close()
	if code := srv.stop(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	// New connections are refused once it is down.
	if _, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
		t.Error("server still accepts connections after shutdown")
	}
}

var metricLine = regexp.MustCompile(`(?m)^tether_http_requests_total\{endpoint="(\w+)",code="(\d+)"\} (\d+)$`)

func metrics(t testing.TB, url string) map[string]int {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	for _, want := range []string{"# TYPE tether_http_requests_total counter", "tether_rec_duration_seconds_count", "tether_uptime_seconds"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	out := map[string]int{}
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.Atoi(m[3])
		out[m[1]+" "+m[2]] = n
	}
	return out
}

// /healthz and /metrics; the counters count what happened.
func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	srv := startTether(t, "", "", "--prefix", "/tang")
	resp, err := http.Get(srv.URL + "/tang/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok" {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, b)
	}
	before := metrics(t, srv.URL+"/tang")
	jwe := mustTether(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL + "/tang", "thp": srv.signingThp(t)}))
	for i := 0; i < 3; i++ {
		decryptBoth(t, jwe)
	}
	http.Get(srv.URL + "/tang/adv/nosuchkid")
	after := metrics(t, srv.URL+"/tang")
	for key, want := range map[string]int{"adv 200": 1, "rec 200": 6, "adv 404": 1} {
		if got := after[key] - before[key]; got != want {
			t.Errorf("%s: counter went up by %d, want %d", key, got, want)
		}
	}
}

// The server log has no key material and no request coordinates, even at
// debug level.
func TestLogsHaveNoSecrets(t *testing.T) {
	t.Parallel()
	srv := startTether(t, "", "", "--log-level", "debug")
	keys, err := tang.LoadKeyDir(filepath.Join(srv.Data, "tang"))
	if err != nil {
		t.Fatal(err)
	}
	var secrets []string
	var exc *jose.JWK
	for _, k := range keys {
		secrets = append(secrets, k.JWK.D)
		if k.Exchange() {
			exc = k.JWK
		}
	}
	kid, _ := exc.Thumbprint("S256")
	for i := 0; i < 3; i++ {
		epk, _, _ := tang.Bind(exc.Public())
		r, _ := tang.NewRecovery(epk, exc.Public())
		body, _ := json.Marshal(r.Request)
		resp, err := http.Post(srv.URL+"/rec/"+kid, "application/jwk+json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		reply, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var y jose.JWK
		json.Unmarshal(reply, &y)
		secrets = append(secrets, r.Request.X, r.Request.Y, y.X, y.Y, epk.X)
	}
	// Bad requests too: their bodies must not be echoed into the log.
	http.Post(srv.URL+"/rec/"+kid, "application/jwk+json", strings.NewReader(`{"kty":"EC","x":"SECRET-LOOKING-BODY"}`))
	secrets = append(secrets, "SECRET-LOOKING-BODY")
	jwe := mustClevis(t, secret, "encrypt", "tang", cfg(map[string]string{"url": srv.URL, "thp": srv.signingThp(t)}))
	decryptBoth(t, jwe)
	srv.stop(t)
	logs := srv.logs.String()
	if !strings.Contains(logs, "listening") {
		t.Fatalf("log does not look like a server log:\n%s", logs)
	}
	for _, s := range append(secrets, strings.TrimSpace(string(secret))) {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("server log contains a secret or request coordinate %.20s...", s)
		}
	}
}
