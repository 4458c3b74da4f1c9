// Package cli is tether's command line: the commands, their flags, and the
// help text that is their manual. Each command lives in its own file and
// registers itself; Run dispatches on the longest matching command name.
//
// Conventions: stdout carries data only; diagnostics go to stderr as
// "tether: error: ..." and "tether: hint: ..."; exit status 1 means the
// command failed, 2 that it was used wrongly.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/tether-nbde/tether/internal/version"
)

// Env is what a command may touch of the outside world.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// StdEnv is the process's real environment.
func StdEnv() *Env {
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// command is one tether subcommand.
type command struct {
	name    string // words after "tether", e.g. "server keys rotate"
	summary string // one line for the command list
	usage   string // the manual: synopsis, description, options, examples
	// flags declares the command's flags on fs; the returned function runs
	// the command with the remaining positional arguments.
	flags func(fs *flag.FlagSet) func(env *Env, args []string) error
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("cli: duplicate command " + c.name)
	}
	commands[c.name] = c
}

// Command is a command registered from another package: the key server's
// commands (internal/servercli), which are linked only into the
// tether-server binary so that tether itself — the boot-time client —
// stays small and starts fast (see forward.go).
type Command struct {
	Name, Summary, Usage string
	Flags                func(fs *flag.FlagSet) func(env *Env, args []string) error
}

// Register adds c to the commands Run knows.
func Register(c Command) {
	register(&command{name: c.Name, summary: c.Summary, usage: c.Usage, flags: c.Flags})
}

// Usagef is an error for wrong use of a command (exit status 2).
func Usagef(format string, a ...any) error { return usagef(format, a...) }

// WithHint attaches advice for the person to err.
func WithHint(err error, format string, a ...any) error { return withHint(err, format, a...) }

// usageError marks an error as wrong use of the command (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// silentExit is an exit status that is an answer, not an error (a test
// such as "needs-network" says no): nothing is printed.
type silentExit int

func (e silentExit) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// hintError carries advice for the person after the error itself.
type hintError struct {
	err  error
	hint string
}

func (e hintError) Error() string { return e.err.Error() }
func (e hintError) Unwrap() error { return e.err }

// exitError makes a command exit with its own status instead of 1, for
// a failure a supervisor must tell apart (systemd's
// RestartPreventExitStatus=).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// withHint attaches a hint to err.
func withHint(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return hintError{err: err, hint: fmt.Sprintf(format, a...)}
}

// Run runs tether with args (without the program name) and returns the
// exit status.
func Run(args []string, env *Env) int {
	if len(args) > 0 && args[0] == "--version" {
		args = append([]string{"version"}, args[1:]...)
	}
	if forwarded(args) {
		return forward(env, args)
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 && forwarded(args[1:]) {
			return forward(env, append([]string{"help"}, args[1:]...))
		}
		if len(args) > 1 {
			if c := find(args[1:]); c != nil && len(strings.Fields(c.name)) == len(args)-1 {
				fmt.Fprint(env.Stdout, c.usage)
				return 0
			}
			if group := groupOf(args[1:]); len(group) > 0 {
				printGroup(env.Stdout, args[1:], group)
				return 0
			}
			if c := find(args[1:]); c != nil {
				fmt.Fprint(env.Stdout, c.usage)
				return 0
			}
			// No such command: the usage error that running it gives
			// (nothing above matched, so nothing runs).
			return Run(args[1:], env)
		}
		printOverview(env.Stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c := find(args)
	// A group name alone ("tether server keys") lists its commands, even
	// when a shorter prefix ("server") is a command itself.
	matched := 0
	if c != nil {
		matched = len(strings.Fields(c.name))
	}
	for n := min(len(args), 3); n > matched; n-- {
		if group := groupOf(args[:n]); len(group) > 0 {
			if len(args) > n && (args[n] == "-h" || args[n] == "--help" || args[n] == "help") {
				// "tether admin --help": the group's commands are its manual.
				printGroup(env.Stdout, args[:n], group)
				return 0
			}
			fmt.Fprintf(env.Stderr, "tether: error: %q needs a subcommand:\n", strings.Join(args[:n], " "))
			for _, g := range group {
				fmt.Fprintf(env.Stderr, "  tether %-22s %s\n", g.name, g.summary)
			}
			return 2
		}
	}
	if c == nil {
		fmt.Fprintf(env.Stderr, "tether: error: unknown command %q\ntether: hint: run \"tether help\" for the list of commands\n", args[0])
		return 2
	}
	rest := args[len(strings.Fields(c.name)):]
	fs := flag.NewFlagSet("tether "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	run := c.flags(fs)
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.Stdout, c.usage)
		return 0
	}
	if err == nil {
		err = run(env, pos)
	}
	return report(env, c, err)
}

func report(env *Env, c *command, err error) int {
	if err == nil {
		return 0
	}
	var se silentExit
	if errors.As(err, &se) {
		return int(se)
	}
	fmt.Fprintf(env.Stderr, "tether: error: %v\n", err)
	var h hintError
	if errors.As(err, &h) {
		fmt.Fprintf(env.Stderr, "tether: hint: %s\n", h.hint)
	}
	var u usageError
	if errors.As(err, &u) {
		fmt.Fprintf(env.Stderr, "tether: hint: run \"tether %s --help\" for usage\n", c.name)
		return 2
	}
	var x exitError
	if errors.As(err, &x) {
		return x.code
	}
	return 1
}

// printGroup lists the commands of a group, as its manual.
func printGroup(w io.Writer, words []string, group []*command) {
	name := strings.Join(words, " ")
	fmt.Fprintf(w, "Usage: tether %s COMMAND [OPTIONS] [ARGS]\n\nCommands:\n", name)
	for _, g := range group {
		fmt.Fprintf(w, "  tether %-28s %s\n", g.name, g.summary)
	}
	fmt.Fprintf(w, "\nRun \"tether help %s COMMAND\" or \"tether %s COMMAND --help\" for a command's manual.\n", name, name)
}

// find returns the command whose name is the longest prefix of args.
func find(args []string) *command {
	for n := min(len(args), 3); n > 0; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			return c
		}
	}
	return nil
}

func groupOf(args []string) []*command {
	prefix := strings.Join(args, " ") + " "
	var out []*command
	for name, c := range commands {
		if strings.HasPrefix(name, prefix) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// parseInterspersed parses flags wherever they appear among the positional
// arguments (clevis puts -y after the config). Everything after a "--" is
// positional, flags included (for "tether luks run ... -- CMD -x").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, tail...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

const overview = `tether — network-bound disk encryption

Secrets and disks that unlock by themselves where they belong (on their own
network, on their own hardware) and stay sealed everywhere else. Wire
compatible with Tang servers and Clevis clients.

Usage:
  tether COMMAND [OPTIONS] [ARGS]

Commands:
`

func printOverview(w io.Writer) {
	fmt.Fprint(w, overview)
	lines := map[string]string{}
	for n, c := range commands {
		lines[n] = c.summary
	}
	for g, summary := range serverGroups {
		if forwarded([]string{g}) {
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

// Program is the binary's name in "--version": cmd/tether-server sets it.
var Program = "tether"

const versionUsage = `Usage: tether version
       tether --version

Print the version this binary was packaged as ("devel" for a plain go
build) and how it was built: the Go toolchain and platform, the git
commit and its time. The first line is "tether VERSION", for scripts.
tether-server and tether-smb take --version too.

Example:
  $ tether --version
`

func init() {
	register(&command{
		name:    "version",
		summary: "print tether's version and build",
		usage:   versionUsage,
		flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			return func(env *Env, args []string) error {
				if len(args) > 0 {
					return usagef("unexpected argument %q", args[0])
				}
				fmt.Fprint(env.Stdout, version.Get().String(Program))
				return nil
			}
		},
	})
}
