package cli_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/cli"
	"github.com/tether-nbde/tether/internal/servercli"
)

// tetherServer is the CLI with the server's commands, as in tether-server;
// forward_test.go runs the two binaries.
var tetherServer = cli.Binary{Name: "tether-server", Extra: servercli.Commands()}

// runCLI runs tether's CLI in-process.
func runCLI(stdin string, args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	env := &cli.Env{Stdin: strings.NewReader(stdin), Stdout: &o, Stderr: &e, Getenv: func(string) string { return "" }}
	code = tetherServer.Run(args, env)
	return o.String(), e.String(), code
}

// The commands of the foundation: each has a manual.
var manuals = map[string]string{
	"server":             "Usage: tether server ",
	"server keys list":   "Usage: tether server keys list ",
	"server keys rotate": "Usage: tether server keys rotate ",
	"server keys import": "Usage: tether server keys import ",
	"encrypt":            "Usage: tether encrypt ",
	"decrypt":            "Usage: tether decrypt ",
	"version":            "Usage: tether version",
	"adv":                "Usage: tether adv ",
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		stdout, stderr, code := runCLI("", args...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "Commands:") {
			t.Errorf("tether %s: exit %d, stderr %q", args[0], code, stderr)
		}
		for name := range manuals {
			if !strings.Contains(stdout, "\n  "+name+" ") {
				t.Errorf("tether %s does not list %q", args[0], name)
			}
		}
	}
	for name, head := range manuals {
		words := strings.Fields(name)
		for _, args := range [][]string{append([]string{"help"}, words...), append(words, "--help"), append(words, "-h")} {
			stdout, stderr, code := runCLI("", args...)
			if code != 0 || stderr != "" || !strings.HasPrefix(stdout, head) {
				t.Errorf("tether %s: exit %d, stderr %q, manual starts %.40q", strings.Join(args, " "), code, stderr, stdout)
			}
		}
	}
	// Manuals are manuals: options with defaults and an example.
	for _, name := range []string{"server", "encrypt", "decrypt"} {
		stdout, _, _ := runCLI("", "help", name)
		for _, want := range []string{"Options:", "--timeout", "$ tether"} {
			if name == "server" && want == "--timeout" {
				want = "--listen"
			}
			if !strings.Contains(stdout, want) {
				t.Errorf("manual of %s lacks %q", name, want)
			}
		}
	}
}

// Wrong use exits 2 with an error and a hint, nothing on stdout.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the error line
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"encrypt"}, "want PIN and CONFIG"},
		{[]string{"encrypt", "tang"}, "want PIN and CONFIG"},
		{[]string{"encrypt", "tang", "{}", "extra"}, "want PIN and CONFIG"},
		{[]string{"encrypt", "--bogus", "tang", "{}"}, "bogus"},
		{[]string{"encrypt", "--timeout", "soon", "tang", "{}"}, "timeout"},
		{[]string{"decrypt", "extra"}, "no arguments"},
		{[]string{"server", "extra"}, `unexpected argument "extra"`},
		{[]string{"server", "--curve", "P-192"}, "P-192"},
		{[]string{"server", "--tls-cert", "c.pem"}, "--tls-key"},
		{[]string{"server", "--log-level", "loud"}, "log-level"},
		{[]string{"server", "keys", "rotate", "--curve", "X"}, "curve"},
		{[]string{"server", "keys", "import"}, "tangd key directory"},
		{[]string{"server", "keys", "list", "extra"}, "unexpected argument"},
	}
	for _, tc := range tests {
		stdout, stderr, code := runCLI("", tc.args...)
		name := strings.Join(tc.args, " ")
		if code != 2 {
			t.Errorf("tether %s: exit %d, want 2", name, code)
		}
		if stdout != "" {
			t.Errorf("tether %s: stdout %q", name, stdout)
		}
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "tether: error: ") || !strings.HasPrefix(lines[1], "tether: hint: ") {
			t.Errorf("tether %s: want an error and a hint line, got:\n%s", name, stderr)
			continue
		}
		if !strings.Contains(lines[0], tc.want) {
			t.Errorf("tether %s: error %q does not mention %q", name, lines[0], tc.want)
		}
	}
	// No arguments: the overview, and exit 2.
	if stdout, _, code := runCLI(""); code != 2 || !strings.Contains(stdout, "Commands:") {
		t.Errorf("tether: exit %d", code)
	}
	// A group alone lists its subcommands.
	_, stderr, code := runCLI("", "server", "keys")
	if code != 2 || !strings.Contains(stderr, "server keys rotate") {
		t.Errorf("tether server keys: exit %d\n%s", code, stderr)
	}
}

// Failures that are not usage errors exit 1.
func TestFailuresExit1(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"server", "keys", "list", "--data", dir + "/none"},
		{"server", "keys", "rotate", "--data", dir + "/none"},
		{"server", "keys", "import", "--data", dir, dir + "/none"},
		{"server", "--listen", "256.0.0.1:1", "--data", dir},
		{"encrypt", "tang", "{not json"},
		{"decrypt"},
	} {
		stdout, stderr, code := runCLI("", args...)
		if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "tether: error: ") {
			t.Errorf("tether %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

// keys list, rotate and import through the CLI, on a data directory.
func TestKeysCommands(t *testing.T) {
	data := t.TempDir()
	stdout, stderr, code := runCLI("", "server", "keys", "rotate", "--data", data)
	if code != 1 {
		t.Fatalf("rotate before any key: exit %d (%s)", code, stderr)
	}
	// Import a directory made by a tether server (here: by rotate on another dir).
	src := t.TempDir()
	if err := mkKeys(src); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runCLI("", "server", "keys", "import", "--data", data, src+"/tang")
	if code != 0 || !strings.Contains(stderr, "2 keys imported") {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
	stdout, _, code = runCLI("", "server", "keys", "list", "--data", data)
	if code != 0 || strings.Count(stdout, "advertised") != 2 || !strings.Contains(stdout, "THUMBPRINT") {
		t.Fatalf("list:\n%s", stdout)
	}
	_, stderr, code = runCLI("", "server", "keys", "rotate", "--data", data, "--curve", "P-256")
	if code != 0 || !strings.Contains(stderr, "2 old keys retired") {
		t.Fatalf("rotate: exit %d\n%s", code, stderr)
	}
	stdout, _, _ = runCLI("", "server", "keys", "list", "--data", data)
	if strings.Count(stdout, "advertised") != 2 || strings.Contains(stdout, "rotated") || !strings.Contains(stdout, "P-256") {
		t.Fatalf("list after rotate:\n%s", stdout)
	}
	stdout, _, _ = runCLI("", "server", "keys", "list", "--all", "--data", data)
	if strings.Count(stdout, "rotated") != 2 {
		t.Fatalf("list --all after rotate:\n%s", stdout)
	}
}
