// Package command is the command framework of the tether binaries (tether
// and tether-server): a command is a name, a one-line summary, its manual
// and its flags; a Table finds the command an argument list names, prints
// manuals and group listings, parses flags wherever they stand, runs the
// command and turns its error into lines on stderr and an exit status.
// The commands themselves live in internal/cli and internal/servercli.
//
// Conventions: stdout carries data only; diagnostics go to stderr as
// "tether: error: ..." and "tether: hint: ..."; exit status 1 means the
// command failed, 2 that it was used wrongly. Both binaries speak as
// "tether": tether-server is tether with more commands.
package command

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
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

// Command is one subcommand of tether.
type Command struct {
	Name    string // words after "tether", e.g. "server keys rotate"
	Summary string // one line for the command list
	Usage   string // the manual: synopsis, description, options, examples
	// Flags declares the command's flags on fs; the returned function runs
	// the command with the remaining positional arguments.
	Flags func(fs *flag.FlagSet) func(env *Env, args []string) error
}

// Table is the set of commands a binary has.
type Table struct {
	byName map[string]*Command
}

// NewTable makes the table of cmds; two commands of one name are a
// programming error.
func NewTable(cmds []*Command) *Table {
	t := &Table{byName: make(map[string]*Command, len(cmds))}
	for _, c := range cmds {
		if _, dup := t.byName[c.Name]; dup {
			panic("command: duplicate command " + c.Name)
		}
		t.byName[c.Name] = c
	}
	return t
}

// All returns every command, sorted by name.
func (t *Table) All() []*Command {
	out := make([]*Command, 0, len(t.byName))
	for _, c := range t.byName {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Find returns the command whose name is the longest prefix of args.
func (t *Table) Find(args []string) *Command {
	for n := min(len(args), 3); n > 0; n-- {
		if c, ok := t.byName[strings.Join(args[:n], " ")]; ok {
			return c
		}
	}
	return nil
}

// Group returns the commands whose names start with words, sorted by name.
func (t *Table) Group(words []string) []*Command {
	prefix := strings.Join(words, " ") + " "
	var out []*Command
	for name, c := range t.byName {
		if strings.HasPrefix(name, prefix) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Help prints the manual words name, "tether help WORDS" style: a
// command's usage, or the list of a group's commands. It reports false
// when words name neither.
func (t *Table) Help(w io.Writer, words []string) bool {
	if c := t.Find(words); c != nil && len(strings.Fields(c.Name)) == len(words) {
		fmt.Fprint(w, c.Usage)
		return true
	}
	if group := t.Group(words); len(group) > 0 {
		printGroup(w, words, group)
		return true
	}
	if c := t.Find(words); c != nil {
		fmt.Fprint(w, c.Usage)
		return true
	}
	return false
}

// Run runs the command args name (args without the program name) and
// returns the exit status. A group name alone lists the group's commands
// on stderr (status 2), or on stdout with --help.
func (t *Table) Run(env *Env, args []string) int {
	c := t.Find(args)
	// A group name alone ("tether server keys") lists its commands, even
	// when a shorter prefix ("server") is a command itself.
	matched := 0
	if c != nil {
		matched = len(strings.Fields(c.Name))
	}
	for n := min(len(args), 3); n > matched; n-- {
		if group := t.Group(args[:n]); len(group) > 0 {
			if len(args) > n && (args[n] == "-h" || args[n] == "--help" || args[n] == "help") {
				// "tether admin --help": the group's commands are its manual.
				printGroup(env.Stdout, args[:n], group)
				return 0
			}
			fmt.Fprintf(env.Stderr, "tether: error: %q needs a subcommand:\n", strings.Join(args[:n], " "))
			for _, g := range group {
				fmt.Fprintf(env.Stderr, "  tether %-22s %s\n", g.Name, g.Summary)
			}
			return 2
		}
	}
	if c == nil {
		fmt.Fprintf(env.Stderr, "tether: error: unknown command %q\ntether: hint: run \"tether help\" for the list of commands\n", args[0])
		return 2
	}
	rest := args[len(strings.Fields(c.Name)):]
	fs := flag.NewFlagSet("tether "+c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	run := c.Flags(fs)
	pos, err := ParseFlags(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.Stdout, c.Usage)
		return 0
	}
	if err == nil {
		err = run(env, pos)
	}
	return Report(env, c.Name, err)
}

// printGroup lists the commands of a group, as its manual.
func printGroup(w io.Writer, words []string, group []*Command) {
	name := strings.Join(words, " ")
	fmt.Fprintf(w, "Usage: tether %s COMMAND [OPTIONS] [ARGS]\n\nCommands:\n", name)
	for _, g := range group {
		fmt.Fprintf(w, "  tether %-28s %s\n", g.Name, g.Summary)
	}
	fmt.Fprintf(w, "\nRun \"tether help %s COMMAND\" or \"tether %s COMMAND --help\" for a command's manual.\n", name, name)
}

// ParseFlags parses flags wherever they appear among the positional
// arguments (clevis puts -y after the config). Everything after a "--" is
// positional, flags included (for "tether luks run ... -- CMD -x").
func ParseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
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
