package managed

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
)

// The vectors in testdata were made without tether (testdata/gen.sh:
// OpenSSL, coreutils and José); docs/MANAGED.md specifies the formats.

func readVector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vectorPin(t *testing.T) string {
	t.Helper()
	blk, _ := pem.Decode(readVector(t, "server.pem"))
	if blk == nil {
		t.Fatal("server.pem: no PEM block")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pin := string(readVector(t, "pin.txt"))
	if got := SPKIPin(cert.RawSubjectPublicKeyInfo); got != pin {
		t.Fatalf("SPKIPin(server.pem) = %s, OpenSSL says %s", got, pin)
	}
	return pin
}

// The device reads the server pin out of an enrolment token the server
// made (the server's side: server/vectors_test.go).
func TestEnrolTokenVector(t *testing.T) {
	pin := vectorPin(t)
	tok := string(readVector(t, "token.txt"))
	if got, err := tokenPin(tok); err != nil || got != pin {
		t.Fatalf("tokenPin = %q, %v; want %s", got, err, pin)
	}
	if got, err := tokenPin(" " + tok + "\n"); err != nil || got != pin {
		t.Fatalf("tokenPin of a token pasted with spaces = %q, %v", got, err)
	}
	for _, bad := range []string{tok[:85], tok + "A", strings.Replace(tok, "C", "+", 1), ""} {
		if _, err := tokenPin(bad); err == nil || !strings.Contains(err.Error(), "86 characters") {
			t.Errorf("tokenPin(%q) = %v, want the malformed-token error", bad, err)
		}
	}
}

// ecdhDecrypt is the server's half of the exchange done in one step:
// with S_D, K = S_D·epk.
func ecdhDecrypt(t *testing.T, j *jose.JWE, priv []byte) []byte {
	t.Helper()
	k, err := jose.ParseJWK(priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := jose.CurveByName(k.Crv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Scalar(k)
	if err != nil {
		t.Fatal(err)
	}
	epk, err := c.Point(j.Header.Epk)
	if err != nil {
		t.Fatal(err)
	}
	z, err := c.ScalarMult(epk, d)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := j.Decrypt(jose.ConcatKDF(c.X(z), j.Header.Enc))
	if err != nil {
		t.Fatal(err)
	}
	return pt
}

func TestJWEVectorParse(t *testing.T) {
	pin := vectorPin(t)
	j, err := jose.ParseCompact(strings.TrimSpace(string(readVector(t, "managed.jwe"))))
	if err != nil {
		t.Fatal(err)
	}
	h, err := parse(j)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jose.ParseJWK(readVector(t, "exchange.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	if h.URL != "https://tether.example:7501" || h.Pin != pin || h.Device != "dev-0f3a9c2e" || h.State != "" ||
		h.Key.X != priv.X || h.Key.Y != priv.Y || h.Key.D != "" || h.Key.Alg != "ECMR" {
		t.Fatalf("header %+v key %+v", h, h.Key)
	}
	if kid, _ := priv.Public().Thumbprint("S256"); j.Header.Kid != kid || j.Header.Enc != "A256GCM" {
		t.Fatalf("kid %s (want %s), enc %s", j.Header.Kid, kid, j.Header.Enc)
	}
	if got := ecdhDecrypt(t, j, readVector(t, "exchange.jwk")); !bytes.Equal(got, readVector(t, "secret.txt")) {
		t.Fatalf("decrypted %q", got)
	}
	// A kid that names another key is refused before anything is sent.
	j.Header.Kid = "AAAA" + j.Header.Kid[4:]
	if _, err := parse(j); err == nil {
		t.Fatal("a JWE whose kid does not match clevis.managed.key parses")
	}
}

// Produce direction: seal (what Encrypt does once it has the device's
// key) makes a JWE from the vector's inputs that parses to the same header
// and that José decrypts with S_D.
func TestJWEVectorProduce(t *testing.T) {
	joseCmd := testenv.RequireCmd(t, "jose")
	priv, err := jose.ParseJWK(readVector(t, "exchange.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	hdr := header{URL: "https://tether.example:7501", Pin: vectorPin(t), Device: "dev-0f3a9c2e", Key: priv.Public()}
	secret := readVector(t, "secret.txt")
	j, err := seal(hdr, secret)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parse(j)
	if err != nil || h.URL != hdr.URL || h.Pin != hdr.Pin || h.Device != hdr.Device || h.Key.X != priv.X {
		t.Fatalf("header %+v, %v", h, err)
	}
	// José wants the key without alg ECMR (as clevis strips it).
	dk := *priv
	dk.Alg, dk.KeyOps = "", nil
	kb, _ := json.Marshal(&dk)
	keyFile := filepath.Join(t.TempDir(), "d.jwk")
	os.WriteFile(keyFile, kb, 0o600)
	cmd := exec.Command(joseCmd, "jwe", "dec", "-i", "-", "-k", keyFile)
	cmd.Stdin = strings.NewReader(j.Compact())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Equal(out, secret) {
		t.Fatalf("jose jwe dec of tether's JWE: %q, %v", out, err)
	}
}
