package cli_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
	data := t.TempDir()
	maddr := testenv.FreePort(t)
	srv := testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	adminEnv := []string{"TETHER_ADMIN_CONFIG=" + filepath.Join(data, "admin.json")}
	tok := strings.TrimSpace(mustTether(t, adminEnv, "", "admin", "token", "create"))
	devEnv := []string{"TETHER_DEVICE_DIR=" + t.TempDir()}
	mustTether(t, devEnv, tok, "enroll", "--server", "https://"+maddr, "--token-file", "-", "--key-store", "file")
	jwe := mustTether(t, devEnv, "disk key", "encrypt", "managed", "{}")
	stop := func(s *testenv.Server) {
		s.Cmd.Process.Signal(syscall.SIGTERM)
		s.Cmd.Wait()
	}
	stop(srv)

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

	srv = testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	if got := mustTether(t, devEnv, jwe, "decrypt"); got != "disk key" {
		t.Fatalf("decrypt with the sealed KEK gave %q", got)
	}
	if !strings.Contains(srv.Logs.String(), "key-encryption key unsealed") {
		t.Errorf("the server did not log the unsealing:\n%s", srv.Logs.String())
	}
	stop(srv)

	// The data directory on another machine (another TPM): no start.
	other := tpmtest.Start(t)
	cmd := exec.Command(testenv.TetherBin(t), "server", "--listen", testenv.FreePort(t), "--data", data,
		"--managed-listen", testenv.FreePort(t))
	cmd.Env = append(os.Environ(), tpm.EnvTCTI+"="+other.TCTI)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(logs.String(), "could not be unsealed") {
			t.Fatalf("server with another TPM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the server started with another TPM:\n%s", logs.String())
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
	cmd = exec.Command(testenv.TetherBin(t), "server", "--listen", testenv.FreePort(t), "--data", data,
		"--managed-listen", maddr, "--curve", "P-256")
	cmd.Env = append(os.Environ(), tpm.EnvTCTI+"="+other.TCTI)
	slogs := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = slogs, slogs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testenv.WaitTCP(t, maddr)
	if got := mustTether(t, devEnv, jwe, "decrypt"); got != "disk key" {
		t.Fatalf("decrypt with the KEK unsealed through Tang: %q", got)
	}
	if !strings.Contains(slogs.String(), "sss(") {
		t.Errorf("the server did not log the sss policy:\n%s", slogs.String())
	}
}

// TestServerKEKRotate drives the real binaries: after a rotation the
// restarted server still unlocks an enrolled device and keeps its TLS key
// (the admin client's pin holds), and the old KEK file no longer opens
// the store.
func TestServerKEKRotate(t *testing.T) {
	data := t.TempDir()
	maddr := testenv.FreePort(t)
	srv := testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	adminEnv := []string{"TETHER_ADMIN_CONFIG=" + filepath.Join(data, "admin.json")}
	tok := strings.TrimSpace(mustTether(t, adminEnv, "", "admin", "token", "create"))
	devEnv := []string{"TETHER_DEVICE_DIR=" + t.TempDir()}
	mustTether(t, devEnv, tok, "enroll", "--server", "https://"+maddr, "--token-file", "-", "--key-store", "file")
	jwe := mustTether(t, devEnv, "disk key", "encrypt", "managed", "{}")
	srv.Cmd.Process.Signal(syscall.SIGTERM)
	srv.Cmd.Wait()

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
	srv = testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	if got := mustTether(t, devEnv, jwe, "decrypt"); got != "disk key" {
		t.Fatalf("decrypt after rotation gave %q", got)
	}
	mustTether(t, adminEnv, "", "admin", "device", "list")
	srv.Cmd.Process.Signal(syscall.SIGTERM)
	srv.Cmd.Wait()

	os.WriteFile(kek, old, 0o600)
	_, e, code := testenv.Run(t, nil, testenv.TetherBin(t), "server", "--listen", testenv.FreePort(t), "--data", data,
		"--managed-listen", testenv.FreePort(t))
	if code == 0 || !strings.Contains(string(e), "different key-encryption key") {
		t.Fatalf("server with the old KEK: exit %d\n%s", code, e)
	}
}
