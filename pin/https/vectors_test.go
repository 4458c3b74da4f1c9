package https

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/internal/remote"
)

// The vectors in testdata were made without tether (testdata/gen.sh:
// OpenSSL's HKDF, José's JWE); docs/REMOTE-PINS.md specifies the format.

func readVector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vectorKey(t *testing.T) []byte {
	t.Helper()
	k, err := jose.ParseJWK(readVector(t, "key.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := jose.B64.DecodeString(k.K)
	if err != nil || len(key) != 32 {
		t.Fatalf("key.jwk: %v", err)
	}
	return key
}

// Parse direction: the header's members, the credentials, the key the
// material and salt derive, and the plaintext.
func TestVectorParse(t *testing.T) {
	j, err := jose.ParseCompact(strings.TrimSpace(string(readVector(t, "https.jwe"))))
	if err != nil {
		t.Fatal(err)
	}
	if j.Header.Alg != "dir" || j.Header.Enc != "A256GCM" {
		t.Fatalf("alg %q enc %q", j.Header.Alg, j.Header.Enc)
	}
	if p, _ := j.Header.Pin(); p != "https" {
		t.Fatalf("pin %q", p)
	}
	h, err := parseHeader(j.Header.Clevis)
	if err != nil {
		t.Fatal(err)
	}
	if h.URL != "https://keys.example:8443/disk-1.key" || h.PinSHA256 != "ik1SO+u8bQg9QnMqTWdm5V5JkvCyqps3xpMyNzhYKpA=" ||
		h.Attempts != 5 || h.CA != "" || h.CredJWE != "" || h.Salt != "vErRkbmbCpYZVutXijw4v4iaXPHVa1Rak51VuLLNMtU" {
		t.Fatalf("header %+v", h)
	}
	var c creds
	if err := h.Credentials.Open(context.Background(), pin.Options{}, h.audience(), &c); err != nil || c.Token != "bearer-token-for-vectors" || c.Key != "" {
		t.Fatalf("credentials %+v, %v", c, err)
	}
	if got, want := h.audience(), string(readVector(t, "audience.json")); got != want {
		t.Errorf("audience %s, want %s", got, want)
	}
	if d := (Pin{}).Describe(j); d != "https(https://keys.example:8443/disk-1.key, credentials in the clear)" {
		t.Errorf("Describe = %q", d)
	}
	material := readVector(t, "material.bin")
	salt, _ := jose.B64.DecodeString(h.Salt)
	key, err := remote.DeriveKey("https", material, salt)
	if err != nil || !bytes.Equal(key, vectorKey(t)) {
		t.Fatalf("DeriveKey = %x, %v; want key.jwk (OpenSSL's HKDF)", key, err)
	}
	got, err := remote.Decrypt(context.Background(), "https", j, h.Salt, func(context.Context) ([]byte, error) {
		return bytes.Clone(material), nil
	})
	if err != nil || !bytes.Equal(got, readVector(t, "secret.txt")) {
		t.Fatalf("decrypt the vector: %q, %v", got, err)
	}
}

// Produce direction: a JWE made by tether from the vector's inputs (salt
// and IV are random) parses to the same header and decrypts with José,
// given the key HKDF derives from its salt.
func TestVectorProduce(t *testing.T) {
	joseCmd := testenv.RequireCmd(t, "jose")
	material, secret := readVector(t, "material.bin"), readVector(t, "secret.txt")
	hdr := header{URL: "https://keys.example:8443/disk-1.key", PinSHA256: "ik1SO+u8bQg9QnMqTWdm5V5JkvCyqps3xpMyNzhYKpA=", Attempts: 5,
		Credentials: remote.Credentials{Cred: json.RawMessage(`{"token":"bearer-token-for-vectors"}`)}}
	j, err := remote.Encrypt("https", material, secret, func(salt string) (json.RawMessage, error) {
		hdr.Salt = salt
		return json.Marshal(clevisHeader{Pin: "https", HTTPS: hdr})
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(j.Header.Clevis)
	if err != nil || h.URL != hdr.URL || h.PinSHA256 != hdr.PinSHA256 || h.Attempts != 5 || string(h.Cred) != string(hdr.Cred) {
		t.Fatalf("header %+v, %v", h, err)
	}
	salt, _ := jose.B64.DecodeString(h.Salt)
	key, err := remote.DeriveKey("https", material, salt)
	if err != nil {
		t.Fatal(err)
	}
	jwk := filepath.Join(t.TempDir(), "key.jwk")
	os.WriteFile(jwk, []byte(`{"kty":"oct","k":"`+jose.B64.EncodeToString(key)+`"}`), 0o600)
	cmd := exec.Command(joseCmd, "jwe", "dec", "-i", "-", "-k", jwk)
	cmd.Stdin = strings.NewReader(j.Compact())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Equal(out, secret) {
		t.Fatalf("jose jwe dec of tether's JWE: %q, %v", out, err)
	}
}
