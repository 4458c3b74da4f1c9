// Package ui_test runs the dashboard's end-to-end test (e2e.mjs) in
// headless Chromium against real tether servers.
package ui_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// password reads the initial account's password from DATA/ui-admin.txt.
func password(t *testing.T, data string) string {
	t.Helper()
	var f *os.File
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if f, err = os.Open(filepath.Join(data, "ui-admin.txt")); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("ui-admin.txt has mode %v, want 0600", fi.Mode().Perm())
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if pw, ok := strings.CutPrefix(sc.Text(), "password: "); ok {
			return pw
		}
	}
	t.Fatal("no password in ui-admin.txt")
	return ""
}

// TestDashboardInChromium: sign in, enroll, unlock seen live, approve,
// new PCR values of a signed tpm2 binding (a software TPM) approved,
// revoke, lockdown, audit, key rotation; wrong password, a forged
// cross-site request and an idle session refused. Screenshots go to
// docs/screenshots with TETHER_UI_SCREENSHOTS=1, else to a temporary
// directory.
func TestDashboardInChromium(t *testing.T) {
	node := testenv.RequireCmd(t, "node")
	npm := testenv.RequireCmd(t, "npm")
	chromium := testenv.RequireCmd(t, "chromium")
	dir, _ := filepath.Abs(".")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		testenv.Require(t, err == nil, "npm ci in test/ui failed (is the npm registry reachable?): "+string(out))
	}
	bin := testenv.TetherBin(t)

	managed := testenv.FreePort(t)
	s := testenv.StartServer(t, "", "--managed-listen", managed, "--curve", "P-256")
	testenv.WaitTCP(t, managed)
	// The page shows a device that enrols without a token: allow that.
	open := exec.Command(bin, "admin", "enroll-open", "on")
	open.Env = append(os.Environ(), "TETHER_ADMIN_CONFIG="+filepath.Join(s.Data, "admin.json"))
	if out, err := open.CombinedOutput(); err != nil {
		t.Fatalf("tether admin enroll-open on: %v\n%s", err, out)
	}
	managed2 := testenv.FreePort(t)
	s2 := testenv.StartServer(t, "", "--managed-listen", managed2, "--curve", "P-256", "--ui-session-idle", "3s")
	testenv.WaitTCP(t, managed2)

	// A device's TPM, for a tpm2 binding whose PCR policy the server signs.
	sw := tpmtest.Start(t)
	testenv.RequireCmd(t, "tpm2_pcrextend")

	shots := t.TempDir()
	if os.Getenv("TETHER_UI_SCREENSHOTS") == "1" {
		shots = filepath.Join(testenv.RepoRoot(), "docs", "screenshots")
	}
	cmd := exec.Command(node, "e2e.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"UI_URL=https://"+managed, "UI_PASSWORD="+password(t, s.Data),
		"UI_URL2=https://"+managed2, "UI_PASSWORD2="+password(t, s2.Data),
		"TETHER="+bin, "ADMIN_CONFIG="+filepath.Join(s.Data, "admin.json"),
		"WORK="+t.TempDir(), "SHOTS="+shots, "CHROMIUM="+chromium,
		"TPM2TOOLS_TCTI="+sw.TCTI, "TETHER_TPM_TCTI=")
	out, err := cmd.CombinedOutput()
	t.Logf("e2e.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("dashboard end-to-end test failed: %v", err)
	}
}
