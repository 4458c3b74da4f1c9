// Package cli is tether's command line: the commands, their flags, and the
// help text that is their manual, each command a function beside its
// manual (commands.go lists them). The framework they run in — lookup,
// flag parsing, error and hint printing, exit statuses — is
// internal/command; this package adds what is tether's own: the
// overview, "--version", and handing the key server's commands to
// tether-server (forward.go).
//
// Conventions: stdout carries data only; diagnostics go to stderr as
// "tether: error: ..." and "tether: hint: ..."; exit status 1 means the
// command failed, 2 that it was used wrongly.
package cli

import (
	"flag"
	"fmt"
	"io"
	"sort"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/internal/version"
)

// Env is what a command may touch of the outside world.
type Env = command.Env

// StdEnv is the process's real environment.
func StdEnv() *Env { return command.StdEnv() }

// Binary is a program made of tether's commands: tether itself, or
// tether-server, which adds the key server's (internal/servercli).
type Binary struct {
	Name  string             // the program's name, as "--version" prints it
	Extra []*command.Command // commands beyond tether's own
}

// Run runs tether with args (without the program name) and returns the
// exit status: the tether binary, tether's commands and no others.
func Run(args []string, env *Env) int { return Binary{Name: "tether"}.Run(args, env) }

// table is b's command table, made anew for each run: building it is
// cheap, and nothing happens at package initialisation.
func (b Binary) table() *command.Table {
	return command.NewTable(append(commands(b.Name), b.Extra...))
}

// Commands returns every command of b as the manuals describe it, sorted
// by name (for internal/docgen).
func (b Binary) Commands() []command.Doc { return b.table().Docs() }

// Run runs b with args (without the program name) and returns the exit
// status.
func (b Binary) Run(args []string, env *Env) int {
	t := b.table()
	if len(args) > 0 && args[0] == "--version" {
		args = append([]string{"version"}, args[1:]...)
	}
	if forwarded(t, args) {
		return forward(env, args)
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 && forwarded(t, args[1:]) {
			return forward(env, append([]string{"help"}, args[1:]...))
		}
		if len(args) > 1 {
			if t.Help(env.Stdout, args[1:]) {
				return 0
			}
			// No such command: the usage error that running it gives
			// (nothing matched, so nothing runs).
			return t.Run(env, args[1:])
		}
		printOverview(env.Stdout, t)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	return t.Run(env, args)
}

const overview = `tether — network-bound disk encryption

Secrets and disks that unlock by themselves where they belong (on their own
network, on their own hardware) and stay sealed everywhere else. Wire
compatible with Tang servers and Clevis clients.

Usage:
  tether COMMAND [OPTIONS] [ARGS]

Commands:
`

func printOverview(w io.Writer, t *command.Table) {
	fmt.Fprint(w, overview)
	lines := map[string]string{}
	for _, c := range t.All() {
		lines[c.Name] = c.Summary
	}
	for g, summary := range serverGroups {
		if forwarded(t, []string{g}) {
			lines[g+" ..."] = summary
		}
	}
	names := make([]string, 0, len(lines))
	for n := range lines {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-24s %s\n", n, lines[n])
	}
	fmt.Fprint(w, "\nRun \"tether help COMMAND\" or \"tether COMMAND --help\" for a command's manual.\n")
}

const versionUsage = `Usage: tether version
       tether --version

Print the version this binary was packaged as ("devel" for a plain go
build) and how it was built: the Go toolchain and platform, the git
commit and its time. The first line is "tether VERSION", for scripts.
tether-server and tether-smb take --version too.

Example:
  $ tether --version
`

// versionCmd is "tether version"; program is the binary's name, as
// "--version" prints it.
func versionCmd(program string) *command.Command {
	return &command.Command{
		Name:    "version",
		Summary: "print tether's version and build",
		Usage:   versionUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			return func(env *Env, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				fmt.Fprint(env.Stdout, version.Get().String(program))
				return nil
			}
		},
	}
}
