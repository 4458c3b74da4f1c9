package jose

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Header is the protected header of a Clevis JWE. The pin-specific part
// ("clevis") stays raw for the pin to parse.
type Header struct {
	Alg    string          `json:"alg"`
	Clevis json.RawMessage `json:"clevis,omitempty"`
	Enc    string          `json:"enc"`
	Epk    *JWK            `json:"epk,omitempty"`
	Kid    string          `json:"kid,omitempty"`
}

// ClevisHeader is the common part of the "clevis" header member.
type ClevisHeader struct {
	Pin string `json:"pin"`
}

var clevisPinField = []string{"pin"}

// Pin returns the clevis pin name the JWE was made with.
func (h *Header) Pin() (string, error) {
	if len(h.Clevis) == 0 {
		return "", errors.New("jwe: header has no clevis member (not made by clevis or tether)")
	}
	var c ClevisHeader
	if !DecodeObject(h.Clevis, clevisPinField, func(_ int, raw []byte) bool { return DecodeString(raw, &c.Pin) }) {
		c = ClevisHeader{}
		if err := json.Unmarshal(h.Clevis, &c); err != nil {
			c.Pin = ""
		}
	}
	if c.Pin == "" {
		return "", errors.New("jwe: header has no clevis.pin")
	}
	return c.Pin, nil
}

// JWE is a JWE with a single recipient, as Clevis writes them.
type JWE struct {
	Protected    string // base64url protected header exactly as received: it is the AAD
	Header       Header
	EncryptedKey []byte
	IV           []byte
	Ciphertext   []byte
	Tag          []byte
}

// ParseCompact parses the compact serialization (five dot-separated parts).
// Surrounding whitespace is ignored.
func ParseCompact(s string) (*JWE, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 5 {
		return nil, fmt.Errorf("parse jwe: want 5 dot-separated parts, got %d", len(parts))
	}
	return newJWE(parts[0], parts[1], parts[2], parts[3], parts[4])
}

// flatJWE is the flattened JSON serialization, as stored in LUKS2 tokens.
type flatJWE struct {
	Ciphertext   string `json:"ciphertext"`
	EncryptedKey string `json:"encrypted_key"`
	IV           string `json:"iv"`
	Protected    string `json:"protected"`
	Tag          string `json:"tag"`
}

// ParseFlattened parses the flattened JSON serialization.
func ParseFlattened(data []byte) (*JWE, error) {
	var f flatJWE
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse jwe: %w", err)
	}
	return newJWE(f.Protected, f.EncryptedKey, f.IV, f.Ciphertext, f.Tag)
}

func newJWE(prot, ek, iv, ct, tag string) (*JWE, error) {
	j := &JWE{Protected: prot}
	hb, err := decodeB64(prot)
	if err != nil {
		return nil, fmt.Errorf("parse jwe: protected header: %w", err)
	}
	if j.Header, err = parseHeader(hb); err != nil {
		return nil, fmt.Errorf("parse jwe: protected header: %w", err)
	}
	for _, f := range []struct {
		name string
		s    string
		dst  *[]byte
	}{{"encrypted key", ek, &j.EncryptedKey}, {"iv", iv, &j.IV}, {"ciphertext", ct, &j.Ciphertext}, {"tag", tag, &j.Tag}} {
		if *f.dst, err = decodeB64(f.s); err != nil {
			return nil, fmt.Errorf("parse jwe: %s: %w", f.name, err)
		}
	}
	if j.Header.Enc != "A256GCM" {
		return nil, fmt.Errorf("parse jwe: unsupported content encryption %q (want A256GCM)", j.Header.Enc)
	}
	if len(j.IV) != 12 || len(j.Tag) != 16 {
		return nil, errors.New("parse jwe: A256GCM needs a 12-byte iv and a 16-byte tag")
	}
	if len(j.EncryptedKey) != 0 {
		return nil, errors.New("parse jwe: encrypted key must be empty for direct key agreement")
	}
	if j.Header.Epk != nil {
		if err := j.Header.Epk.Validate(); err != nil {
			return nil, fmt.Errorf("parse jwe: epk: %w", err)
		}
	}
	return j, nil
}

// Compact returns the compact serialization.
func (j *JWE) Compact() string {
	return strings.Join([]string{j.Protected, B64.EncodeToString(j.EncryptedKey), B64.EncodeToString(j.IV),
		B64.EncodeToString(j.Ciphertext), B64.EncodeToString(j.Tag)}, ".")
}

// Flattened returns the flattened JSON serialization.
func (j *JWE) Flattened() []byte {
	b, _ := json.Marshal(flatJWE{
		Protected: j.Protected, EncryptedKey: B64.EncodeToString(j.EncryptedKey), IV: B64.EncodeToString(j.IV),
		Ciphertext: B64.EncodeToString(j.Ciphertext), Tag: B64.EncodeToString(j.Tag),
	})
	return b
}

// Encrypt makes a JWE of plaintext under cek (32 bytes, A256GCM) with the
// given protected header. The header's enc is forced to A256GCM.
func Encrypt(h Header, cek, plaintext []byte) (*JWE, error) {
	h.Enc = "A256GCM"
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	j := &JWE{Protected: B64.EncodeToString(hb), Header: h, IV: make([]byte, 12)}
	if _, err := rand.Read(j.IV); err != nil {
		return nil, err
	}
	g, err := gcm(cek)
	if err != nil {
		return nil, err
	}
	sealed := g.Seal(nil, j.IV, plaintext, []byte(j.Protected))
	j.Ciphertext, j.Tag = sealed[:len(sealed)-16], sealed[len(sealed)-16:]
	return j, nil
}

// ErrDecrypt is returned when authentication of a JWE fails: a wrong key or
// a tampered JWE.
var ErrDecrypt = errors.New("jwe: authentication failed (wrong key or tampered JWE)")

// Decrypt authenticates and decrypts j with the content encryption key.
func (j *JWE) Decrypt(cek []byte) ([]byte, error) {
	g, err := gcm(cek)
	if err != nil {
		return nil, err
	}
	ct := make([]byte, 0, len(j.Ciphertext)+len(j.Tag))
	ct = append(append(ct, j.Ciphertext...), j.Tag...)
	pt, err := g.Open(nil, j.IV, ct, []byte(j.Protected))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("jwe: A256GCM key must be 32 bytes, got %d", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// ConcatKDF derives the A256GCM content key from an ECDH-ES shared secret Z
// (RFC 7518 §4.6, direct key agreement, empty PartyUInfo and PartyVInfo).
func ConcatKDF(z []byte, enc string) []byte {
	h := sha256.New()
	var n [4]byte
	put := func(v uint32) { binary.BigEndian.PutUint32(n[:], v); h.Write(n[:]) }
	put(1)
	h.Write(z)
	put(uint32(len(enc)))
	h.Write([]byte(enc))
	put(0)
	put(0)
	put(256)
	return h.Sum(nil)
}
