package cli_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestVersion: "tether --version" and "tether version" say the same, for
// each binary, and a plain build calls itself "devel".
func TestVersion(t *testing.T) {
	bin := testenv.TetherBin(t)
	dir := filepath.Dir(bin)
	for _, prog := range []string{"tether", "tether-server", "tether-smb"} {
		var first string
		for _, arg := range []string{"--version", "version"} {
			o, e, code := testenv.Run(t, nil, filepath.Join(dir, prog), arg)
			if code != 0 || len(e) != 0 {
				t.Fatalf("%s %s: exit %d\n%s", prog, arg, code, e)
			}
			out := string(o)
			if !strings.HasPrefix(out, prog+" devel\n") || !strings.Contains(out, "go:       "+runtime.Version()+" linux/") ||
				!strings.Contains(out, "revision: ") {
				t.Errorf("%s %s:\n%s", prog, arg, out)
			}
			if first != "" && out != first {
				t.Errorf("%s: --version and version differ:\n%s\n%s", prog, first, out)
			}
			first = out
		}
	}
	if _, e, code := testenv.Run(t, nil, bin, "version", "extra"); code != 2 || !strings.Contains(string(e), `unexpected argument "extra"`) {
		t.Errorf("tether version extra: exit %d (want 2)\n%s", code, e)
	}
}

// TestVersionLdflags: the version and commit a package build sets with -X
// are what --version prints.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tether")
	}
	out := filepath.Join(t.TempDir(), "tether")
	const pkg = "github.com/tether-nbde/tether/internal/version"
	cmd := exec.Command("go", "build", "-o", out, "-ldflags",
		"-X "+pkg+".Version=9.8.7~test1 -X "+pkg+".Commit=0123abcd -X "+pkg+".CommitTime=2026-01-02T03:04:05Z", "./cmd/tether")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	o, e, code := testenv.Run(t, nil, out, "--version")
	if code != 0 {
		t.Fatalf("tether --version: exit %d\n%s", code, e)
	}
	for _, want := range []string{"tether 9.8.7~test1\n", "revision: 0123abcd\n", "time:     2026-01-02T03:04:05Z\n"} {
		if !strings.Contains(string(o), want) {
			t.Errorf("tether --version lacks %q:\n%s", want, o)
		}
	}
}
