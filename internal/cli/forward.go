package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/tether-nbde/tether/internal/command"
)

// The key server and its administration live in a second binary,
// tether-server (cmd/tether-server: every tether command plus these). tether
// itself is what runs at boot, from an initramfs, on every unlock: without
// the server's SQL engines, dashboard and store it is less than half the
// size and starts about 1.2 ms sooner (docs/DESIGN.md, "Client latency"). "tether server
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
func forwarded(t *command.Table, args []string) bool {
	if len(args) == 0 {
		return false
	}
	_, ok := serverGroups[args[0]]
	return ok && t.Find(args) == nil && len(t.Group(args[:1])) == 0
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

// forward replaces this process with tether-server running args (same PID,
// stdio, signals and exit status, as a service manager expects). It only
// returns on failure. (Run reaches it only in the tether binary, where the
// Env is the process's own: where the server's commands are linked in,
// nothing is forwarded.)
func forward(env *Env, args []string) int {
	bin, err := serverBinary()
	if err == nil && os.Getenv(forwardedEnv) != "" {
		// tether-server handed the command back: it is not tether-server
		// but a copy or link of tether under that name.
		return command.Report(env, args[0], command.WithHint(
			fmt.Errorf("%s does not have the server's commands (is it a copy of tether?)", bin),
			"build it from ./cmd/%s", ServerBinary))
	}
	if err != nil {
		dir := "the directory of tether"
		if self, err := os.Executable(); err == nil {
			dir = filepath.Dir(self)
		}
		return command.Report(env, args[0], command.WithHint(
			fmt.Errorf("\"tether %s\" is in the %s binary, which is neither next to tether (%s) nor on PATH", args[0], ServerBinary, dir),
			"install it next to tether: CGO_ENABLED=0 go build -o %s ./cmd/%s", filepath.Join(dir, ServerBinary), ServerBinary))
	}
	err = syscall.Exec(bin, append([]string{bin}, args...), append(os.Environ(), forwardedEnv+"=1"))
	return command.Report(env, args[0], fmt.Errorf("run %s: %w", bin, err))
}
