package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestForwardToServerBinary runs the real binaries: tether hands "server"
// and "admin" to the tether-server next to it, with the arguments, stdin,
// output and exit status intact, and says what to do when it is missing.
func TestForwardToServerBinary(t *testing.T) {
	bin := testenv.TetherBin(t)
	data := t.TempDir()
	run := func(bin string, args ...string) (string, string, int) {
		t.Helper()
		o, e, code := testenv.Run(t, nil, bin, args...)
		return string(o), string(e), code
	}
	if err := os.Mkdir(filepath.Join(data, "tang"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, e, code := run(bin, "server", "keys", "rotate", "--data", data); code != 0 {
		t.Fatalf("server keys rotate through tether: exit %d\n%s", code, e)
	}
	if o, e, code := run(bin, "server", "keys", "list", "--data", data); code != 0 || strings.Count(o, "\n") < 2 {
		t.Fatalf("server keys list through tether: exit %d\n%s%s", code, o, e)
	}
	if _, e, code := run(bin, "server", "--log-level", "loud"); code != 2 || !strings.Contains(e, "log-level") {
		t.Fatalf("a usage error through tether: exit %d (want 2)\n%s", code, e)
	}
	if o, _, code := run(bin, "help", "server"); code != 0 || !strings.HasPrefix(o, "Usage: tether server ") {
		t.Fatalf("tether help server: exit %d\n%s", code, o)
	}
	if o, _, _ := run(bin, "help"); !strings.Contains(o, "server ...") || !strings.Contains(o, "admin ...") {
		t.Fatalf("tether help does not list the server's commands:\n%s", o)
	}

	// tether alone: a clear error and how to fix it.
	dir := t.TempDir()
	lone := filepath.Join(dir, "tether")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lone, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(lone, "admin", "device", "list")
	cmd.Env = []string{"PATH=" + dir}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
		!strings.Contains(string(out), "tether-server binary") || !strings.Contains(string(out), "go build -o "+filepath.Join(dir, "tether-server")) {
		t.Fatalf("tether admin without tether-server: %v\n%s", err, out)
	}
	// A tether-server that is really tether (a copy or a link) fails once,
	// rather than running itself over and over.
	if err := os.Symlink(lone, filepath.Join(dir, "tether-server")); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(lone, "server", "keys", "list")
	cmd.Env = []string{"PATH=" + dir}
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "does not have the server's commands") {
		t.Fatalf("tether with tether-server linked to itself: %v\n%s", err, out)
	}
	// Its own commands do not need tether-server.
	if _, e, code := run(lone, "version"); code != 0 {
		t.Fatalf("tether version alone: exit %d\n%s", code, e)
	}
}
