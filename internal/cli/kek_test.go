package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// TestServerKEKSealedToTPM drives the real binaries and a software TPM: a
// managed server's KEK sealed to the TPM keeps every device unlocking; the
// same data directory with another TPM does not start; unseal gives back
// the plain file.
func TestServerKEKSealedToTPM(t *testing.T) {
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTCTI, sw.TCTI) // for the server and the commands, which inherit it
	f := startManagedFixture(t)
	f.stop()
	data := f.data

	kek := filepath.Join(data, "kek")
	plain, _ := os.ReadFile(kek)
	if _, e, code := tether(t, nil, "", "server", "kek", "seal", "--data", data, "tpm2", "{}"); code != 2 || !strings.Contains(e, "--backup") {
		t.Fatalf("seal without --backup or --no-backup: exit %d\n%s", code, e)
	}
	backup := filepath.Join(t.TempDir(), "kek.backup")
	_, e, code := tether(t, nil, "", "server", "kek", "seal", "--data", data, "--backup", backup, "tpm2", `{"pcr_ids":"7"}`)
	if code != 0 || !strings.Contains(e, "sealed: tpm2") {
		t.Fatalf("seal: exit %d\n%s", code, e)
	}
	if b, _ := os.ReadFile(backup); !bytes.Equal(b, plain) {
		t.Fatalf("backup holds %q, want the plain KEK", b)
	}
	if fi, _ := os.Stat(backup); fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode %v", fi.Mode().Perm())
	}
	if _, e, code := tether(t, nil, "", "server", "kek", "seal", "--data", data, "--backup", backup, "tpm2", "{}"); code == 0 || !strings.Contains(e, "already exists") {
		t.Fatalf("seal over an existing backup: exit %d\n%s", code, e)
	}
	sealed, _ := os.ReadFile(kek)
	if bytes.Contains(sealed, []byte("tether-kek-v1:")) {
		t.Fatal("the sealed KEK file still holds the plain key")
	}

	f.start(t)
	f.mustDecrypt(t, "with the sealed KEK")
	if !strings.Contains(f.srv.Logs.String(), "key-encryption key unsealed") {
		t.Errorf("the server did not log the unsealing:\n%s", f.srv.Logs.String())
	}
	f.stop()

	// The data directory on another machine (another TPM): no start.
	other := tpmtest.Start(t)
	if code, out := serverMustNotStart(t, data, []string{tpm.EnvTCTI + "=" + other.TCTI}); code == 0 || !strings.Contains(out, "could not be unsealed") {
		t.Fatalf("server with another TPM: exit %d\n%s", code, out)
	}

	mustTether(t, nil, "", "server", "kek", "unseal", "--data", data)
	if b, _ := os.ReadFile(kek); !bytes.Equal(b, plain) {
		t.Fatalf("unsealed KEK %q, want the original", b)
	}

	// sss: this TPM or a Tang server. With another TPM, the Tang server
	// alone lets the server start.
	tang := testenv.StartServer(t, "")
	policy := `{"t":1,"pins":{"tpm2":[{}],"tang":[{"url":"` + tang.URL + `"}]}}`
	mustTether(t, nil, "", "server", "kek", "seal", "--data", data, "--no-backup", "-y", "sss", policy)
	t.Setenv(tpm.EnvTCTI, other.TCTI)
	f.start(t)
	f.mustDecrypt(t, "with the KEK unsealed through Tang")
	if !strings.Contains(f.srv.Logs.String(), "sss(") {
		t.Errorf("the server did not log the sss policy:\n%s", f.srv.Logs.String())
	}
}

// TestServerKEKRotate drives the real binaries: after a rotation the
// restarted server still unlocks an enrolled device and keeps its TLS key
// (the admin client's pin holds), and the old KEK file no longer opens
// the store.
func TestServerKEKRotate(t *testing.T) {
	f := startManagedFixture(t)
	f.stop()
	data := f.data

	kek := filepath.Join(data, "kek")
	old, _ := os.ReadFile(kek)
	if _, e, code := tether(t, nil, "", "server", "kek", "rotate", "--data", data); code != 2 || !strings.Contains(e, "--servers-stopped") {
		t.Fatalf("rotate without --servers-stopped: exit %d\n%s", code, e)
	}
	empty := t.TempDir()
	os.WriteFile(filepath.Join(empty, "kek"), old, 0o600)
	if _, e, code := tether(t, nil, "", "server", "kek", "rotate", "--data", empty, "--servers-stopped"); code != 1 || !strings.Contains(e, "tether.db") {
		t.Fatalf("rotate in a directory without a store: exit %d\n%s", code, e)
	}
	if _, err := os.Stat(filepath.Join(empty, "tether.db")); err == nil {
		t.Fatal("rotate in the wrong directory created a store there")
	}
	mustTether(t, nil, "", "server", "kek", "rotate", "--data", data, "--servers-stopped")
	if now, _ := os.ReadFile(kek); bytes.Equal(now, old) {
		t.Fatal("the KEK file did not change")
	}
	f.start(t)
	f.mustDecrypt(t, "after rotation")
	mustTether(t, f.adminEnv, "", "admin", "device", "list")
	f.stop()

	os.WriteFile(kek, old, 0o600)
	if code, out := serverMustNotStart(t, data, nil); code == 0 || !strings.Contains(out, "different key-encryption key") {
		t.Fatalf("server with the old KEK: exit %d\n%s", code, out)
	}
}
