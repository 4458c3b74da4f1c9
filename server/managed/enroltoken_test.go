package managed

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"strings"
	"testing"
)

// The enrolment token vector was made without tether, by OpenSSL and
// coreutils (pin/managed/testdata/gen.sh); the device reads it in
// pin/managed's TestEnrolTokenVector.
func TestEnrolTokenVector(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile("../../pin/managed/testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	blk, _ := pem.Decode(read("server.pem"))
	if blk == nil {
		t.Fatal("server.pem: no PEM block")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pin, tok := string(read("pin.txt")), string(read("token.txt"))
	if got := SPKIPin(cert.RawSubjectPublicKeyInfo); got != pin {
		t.Fatalf("SPKIPin(server.pem) = %s, OpenSSL says %s", got, pin)
	}
	secret, _ := hex.DecodeString(strings.TrimSpace(string(read("token-secret.hex"))))
	stored, _ := hex.DecodeString(strings.TrimSpace(string(read("token-stored.hex"))))

	// Produce: the same secret and server give the same token, and the
	// hash the store keeps.
	got, hash, err := makeToken(secret, pin)
	if err != nil || got != tok || !bytes.Equal(hash, stored) {
		t.Fatalf("makeToken = %s, %x, %v; want %s, %x", got, hash, err, tok, stored)
	}
	// Parse: the secret and the server pin.
	s, p, err := ParseToken(tok + "\n")
	if err != nil || !bytes.Equal(s, secret) || p != pin {
		t.Fatalf("ParseToken = %x, %s, %v", s, p, err)
	}
	for _, bad := range []string{tok[:85], tok + "A", "=" + tok[1:]} {
		if _, _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
	// A fresh token carries the pin it was made for.
	fresh, _, err := MakeToken(pin)
	if err != nil {
		t.Fatal(err)
	}
	if _, p, err := ParseToken(fresh); err != nil || p != pin || fresh == tok {
		t.Fatalf("MakeToken: %s parses to pin %s, %v", fresh, p, err)
	}
}
