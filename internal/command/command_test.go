package command_test

import (
	"bytes"
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/command"
)

// testTable has a command that is also a group's prefix ("server" and
// "server keys ..."), a group without a command of its name ("luks"), and
// records what its commands were run with.
func testTable(ran *[]string) *command.Table {
	cmd := func(name string, run func(env *command.Env, args []string) error) *command.Command {
		return &command.Command{
			Name: name, Summary: "summary of " + name, Usage: "Usage: tether " + name + "\n",
			Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
				y := fs.Bool("y", false, "")
				d := fs.String("d", "", "")
				return func(env *command.Env, args []string) error {
					*ran = append(*ran, name+" y="+map[bool]string{true: "1", false: "0"}[*y]+" d="+*d+" "+strings.Join(args, ","))
					if run != nil {
						return run(env, args)
					}
					return nil
				}
			},
		}
	}
	return command.NewTable([]*command.Command{
		cmd("server", nil),
		cmd("server keys list", nil),
		cmd("server keys rotate", nil),
		cmd("luks bind", nil),
		cmd("luks list", nil),
		cmd("fail", func(env *command.Env, args []string) error {
			switch args[0] {
			case "usage":
				return command.Usagef("want %s", "more")
			case "hint":
				return command.WithHint(errors.New("it broke"), "do %s", "this")
			case "exit":
				return command.ExitError{Code: 75, Err: command.WithHint(errors.New("gone"), "enrol again")}
			case "silent":
				return command.SilentExit(1)
			}
			return errors.New("plain")
		}),
	})
}

func run(t *testing.T, args ...string) (stdout, stderr string, code int, ran []string) {
	t.Helper()
	var o, e bytes.Buffer
	env := &command.Env{Stdin: strings.NewReader(""), Stdout: &o, Stderr: &e, Getenv: func(string) string { return "" }}
	code = testTable(&ran).Run(env, args)
	return o.String(), e.String(), code, ran
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		stdout, stderr string
		code           int
		ran            []string
	}{
		// Flags wherever they stand, and everything after "--" positional.
		{args: []string{"luks", "bind", "tang", "-d", "x.img", "cfg", "-y", "--", "-d", "z"}, ran: []string{"luks bind y=1 d=x.img tang,cfg,-d,z"}},
		// The longest name wins.
		{args: []string{"server", "keys", "list"}, ran: []string{"server keys list y=0 d= "}},
		{args: []string{"server", "-d", "dir"}, ran: []string{"server y=0 d=dir "}},
		// A group name alone lists its commands, even where a shorter
		// prefix is a command: "server keys" must not run "server".
		{args: []string{"server", "keys"}, code: 2, stderr: "tether: error: \"server keys\" needs a subcommand:\n" +
			"  tether server keys list       summary of server keys list\n" +
			"  tether server keys rotate     summary of server keys rotate\n"},
		{args: []string{"luks", "--help"}, stdout: "Usage: tether luks COMMAND [OPTIONS] [ARGS]\n\nCommands:\n" +
			"  tether luks bind                    summary of luks bind\n" +
			"  tether luks list                    summary of luks list\n" +
			"\nRun \"tether help luks COMMAND\" or \"tether luks COMMAND --help\" for a command's manual.\n"},
		{args: []string{"luks", "bind", "-h"}, stdout: "Usage: tether luks bind\n"},
		{args: []string{"luks", "bind", "x", "--help"}, stdout: "Usage: tether luks bind\n"},
		{args: []string{"nosuch"}, code: 2, stderr: "tether: error: unknown command \"nosuch\"\ntether: hint: run \"tether help\" for the list of commands\n"},
		{args: []string{"luks", "bind", "--bogus"}, code: 2, stderr: "tether: error: flag provided but not defined: -bogus\ntether: hint: run \"tether luks bind --help\" for usage\n"},
		// Errors: status 1, 2 for wrong use, the command's own, or silence.
		{args: []string{"fail", "usage"}, code: 2, ran: []string{"fail y=0 d= usage"}, stderr: "tether: error: want more\ntether: hint: run \"tether fail --help\" for usage\n"},
		{args: []string{"fail", "hint"}, code: 1, ran: []string{"fail y=0 d= hint"}, stderr: "tether: error: it broke\ntether: hint: do this\n"},
		{args: []string{"fail", "exit"}, code: 75, ran: []string{"fail y=0 d= exit"}, stderr: "tether: error: gone\ntether: hint: enrol again\n"},
		{args: []string{"fail", "silent"}, code: 1, ran: []string{"fail y=0 d= silent"}},
		{args: []string{"fail", "plain"}, code: 1, ran: []string{"fail y=0 d= plain"}, stderr: "tether: error: plain\n"},
	} {
		stdout, stderr, code, ran := run(t, tc.args...)
		if stdout != tc.stdout || stderr != tc.stderr || code != tc.code || !reflect.DeepEqual(ran, tc.ran) {
			t.Errorf("tether %s: exit %d, ran %q\nstdout:\n%s\nstderr:\n%s\nwant exit %d, ran %q\nstdout:\n%s\nstderr:\n%s",
				strings.Join(tc.args, " "), code, ran, stdout, stderr, tc.code, tc.ran, tc.stdout, tc.stderr)
		}
	}
}

func TestHelp(t *testing.T) {
	var ran []string
	tab := testTable(&ran)
	for words, want := range map[string]string{
		"server":           "Usage: tether server\n",
		"server keys list": "Usage: tether server keys list\n",
		"luks bind extra":  "Usage: tether luks bind\n",
		"server keys":      "Usage: tether server keys COMMAND",
		"nosuch":           "",
	} {
		var b bytes.Buffer
		ok := tab.Help(&b, strings.Fields(words))
		if ok != (want != "") || !strings.HasPrefix(b.String(), want) {
			t.Errorf("help %s: %v %q, want %q", words, ok, b.String(), want)
		}
	}
	if len(ran) != 0 {
		t.Errorf("help ran %q", ran)
	}
}

func TestHintOnlyTopLevel(t *testing.T) {
	err := command.WithHint(errors.New("x"), "y")
	wrapped := command.ExitError{Code: 3, Err: err}
	if !command.HasHint(err) || command.HasHint(wrapped) {
		t.Error("HasHint must see the error's own hint only")
	}
	if h, ok := command.Hint(wrapped); !ok || h != "y" {
		t.Errorf("Hint(wrapped) = %q, %v", h, ok)
	}
	if command.WithHint(nil, "y") != nil {
		t.Error("WithHint(nil) is not nil")
	}
}

func TestDocs(t *testing.T) {
	var ran []string
	docs := testTable(&ran).Docs()
	if len(docs) != 6 || docs[0].Name != "fail" || docs[5].Name != "server keys rotate" {
		t.Fatalf("docs not sorted by name: %+v", docs)
	}
	want := []command.FlagDoc{{Name: "-d"}, {Name: "-y", Bool: true}}
	if !reflect.DeepEqual(docs[0].Flags, want) {
		t.Errorf("flags %+v, want %+v", docs[0].Flags, want)
	}
}

func TestDuplicateNamePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("two commands of one name were accepted")
		}
	}()
	c := &command.Command{Name: "x"}
	command.NewTable([]*command.Command{c, c})
}
