package smb

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
	"github.com/tether-nbde/tether/pin/internal/remote"
)

// The vectors in testdata were made without tether (testdata/gen.sh:
// OpenSSL's HKDF, José's JWEs); docs/REMOTE-PINS.md specifies the format.

func readVector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ecdhDecrypt decrypts an ECDH-ES JWE (a tang-style JWE) with the
// private exchange key, as the server's half of the exchange would.
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

// Parse direction: the header's members, the sealed credentials and their
// audience, the key the material and salt derive, and the plaintext.
func TestVectorParse(t *testing.T) {
	j, err := jose.ParseCompact(strings.TrimSpace(string(readVector(t, "smb.jwe"))))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := j.Header.Pin(); p != "smb" || j.Header.Alg != "dir" || j.Header.Enc != "A256GCM" {
		t.Fatalf("pin %q alg %q enc %q", p, j.Header.Alg, j.Header.Enc)
	}
	h, err := parseHeader(j.Header.Clevis)
	if err != nil {
		t.Fatal(err)
	}
	if h.Server != "nas.example" || h.Port != 445 || h.Share != "keys" || h.Path != `tether\disk1.key` || h.User != "disk1" ||
		h.Domain != "WORKGROUP" || h.Attempts != 4 || h.Salt != "KmW4xhdSYkt16-j4S6igfHlBHKSwzz3v85nx6Wn70_s" || len(h.Cred) != 0 {
		t.Fatalf("header %+v", h)
	}
	if d := (Pin{}).Describe(j); !strings.HasPrefix(d, `smb(\\nas.example\keys\tether\disk1.key, credentials protected by tang(`) {
		t.Errorf("Describe = %q", d)
	}
	// The audience tether computes is, byte for byte, the one sealed with
	// the password.
	if got, want := h.audience(), string(readVector(t, "audience.json")); got != want {
		t.Errorf("audience %s, want %s", got, want)
	}
	cj, err := h.Credentials.Parse()
	if err != nil || cj == nil {
		t.Fatalf("cred_jwe: %v", err)
	}
	var sealed struct{ Password, Aud string }
	if err := json.Unmarshal(ecdhDecrypt(t, cj, readVector(t, "protect.jwk")), &sealed); err != nil {
		t.Fatal(err)
	}
	if sealed.Password != "smb-password-for-vectors" || sealed.Aud != h.audience() {
		t.Fatalf("sealed credentials %+v", sealed)
	}

	material := readVector(t, "material.bin")
	k, err := jose.ParseJWK(readVector(t, "key.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	salt, _ := jose.B64.DecodeString(h.Salt)
	key, err := remote.DeriveKey("smb", material, salt)
	if err != nil || jose.B64.EncodeToString(key) != k.K {
		t.Fatalf("DeriveKey = %x, %v; want key.jwk (OpenSSL's HKDF)", key, err)
	}
	got, err := remote.Decrypt(context.Background(), "smb", j, h.Salt, func(context.Context) ([]byte, error) {
		return bytes.Clone(material), nil
	})
	if err != nil || !bytes.Equal(got, readVector(t, "secret.txt")) {
		t.Fatalf("decrypt the vector: %q, %v", got, err)
	}
}

// Produce direction: a JWE made by tether from the vector's inputs (salt
// and IV are random) parses to the same header and decrypts with José.
func TestVectorProduce(t *testing.T) {
	joseCmd := testenv.RequireCmd(t, "jose")
	material, secret := readVector(t, "material.bin"), readVector(t, "secret.txt")
	hdr := header{Server: "nas.example", Port: 445, Share: "keys", Path: `tether\disk1.key`, User: "disk1", Domain: "WORKGROUP", Attempts: 4}
	j, err := remote.Encrypt("smb", material, secret, func(salt string) (json.RawMessage, error) {
		hdr.Salt = salt
		return json.Marshal(clevisHeader{Pin: "smb", SMB: hdr})
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(j.Header.Clevis)
	if err != nil || h.Server != hdr.Server || h.Path != hdr.Path || h.audience() != string(readVector(t, "audience.json")) {
		t.Fatalf("header %+v, %v", h, err)
	}
	salt, _ := jose.B64.DecodeString(h.Salt)
	key, err := remote.DeriveKey("smb", material, salt)
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
