package server

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tether-nbde/tether/internal/atomicfile"
)

// KEK is the key-encryption key: every server secret the store holds (each
// device's exchange key, the managed TLS key) is AES-256-GCM-sealed under
// it, with the secret's purpose and owner as associated data so that a
// wrapped key cannot be moved to another row. The KEK itself lives in a
// root-only file outside the store: a copy of the database alone (a
// backup, a PostgreSQL replica, a stolen disk image of the database host)
// reveals no key.
type KEK struct{ aead cipher.AEAD }

const kekFileHeader = "tether-kek-v1:"

// LoadOrCreateKEK reads the KEK file, or creates it (0600) with a fresh
// random key if it does not exist. The file holds one line:
// "tether-kek-v1:" followed by the base64 of 32 bytes.
func LoadOrCreateKEK(path string) (*KEK, bool, error) {
	data, err := os.ReadFile(path)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, false, err
		}
		data = []byte(kekFileHeader + base64.StdEncoding.EncodeToString(key) + "\n")
		clear(key)
		if err := atomicfile.Write(path, data, 0o600); err != nil {
			return nil, false, fmt.Errorf("create key-encryption key %s: %w", path, err)
		}
		created = true
	} else if err != nil {
		return nil, false, fmt.Errorf("read key-encryption key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("key-encryption key %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	s := strings.TrimSpace(string(data))
	if !strings.HasPrefix(s, kekFileHeader) {
		return nil, false, fmt.Errorf("key-encryption key %s: not a tether KEK file", path)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, kekFileHeader))
	if err != nil || len(key) != 32 {
		return nil, false, fmt.Errorf("key-encryption key %s: want base64 of 32 bytes", path)
	}
	k, err := NewKEK(key)
	clear(key)
	return k, created, err
}

// NewKEK makes a KEK from 32 bytes.
func NewKEK(key []byte) (*KEK, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &KEK{aead: g}, nil
}

// Wrap seals secret for the given purpose (e.g. "device-key:ID").
func (k *KEK) Wrap(purpose string, secret []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(secret)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, secret, []byte("tether-wrap-v1:"+purpose)), nil
}

// Unwrap opens what Wrap sealed for the same purpose.
func (k *KEK) Unwrap(purpose string, wrapped []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(wrapped) < n+k.aead.Overhead() {
		return nil, errors.New("wrapped key is truncated")
	}
	out, err := k.aead.Open(nil, wrapped[:n], wrapped[n:], []byte("tether-wrap-v1:"+purpose))
	if err != nil {
		return nil, fmt.Errorf("unwrap %s: wrong key-encryption key or tampered data", purpose)
	}
	return out, nil
}

// check returns a value that identifies the KEK without revealing it, to
// store beside the data so that a replica started with another KEK stops
// at once instead of failing every unlock.
func (k *KEK) check() (string, error) {
	w, err := k.Wrap("kek-check", []byte("tether"))
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(w), nil
}

func (k *KEK) verifyCheck(stored string) error {
	w, err := base64.StdEncoding.DecodeString(stored)
	if err == nil {
		_, err = k.Unwrap("kek-check", w)
	}
	if err != nil {
		h := sha256.Sum256([]byte(stored))
		return fmt.Errorf("the store was set up with a different key-encryption key (check %x): every replica must use the same KEK file", h[:4])
	}
	return nil
}
