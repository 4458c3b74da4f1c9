package layers

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	// Every library package of the module, for TestInitLeavesStdin: a
	// program that imports any of them must find its stdin untouched
	// when main starts. TestInitImportsAll keeps this list whole.
	_ "github.com/tether-nbde/tether/audit"
	_ "github.com/tether-nbde/tether/boot"
	_ "github.com/tether-nbde/tether/internal/atomicfile"
	_ "github.com/tether-nbde/tether/internal/cli"
	_ "github.com/tether-nbde/tether/internal/command"
	_ "github.com/tether-nbde/tether/internal/docgen"
	_ "github.com/tether-nbde/tether/internal/servercli"
	_ "github.com/tether-nbde/tether/internal/tpm"
	_ "github.com/tether-nbde/tether/internal/tpm/eventlog"
	_ "github.com/tether-nbde/tether/internal/tpm/eventlog/eventlogtest"
	_ "github.com/tether-nbde/tether/internal/tpm/tpmtest"
	_ "github.com/tether-nbde/tether/internal/version"
	_ "github.com/tether-nbde/tether/jose"
	_ "github.com/tether-nbde/tether/luks"
	_ "github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/https"
	_ "github.com/tether-nbde/tether/pin/managed"
	_ "github.com/tether-nbde/tether/pin/smb"
	_ "github.com/tether-nbde/tether/pin/smb/share"
	_ "github.com/tether-nbde/tether/pin/sss"
	_ "github.com/tether-nbde/tether/pin/tang"
	_ "github.com/tether-nbde/tether/pin/tpm2"
	_ "github.com/tether-nbde/tether/policy"
	_ "github.com/tether-nbde/tether/server"
	_ "github.com/tether-nbde/tether/server/admin"
	_ "github.com/tether-nbde/tether/server/connlimit"
	_ "github.com/tether-nbde/tether/server/dashboard"
	_ "github.com/tether-nbde/tether/server/managed"
	_ "github.com/tether-nbde/tether/server/servertest"
	_ "github.com/tether-nbde/tether/server/tangport"
	_ "github.com/tether-nbde/tether/store"
	_ "github.com/tether-nbde/tether/store/pgtest"
	_ "github.com/tether-nbde/tether/tang"
)

// childEnv makes the test binary, run by TestInitLeavesStdin, report what
// its main reads from stdin instead of running the tests.
const childEnv = "TETHER_LAYERS_INIT_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(data)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestInitLeavesStdin: no library package reads stdin (or acts on the
// command line) during its init. A package whose init took the JWE from
// stdin when os.Args[1] was "decrypt" (internal/earlydial, issue 19)
// left any program importing the public tang package an empty stdin.
func TestInitLeavesStdin(t *testing.T) {
	input := []byte("eyJhbGciOiJFQ0RILUVTIn0..iv.ct.tag\n")
	for _, args := range [][]string{{"decrypt"}, {"decrypt", "--timeout", "5s"}, {"encrypt", "tang", "{}"}} {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), childEnv+"=1")
		cmd.Stdin = bytes.NewReader(input)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr.Bytes())
		}
		if !bytes.Equal(out, input) {
			t.Errorf("with arguments %q, main read %q from stdin, want %q: a package's init read it", args, out, input)
		}
	}
}

// TestInitImportsAll keeps TestInitLeavesStdin's imports whole: every
// package of the module that is not a command or a test harness, imported
// here or by a package imported here.
func TestInitImportsAll(t *testing.T) {
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	list := func(args ...string) map[string]bool {
		t.Helper()
		cmd := exec.Command(goCmd, append([]string{"list", "-f", "{{if ne .Name \"main\"}}{{.ImportPath}}{{end}}"}, args...)...)
		cmd.Dir = filepath.Join("..", "..")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %v: %v", args, err)
		}
		m := map[string]bool{}
		for _, p := range strings.Fields(string(out)) {
			m[p] = true
		}
		return m
	}
	deps := list("-deps", "-test", "./test/layers")
	for p := range list("./...") {
		rel := strings.TrimPrefix(p, module)
		if isUnranked(rel) || rel == "internal/testenv" {
			continue
		}
		if !deps[p] {
			t.Errorf("test/layers does not import %s: add it to init_test.go's imports", rel)
		}
	}
}
