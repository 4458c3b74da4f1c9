package cli_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// managedFixture is a managed-mode tether server (the real binary) on its
// own data directory, with one device enrolled (file key store) and a JWE
// of "disk key" bound to it.
type managedFixture struct {
	data, addr       string // data directory, managed listener address
	srv              *testenv.Server
	adminEnv, devEnv []string
	jwe              string
}

func startManagedFixture(t *testing.T) *managedFixture {
	t.Helper()
	f := &managedFixture{data: t.TempDir(), addr: testenv.FreePort(t)}
	f.start(t)
	f.adminEnv = []string{"TETHER_ADMIN_CONFIG=" + filepath.Join(f.data, "admin.json")}
	f.devEnv, f.jwe = f.enrol(t)
	return f
}

// enrol enrols one more device (file key store, its own directory) with
// a fresh token and returns its environment and a JWE of "disk key" bound
// to it.
func (f *managedFixture) enrol(t *testing.T) (devEnv []string, jwe string) {
	t.Helper()
	tok := strings.TrimSpace(mustTether(t, f.adminEnv, "", "admin", "token", "create"))
	devEnv = []string{"TETHER_DEVICE_DIR=" + t.TempDir()}
	mustTether(t, devEnv, tok, "enroll", "--server", "https://"+f.addr, "--token-file", "-", "--key-store", "file")
	return devEnv, mustTether(t, devEnv, "disk key", "encrypt", "managed", "{}")
}

// start (re)starts the server on the fixture's data directory and address.
func (f *managedFixture) start(t *testing.T) {
	t.Helper()
	f.srv = testenv.StartServer(t, f.data, "--managed-listen", f.addr, "--curve", "P-256")
}

// stop stops the server gracefully.
func (f *managedFixture) stop() {
	f.srv.Cmd.Process.Signal(syscall.SIGTERM)
	f.srv.Cmd.Wait()
}

// mustDecrypt checks that the device still decrypts its JWE.
func (f *managedFixture) mustDecrypt(t *testing.T, when string) {
	t.Helper()
	if got := mustTether(t, f.devEnv, f.jwe, "decrypt"); got != "disk key" {
		t.Fatalf("decrypt %s gave %q", when, got)
	}
}

// serverMustNotStart runs tether server on data with extra environment and
// returns its exit code and output. A server still running after 30 s
// fails the test.
func serverMustNotStart(t *testing.T, data string, env []string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.TetherBin(t), "server", "--listen", testenv.FreePort(t), "--data", data,
		"--managed-listen", testenv.FreePort(t))
	cmd.Env = append(cmd.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the server started:\n%s", out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return code, string(out)
}
