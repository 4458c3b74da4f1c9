// Package cli_test runs tether's command line as a person does: the real
// tether and tether-server binaries, built as they ship, driven by the
// txtar scripts in testdata/ (one file per command family). A script
// checks what a person sees: --help, exit codes, the error and hint
// lines on stderr, and that stdout carries data only. See
// docs/TESTING.md, "CLI scripts".
package cli_test

import (
	"bytes"
	"errors"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/tether-nbde/tether/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the expected files of failing cmp lines in testdata/*.txtar")

func TestMain(m *testing.M) { testenv.Main(m) }

// TestScripts runs every testdata/*.txtar.
func TestScripts(t *testing.T) {
	bin := filepath.Dir(testenv.TetherBin(t))
	closed, down := testenv.ClosedPort(t), testenv.HostDown(t)
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		UpdateScripts:       *update,
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(e *testscript.Env) error {
			// The binaries side by side, as installed: tether finds
			// tether-server next to itself for "tether server" and
			// "tether admin".
			e.Setenv("PATH", bin+string(os.PathListSeparator)+e.Getenv("PATH"))
			e.Setenv("BIN", bin)
			// Nothing from the developer's environment reaches a
			// script: no admin configuration, no proxy.
			e.Setenv("TETHER_ADMIN_CONFIG", "")
			e.Setenv("http_proxy", "")
			e.Setenv("https_proxy", "")
			e.Setenv("HTTP_PROXY", "")
			e.Setenv("HTTPS_PROXY", "")
			// Free loopback ports for servers a script starts.
			for i := 1; i <= 3; i++ {
				port, err := freePort()
				if err != nil {
					return err
				}
				e.Setenv("PORT"+strconv.Itoa(i), port)
			}
			// Where connections are refused, and where they hang.
			e.Setenv("CLOSED", closed)
			e.Setenv("DOWN", down)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":     cmdExits,
			"waittcp":   cmdWaitTCP,
			"waitfile":  cmdWaitFile,
			"capture":   cmdCapture,
			"writefile": cmdWriteFile,
			"perm":      cmdPerm,
		},
	})
}

// cmdExits runs a program like exec and checks its exit status:
//
//	exits N PROGRAM [ARGS...]
//
// (testscript's "! exec" only checks that it failed; a usage error must
// exit 2, a failure 1.) stdout and stderr are kept for the next lines.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("usage: exits N PROGRAM [ARGS...] (no !)")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: exits N PROGRAM [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: %q is not an exit status", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var x *exec.ExitError
	switch {
	case errors.As(err, &x):
		got = x.ExitCode()
	case err != nil:
		ts.Fatalf("exits: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// cmdWaitTCP waits up to 20 s until ADDR accepts connections:
//
//	waittcp ADDR
func cmdWaitTCP(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waittcp ADDR")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", args[0], time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s does not accept connections after 20 s: %v", args[0], err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmdWaitFile waits up to 20 s until FILE exists and is not empty:
//
//	waitfile FILE
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile FILE")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if fi, err := os.Stat(ts.MkAbs(args[0])); err == nil && fi.Size() > 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s did not appear within 20 s", args[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmdCapture sets VAR to the first group of REGEXP in the last command's
// stdout (or in FILE), for a later line to use (a thumbprint, an ID):
//
//	capture VAR REGEXP [FILE]
func cmdCapture(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: capture VAR REGEXP [FILE]")
	}
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	file := "stdout"
	if len(args) == 3 {
		file = args[2]
	}
	m := re.FindStringSubmatch(ts.ReadFile(file))
	if len(m) < 2 {
		ts.Fatalf("capture: %q does not match %s (or has no group)", args[1], file)
	}
	ts.Setenv(args[0], m[1])
}

// cmdWriteFile writes the arguments, joined by spaces and with
// environment variables expanded, to FILE (a config with a port in it):
//
//	writefile FILE WORDS...
func cmdWriteFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: writefile FILE WORDS...")
	}
	var b bytes.Buffer
	b.WriteString(strings.Join(args[1:], " "))
	b.WriteByte('\n')
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b.Bytes(), 0o600))
}

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// freePort returns a loopback port nobody listens on now and that no
// other script of this run was given: scripts run in parallel, and the
// kernel may hand a port closed here to the next caller.
func freePort() (string, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !given[port] {
			given[port] = true
			return strconv.Itoa(port), nil
		}
	}
}

// cmdPerm checks the permission bits of FILE (a secret readable by its
// owner only):
//
//	perm MODE FILE
func cmdPerm(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: perm MODE FILE")
	}
	want, err := strconv.ParseUint(args[0], 8, 32)
	ts.Check(err)
	fi, err := os.Stat(ts.MkAbs(args[1]))
	ts.Check(err)
	if got := uint64(fi.Mode().Perm()); got != want {
		ts.Fatalf("%s has mode %04o, want %04o", args[1], got, want)
	}
}

// TestEveryCommandScripted keeps the scripts whole: every command that
// "tether-server help" lists (tether's and the server's) must have its
// --help run and a usage error checked (exit 2) in some testdata script.
// A new command fails here until its family's script covers it.
func TestEveryCommandScripted(t *testing.T) {
	bin := filepath.Dir(testenv.TetherBin(t))
	out, err := exec.Command(filepath.Join(bin, "tether-server"), "help").Output()
	if err != nil {
		t.Fatalf("tether-server help: %v", err)
	}
	var cmds []string
	inList := false
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case line == "Commands:":
			inList = true
		case inList && strings.HasPrefix(line, "  "):
			f := strings.SplitN(strings.TrimSpace(line), "  ", 2)
			cmds = append(cmds, strings.TrimSpace(f[0]))
		case inList && line == "":
			inList = false
		}
	}
	if len(cmds) < 50 {
		t.Fatalf("tether-server help lists %d commands, expected more than 50: this test checks nothing:\n%s", len(cmds), out)
	}
	scripts, err := filepath.Glob("testdata/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for _, s := range scripts {
		data, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(data)
	}
	for _, c := range cmds {
		q := regexp.QuoteMeta(c)
		help := regexp.MustCompile(`(?m)^exec tether(-server)? ` + q + ` --help$`)
		usage := regexp.MustCompile(`(?m)^exits 2 tether(-server)? ` + q + `( |$)`)
		if !help.Match(all.Bytes()) {
			t.Errorf("no script runs %q (add it to the script of its family in testdata/)", "tether "+c+" --help")
		}
		if !usage.Match(all.Bytes()) {
			t.Errorf("no script checks a usage error of %q with \"exits 2 tether %s ...\"", "tether "+c, c)
		}
	}
	t.Logf("%d commands, each with --help and a usage error in %d scripts", len(cmds), len(scripts))
}
