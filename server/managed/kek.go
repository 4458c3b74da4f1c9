package managed

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/store"
)

// KEK is the key-encryption key: every server secret the store holds (each
// device's exchange key, the managed TLS key) is AES-256-GCM-sealed under
// it, with the secret's purpose and owner as associated data so that a
// wrapped key cannot be moved to another row. The KEK itself lives in a
// root-only file outside the store: a copy of the database alone (a
// backup, a PostgreSQL replica, a stolen disk image of the database host)
// reveals no key. The file can itself be sealed to a TPM or to Tang
// servers (SealKEK), so that the server's own disk is no better.
type KEK struct {
	aead     cipher.AEAD
	sealedBy string // the pin policy the file was sealed under; empty if plain
}

const kekFileHeader = "tether-kek-v1:"

// LoadOrCreateKEK reads the KEK file, or creates it (0600) with a fresh
// random key if it does not exist. A plain KEK file holds one line:
// "tether-kek-v1:" followed by the base64 of 32 bytes. A sealed one holds
// that line encrypted under a pin's policy (SealKEK), and is unsealed here:
// ctx bounds the pin's work (a TPM, Tang servers).
func LoadOrCreateKEK(ctx context.Context, path string) (*KEK, bool, error) {
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
	text, sealedBy, err := kekText(ctx, path, data)
	clear(data)
	if err != nil {
		return nil, false, err
	}
	defer clear(text)
	k, err := parseKEK(path, text)
	if err != nil {
		return nil, false, err
	}
	k.sealedBy = sealedBy
	return k, created, nil
}

// SealedBy describes the policy the KEK file was sealed under, such as
// "tpm2(pcr 7)", or is empty for a plain file.
func (k *KEK) SealedBy() string { return k.sealedBy }

func parseKEK(path string, text []byte) (*KEK, error) {
	s := strings.TrimSpace(string(text))
	if !strings.HasPrefix(s, kekFileHeader) {
		return nil, fmt.Errorf("key-encryption key %s: not a tether KEK file", path)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, kekFileHeader))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("key-encryption key %s: want base64 of 32 bytes", path)
	}
	defer clear(key)
	return NewKEK(key)
}

// sealedKEK returns the JWE of a sealed KEK file, or nil for a plain one.
func sealedKEK(data []byte) *jose.JWE {
	s := strings.TrimSpace(string(data))
	if strings.HasPrefix(s, kekFileHeader) {
		return nil
	}
	j, err := jose.ParseCompact(s)
	if err != nil {
		return nil
	}
	return j
}

// kekText returns the plain text of a KEK file's content, unsealing it if
// it is sealed; sealedBy then describes the policy.
func kekText(ctx context.Context, path string, data []byte) (text []byte, sealedBy string, err error) {
	j := sealedKEK(data)
	if j == nil {
		return bytes.Clone(data), "", nil
	}
	sealedBy = pin.Describe(j)
	text, err = pin.Decrypt(ctx, j, pin.Options{})
	if err != nil {
		return nil, "", fmt.Errorf("key-encryption key %s is sealed (%s) and could not be unsealed: %w", path, sealedBy, err)
	}
	return text, sealedBy, nil
}

// SealKEK encrypts the KEK file at path under the policy of pinName with
// cfg (as tether encrypt does, with its options), so that the server can read it only where
// that policy holds: on this machine's TPM, with its Tang servers reachable,
// or both with sss. A sealed file is sealed again under the new policy.
// The sealed file is decrypted back and compared before it replaces the
// old one, atomically: a failure leaves the file as it was. It returns the
// description of the new policy.
func SealKEK(ctx context.Context, path, pinName string, cfg json.RawMessage, o pin.Options) (string, error) {
	text, _, err := KEKText(ctx, path)
	if err != nil {
		return "", err
	}
	defer clear(text)
	j, err := pin.Encrypt(ctx, pinName, cfg, text, o)
	if err != nil {
		return "", fmt.Errorf("seal key-encryption key: %w", err)
	}
	sealed := j.Compact()
	back, err := jose.ParseCompact(sealed)
	if err == nil {
		var got []byte
		if got, err = pin.Decrypt(ctx, back, pin.Options{}); err == nil && !bytes.Equal(got, text) {
			err = errors.New("it decrypts to something else")
		}
		clear(got)
	}
	if err != nil {
		return "", fmt.Errorf("the sealed key-encryption key does not unseal here (%v): %s is unchanged", err, path)
	}
	if err := atomicfile.Write(path, []byte(sealed+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write sealed key-encryption key: %w", err)
	}
	return pin.Describe(j), nil
}

// UnsealKEK turns a sealed KEK file back into a plain one.
func UnsealKEK(ctx context.Context, path string) error {
	text, sealed, err := KEKText(ctx, path)
	if err != nil {
		return err
	}
	defer clear(text)
	if !sealed {
		return fmt.Errorf("key-encryption key %s is not sealed", path)
	}
	return atomicfile.Write(path, text, 0o600)
}

// KEKText returns the plain text of the KEK file at path, unsealing it if
// it is sealed (sealed says so), and checks that it is a KEK. The caller
// must clear it.
func KEKText(ctx context.Context, path string) (text []byte, sealed bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("read key-encryption key: %w", err)
	}
	defer clear(data)
	text, sealedBy, err := kekText(ctx, path, data)
	if err != nil {
		return nil, false, err
	}
	if _, err := parseKEK(path, text); err != nil {
		clear(text)
		return nil, false, err
	}
	return text, sealedBy != "", nil
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

// ErrKEKMismatch is returned when the store was set up with another KEK.
var ErrKEKMismatch = errors.New("the store was set up with a different key-encryption key")

func (k *KEK) verifyCheck(stored string) error {
	w, err := base64.StdEncoding.DecodeString(stored)
	if err == nil {
		_, err = k.Unwrap("kek-check", w)
	}
	if err != nil {
		h := sha256.Sum256([]byte(stored))
		return fmt.Errorf("%w (check %x): every replica must use the same KEK file", ErrKEKMismatch, h[:4])
	}
	return nil
}

// RotateKEK replaces the KEK at path by a new random one and rewraps every
// key the store holds under it: each device's exchange key, the managed
// TLS key, and the KEK check. Every server using the store must be stopped
// first and started again afterwards (they hold the old KEK in memory).
//
// It never loses a key. The new KEK is written durably to path+".new"
// before the store changes; the store changes in one transaction; then
// path+".new" replaces path. If it stops between the transaction and the
// rename, the servers refuse to start (the check no longer matches the old
// file) and running RotateKEK again finishes the job: finished reports
// that. A sealed KEK file must be unsealed first (and sealed again after).
func RotateKEK(ctx context.Context, path string, st store.Store) (finished bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read key-encryption key: %w", err)
	}
	if sealedKEK(data) != nil {
		return false, fmt.Errorf("key-encryption key %s is sealed: unseal it first (tether server kek unseal), rotate, then seal it again", path)
	}
	old, err := parseKEK(path, data)
	if err != nil {
		return false, err
	}
	check, err := st.Setting(ctx, "kek.check")
	if err != nil {
		return false, fmt.Errorf("the store has no KEK check (was managed mode ever started on it?): %w", err)
	}
	newPath := path + ".new"
	if pending, err := os.ReadFile(newPath); err == nil {
		if k, err := parseKEK(newPath, pending); err == nil && k.verifyCheck(check) == nil {
			// The store is already under the new KEK: finish.
			return true, atomicfile.Rename(newPath, path)
		}
	}
	if err := old.verifyCheck(check); err != nil {
		return false, fmt.Errorf("%s is not the store's key-encryption key: %w", path, err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return false, err
	}
	text := []byte(kekFileHeader + base64.StdEncoding.EncodeToString(key) + "\n")
	fresh, err := NewKEK(key)
	clear(key)
	if err != nil {
		return false, err
	}
	if err := atomicfile.Write(newPath, text, 0o600); err != nil {
		clear(text)
		return false, fmt.Errorf("write the new key-encryption key: %w", err)
	}
	clear(text)
	settings := map[string]string{}
	if settings["kek.check"], err = fresh.check(); err != nil {
		return false, err
	}
	if tlsSetting, err := st.Setting(ctx, "managed.tls"); err == nil {
		if settings["managed.tls"], err = rewrapTLS(tlsSetting, old, fresh); err != nil {
			os.Remove(newPath)
			return false, err
		}
	}
	if pcrKey, err := st.Setting(ctx, pcrKeySetting); err == nil {
		if settings[pcrKeySetting], err = rewrapPCRKey(pcrKey, old, fresh); err != nil {
			os.Remove(newPath)
			return false, err
		}
	}
	err = st.Rekey(ctx, func(id string, w []byte) ([]byte, error) {
		purpose := "device-key:" + id
		plain, err := old.Unwrap(purpose, w)
		if err != nil {
			return nil, err
		}
		defer clear(plain)
		return fresh.Wrap(purpose, plain)
	}, settings)
	if err != nil {
		os.Remove(newPath)
		return false, err
	}
	// Old wrapped keys must not linger in SQLite's write-ahead log.
	if c, ok := st.(store.Checkpointer); ok {
		c.Checkpoint(ctx)
	}
	return false, atomicfile.Rename(newPath, path)
}

// rewrapTLS rewraps the managed TLS key in its stored setting.
func rewrapTLS(setting string, old, fresh *KEK) (string, error) {
	var s storedTLS
	if err := json.Unmarshal([]byte(setting), &s); err != nil {
		return "", fmt.Errorf("stored TLS certificate: %w", err)
	}
	w, err := base64.StdEncoding.DecodeString(s.Key)
	if err != nil {
		return "", fmt.Errorf("stored TLS certificate is malformed")
	}
	p8, err := old.Unwrap("managed-tls-key", w)
	if err != nil {
		return "", err
	}
	defer clear(p8)
	nw, err := fresh.Wrap("managed-tls-key", p8)
	if err != nil {
		return "", err
	}
	s.Key = base64.StdEncoding.EncodeToString(nw)
	b, err := json.Marshal(s)
	return string(b), err
}
