package cli_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/server/admin"
)

// TestFirstStartPortBusy: the very first start in managed mode fails
// because the managed port is taken. That must leave the server
// administrable: the next start (port free) writes working admin
// credentials.
func TestFirstStartPortBusy(t *testing.T) {
	data := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := busy.Addr().String()
	// Generous: a first start makes keys and the store, which takes a
	// while on a loaded machine; the test is about the error, not speed.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.TetherBin(t), "server", "--listen", testenv.FreePort(t), "--data", data,
		"--managed-listen", maddr, "--curve", "P-256")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil || err == nil {
		t.Fatalf("the server started with its managed port taken:\n%s", out)
	}
	if !strings.Contains(string(out), "in use") || !strings.Contains(string(out), "--managed-listen") {
		t.Fatalf("unclear error for a busy managed port:\n%s", out)
	}
	busy.Close()

	testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	adminEnv := []string{"TETHER_ADMIN_CONFIG=" + filepath.Join(data, "admin.json")}
	mustTether(t, adminEnv, "", "admin", "device", "list")
	mustTether(t, adminEnv, "", "admin", "user", "unlock", "admin") // the dashboard account the first start made
}

// TestResetCredentials: root reissues lost admin credentials offline; the
// new ones work and the old ones stop working. A running server makes it
// refuse.
func TestResetCredentials(t *testing.T) {
	data := t.TempDir()
	maddr := testenv.FreePort(t)
	srv := testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	file := filepath.Join(data, "admin.json")
	oldFile := filepath.Join(t.TempDir(), "old-admin.json")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(oldFile, b, 0o600)
	oldEnv := []string{"TETHER_ADMIN_CONFIG=" + oldFile}
	mustTether(t, oldEnv, "", "admin", "device", "list")

	if _, e, code := tether(t, nil, "", "admin", "reset-credentials", "--data", data); code != 1 || !strings.Contains(e, "running") || !strings.Contains(e, "stop the server") {
		t.Fatalf("reset-credentials beside a running server: exit %d\n%s", code, e)
	}
	mustTether(t, oldEnv, "", "admin", "device", "list") // nothing changed

	srv.Cmd.Process.Signal(syscall.SIGTERM)
	srv.Cmd.Wait()
	os.Remove(file) // lost
	if _, e, code := tether(t, nil, "", "admin", "reset-credentials", "--data", data); code != 2 || !strings.Contains(e, "--url") {
		t.Fatalf("reset-credentials without a URL to use: exit %d\n%s", code, e)
	}
	mustTether(t, nil, "", "admin", "reset-credentials", "--data", data, "--url", "https://"+maddr)
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new admin.json: %v %v", err, fi)
	}
	testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	newEnv := []string{"TETHER_ADMIN_CONFIG=" + file}
	mustTether(t, newEnv, "", "admin", "device", "list")
	if _, e, code := tether(t, oldEnv, "", "admin", "device", "list"); code == 0 || !strings.Contains(e, "wrong admin token") {
		t.Fatalf("old admin token after reset: exit %d\n%s", code, e)
	}
	if out := mustTether(t, newEnv, "", "admin", "audit", "export"); !strings.Contains(out, `"action":"admin.reset-credentials"`) {
		t.Fatalf("the reset is not audited:\n%s", out)
	}
	cfg, err := admin.LoadCredentials(file)
	if err != nil || cfg.URL != "https://"+maddr {
		t.Fatalf("new admin.json: %+v %v", cfg, err)
	}
}

// TestAdminConfigMode: admin.json readable by others is not accepted
// silently: the server warns at start and tether admin at every use, each
// naming the chmod that fixes it; a reissued file is 0600 again.
func TestAdminConfigMode(t *testing.T) {
	data := t.TempDir()
	maddr := testenv.FreePort(t)
	srv := testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	file := filepath.Join(data, "admin.json")
	adminEnv := []string{"TETHER_ADMIN_CONFIG=" + file}
	if _, e, code := tether(t, adminEnv, "", "admin", "device", "list"); code != 0 || strings.Contains(e, "warning") {
		t.Fatalf("0600 admin.json: exit %d\n%s", code, e)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	_, e, code := tether(t, adminEnv, "", "admin", "device", "list")
	if code != 0 || !strings.Contains(e, "warning") || !strings.Contains(e, "chmod 600 "+file) {
		t.Fatalf("0644 admin.json: exit %d\n%s", code, e)
	}
	srv.Cmd.Process.Signal(syscall.SIGTERM)
	srv.Cmd.Wait()
	srv = testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	if !strings.Contains(srv.Logs.String(), "chmod 600 "+file) {
		t.Fatalf("the server starts silently beside a 0644 admin.json:\n%s", srv.Logs.String())
	}
	srv.Cmd.Process.Signal(syscall.SIGTERM)
	srv.Cmd.Wait()
	mustTether(t, nil, "", "admin", "reset-credentials", "--data", data)
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("reissued admin.json: %v %v", err, fi.Mode())
	}
}
