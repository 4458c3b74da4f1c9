package managed_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	managedpin "github.com/tether-nbde/tether/pin/managed"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/servertest"
)

// TestTPMIdentity enrols with the identity key in a (software) TPM: by
// default when a TPM is present. The state directory then holds only
// TPM-wrapped blobs, unlock works through the TPM-signed handshake, and
// the same state directory is useless with another TPM.
func TestTPMIdentity(t *testing.T) {
	sw := tpmtest.Start(t)
	t.Setenv("TETHER_TPM_TCTI", sw.TCTI)
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token(""), "")

	id, err := managedpin.LoadIdentity(d.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if id.State.KeyStore != "tpm" {
		t.Fatalf("key store %q, want tpm when a TPM is present", id.State.KeyStore)
	}
	if _, err := os.Stat(filepath.Join(d.Dir, "identity.key")); !os.IsNotExist(err) {
		t.Fatalf("a file identity key exists next to the TPM key: %v", err)
	}
	blob, err := os.ReadFile(filepath.Join(d.Dir, "identity.tpm"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, []byte("PRIVATE KEY")) {
		t.Fatal("identity.tpm holds a private key in the clear")
	}

	j := d.Encrypt(t, "disk passphrase")
	e.MustUnlock(d, j, "disk passphrase")

	// Another TPM cannot load the key: the copied state directory is
	// useless, so the unlock fails.
	other := tpmtest.Start(t)
	t.Setenv("TETHER_TPM_TCTI", other.TCTI)
	if _, err := d.Decrypt(context.Background(), j); err == nil {
		t.Fatal("unlock with the identity key blobs on another TPM succeeded")
	}
	t.Setenv("TETHER_TPM_TCTI", sw.TCTI)
	e.MustUnlock(d, j, "disk passphrase")
}
