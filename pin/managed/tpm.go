package managed

import (
	"context"
	"crypto"

	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/tether-nbde/tether/internal/tpm"
)

// The "tpm" key store keeps the identity key in the TPM: an ECC P-256
// signing key, fixedTPM and fixedParent, created under the owner
// hierarchy. DIR/identity.tpm holds only the TPM-wrapped blobs, which load
// on this TPM alone; the private key never exists outside the TPM.
//
// Which TPM: TETHER_TPM_TCTI, then TPM2TOOLS_TCTI, then /dev/tpmrm0 (see
// docs/TPM2.md). The signer opens the TPM for each signature and closes it
// again, so a long-running agent does not hold a TPM that allows one
// connection at a time (swtpm) away from other tether commands.

func init() { RegisterKeyStore("tpm", TPMKeyStore{}) }

const tpmIdentityFile = "identity.tpm"

// tpmTimeout bounds one TPM operation.
const tpmTimeout = 30 * time.Second

// TPMKeyStore implements KeyStore with a TPM-resident key.
type TPMKeyStore struct {
	TCTI string // empty: from the environment
}

func (s TPMKeyStore) open() (*tpm.TPM, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), tpmTimeout)
	t, err := tpm.Open(ctx, s.TCTI)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return t, cancel, nil
}

// Create implements KeyStore.
func (s TPMKeyStore) Create(dir string) (crypto.Signer, error) {
	t, cancel, err := s.open()
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer t.Close()
	k, err := tpm.CreateIdentityKey(t)
	if err != nil {
		return nil, fmt.Errorf("create identity key in the TPM: %w", err)
	}
	if err := k.WriteFile(filepath.Join(dir, tpmIdentityFile)); err != nil {
		return nil, fmt.Errorf("write identity key: %w", err)
	}
	return &tpmSigner{store: s, key: k}, nil
}

// Load implements KeyStore.
func (s TPMKeyStore) Load(dir string) (crypto.Signer, error) {
	k, err := tpm.ReadIdentityKey(filepath.Join(dir, tpmIdentityFile))
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w", err)
	}
	return &tpmSigner{store: s, key: k}, nil
}

type tpmSigner struct {
	store TPMKeyStore
	key   *tpm.IdentityKey
}

func (s *tpmSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *tpmSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	t, cancel, err := s.store.open()
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer t.Close()
	return s.key.Sign(t, digest, opts.HashFunc())
}

// TPMPresent reports whether a TPM answers at the configured TCTI: the
// default key store is "tpm" when it does, "file" otherwise.
func TPMPresent() bool {
	t, cancel, err := TPMKeyStore{}.open()
	if err != nil {
		return false
	}
	cancel()
	t.Close()
	return true
}

// defaultKeyStore picks the identity key store when none is named: the
// TPM when one is present, so the key cannot be copied off the device.
func defaultKeyStore() string {
	if TPMPresent() {
		return "tpm"
	}
	return "file"
}
