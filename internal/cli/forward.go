package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
)

// The key server and its administration live in a second binary,
// tether-server (cmd/tether-server: every tether command plus these). tether
// itself is what runs at boot, from an initramfs, on every unlock: without
// the server's SQL engines, dashboard and store it is less than half the
// size and starts about 1.5 ms sooner (docs/BENCHMARKS.md). "tether server
// ..." and "tether admin ..." still work: tether runs tether-server with
// the same arguments.

// serverGroups are the command groups of tether-server, with the line
// "tether help" shows for each when they are not linked in.
var serverGroups = map[string]string{
	"server": "the key server and its Tang keys (tether-server)",
	"admin":  "administer a managed key server: devices, tokens, accounts (tether-server)",
}

// ServerBinary is the name of the binary with the server's commands.
const ServerBinary = "tether-server"

// forwardedEnv marks a process that tether started for a server command, so
// that a tether-server which is really tether (a copy, a link) fails instead
// of starting itself over and over.
const forwardedEnv = "TETHER_FORWARDED"

// forwarded reports whether args name a command of tether-server that is
// not linked into this binary.
func forwarded(args []string) bool {
	if len(args) == 0 {
		return false
	}
	_, ok := serverGroups[args[0]]
	return ok && find(args) == nil && len(groupOf(args[:1])) == 0
}

// serverBinary finds tether-server: next to this binary, else on PATH.
func serverBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		if self, err = filepath.EvalSymlinks(self); err == nil {
			p := filepath.Join(filepath.Dir(self), ServerBinary)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return exec.LookPath(ServerBinary)
}

// forward runs tether-server with args. In the real process it replaces
// this one (same PID, signals and exit status for a service manager);
// under another Env it runs as a child wired to that Env.
func forward(env *Env, args []string) int {
	bin, err := serverBinary()
	if err == nil && os.Getenv(forwardedEnv) != "" {
		// tether-server handed the command back: it is not tether-server
		// but a copy or link of tether under that name.
		return report(env, &command{name: args[0]}, withHint(
			fmt.Errorf("%s does not have the server's commands (is it a copy of tether?)", bin),
			"build it from ./cmd/%s", ServerBinary))
	}
	if err != nil {
		dir := "the directory of tether"
		if self, err := os.Executable(); err == nil {
			dir = filepath.Dir(self)
		}
		return report(env, &command{name: args[0]}, withHint(
			fmt.Errorf("\"tether %s\" is in the %s binary, which is neither next to tether (%s) nor on PATH", args[0], ServerBinary, dir),
			"install it next to tether: CGO_ENABLED=0 go build -o %s ./cmd/%s", filepath.Join(dir, ServerBinary), ServerBinary))
	}
	environ := append(os.Environ(), forwardedEnv+"=1")
	if env.real {
		err := syscall.Exec(bin, append([]string{bin}, args...), environ)
		return report(env, &command{name: args[0]}, fmt.Errorf("run %s: %w", bin, err))
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = environ
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
	if err := cmd.Start(); err != nil {
		return report(env, &command{name: args[0]}, fmt.Errorf("run %s: %w", bin, err))
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	signal.Stop(sigs)
	close(sigs)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return report(env, &command{name: args[0]}, err)
	}
	return 0
}
