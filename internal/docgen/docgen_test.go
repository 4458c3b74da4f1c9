package docgen_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/cli"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/internal/docgen"
	"github.com/tether-nbde/tether/internal/servercli"
	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/pin/smb/share"
)

// tetherServer is the tether-server binary: every command, the server's too.
var tetherServer = cli.Binary{Name: "tether-server", Extra: servercli.Commands()}

func generate(t *testing.T) (string, []command.Doc) {
	t.Helper()
	dir := t.TempDir()
	cmds := tetherServer.Commands()
	if len(cmds) < 40 {
		t.Fatalf("only %d commands: the server's commands are missing", len(cmds))
	}
	if err := docgen.Write(dir, cmds, "1.2.3", share.Usage); err != nil {
		t.Fatal(err)
	}
	return dir, cmds
}

var ws = regexp.MustCompile(`\s+`)

// norm makes rendered and source text comparable: one space for any
// whitespace, ASCII for the glyphs groff substitutes.
func norm(s string) string {
	s = strings.NewReplacer("\u2212", "-", "\u2010", "-", "\u2019", "'", "\u2018", "`", "\u201c", `"`, "\u201d", `"`).Replace(s)
	return strings.TrimSpace(ws.ReplaceAllString(s, " "))
}

// render formats a page as man would, without hyphenation and with lines
// long enough that no word is broken, and fails on any groff warning.
func render(t *testing.T, page string) string {
	t.Helper()
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-rHY=0", "-rLL=3000n", "-P-cbou", page)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("groff %s: %v\n%s", filepath.Base(page), err, stderr.String())
	}
	return norm(string(out))
}

// TestManPages: each command has a page, groff renders it without a
// warning, and every line of the command's --help is in it, in order of
// paragraphs; the overview page lists every command.
func TestManPages(t *testing.T) {
	testenv.RequireCmd(t, "groff")
	dir, cmds := generate(t)
	overview := render(t, filepath.Join(dir, "man1/tether.1"))
	for _, c := range cmds {
		sub := "man1"
		if cli.IsServerCommand(c.Name) {
			sub = "server/man1"
		}
		page := filepath.Join(dir, sub, docgen.PageName(c.Name)+".1")
		text := render(t, page)
		if !strings.Contains(text, norm(docgen.PageName(c.Name)+" - "+c.Summary)) {
			t.Errorf("%s: NAME is not %q", page, c.Summary)
		}
		help, _, code := run(c.Name)
		if code != 0 || help != c.Usage {
			t.Fatalf("tether %s --help is not the table's usage (exit %d)", c.Name, code)
		}
		for _, line := range strings.Split(help, "\n") {
			line = strings.TrimPrefix(strings.TrimSpace(line), "Usage: ")
			if regexp.MustCompile(`^[A-Z][A-Za-z0-9 ()/.,-]{0,40}:$`).MatchString(line) {
				line = strings.ToUpper(strings.TrimSuffix(line, ":"))
			}
			if !strings.Contains(text, norm(line)) {
				t.Errorf("%s lacks this line of tether %s --help:\n%s", filepath.Base(page), c.Name, line)
			}
		}
		if !strings.Contains(overview, docgen.PageName(c.Name)+"(1) "+norm(c.Summary)) {
			t.Errorf("tether(1) does not list %s", c.Name)
		}
	}
	smb := render(t, filepath.Join(dir, "man1/tether-smb.1"))
	if !strings.Contains(smb, norm("tether runs it; there is nothing to run by hand.")) {
		t.Errorf("tether-smb(1):\n%s", smb)
	}
	// man itself reads them.
	if man, err := exec.LookPath("man"); err == nil {
		out, err := exec.Command(man, "-l", filepath.Join(dir, "man1/tether-adv.1")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "TETHER-ADV(1)") {
			t.Errorf("man -l tether-adv.1: %v\n%s", err, out)
		}
	}
}

// TestFlagsDocumented: every flag a command declares is in its --help,
// so in its man page: a flag added without a word in the manual fails.
func TestFlagsDocumented(t *testing.T) {
	for _, c := range tetherServer.Commands() {
		for _, f := range c.Flags {
			if !regexp.MustCompile(regexp.QuoteMeta(f.Name) + `\b`).MatchString(c.Usage) {
				t.Errorf("tether %s --help does not mention %s", c.Name, f.Name)
			}
		}
	}
}

func run(args ...string) (string, string, int) {
	var o, e strings.Builder
	env := &command.Env{Stdin: strings.NewReader(""), Stdout: &o, Stderr: &e, Getenv: func(string) string { return "" }}
	code := tetherServer.Run(append(strings.Fields(args[0]), "--help"), env)
	return o.String(), e.String(), code
}

// TestBashCompletion drives the completion function as bash would for
// every command: each word of its name completes, and "-" offers exactly
// the flags the command declares.
func TestBashCompletion(t *testing.T) {
	bash := testenv.RequireCmd(t, "bash")
	dir, cmds := generate(t)
	script := filepath.Join(dir, "bash/tether")
	if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "source %q\ncd %q\n", script, t.TempDir())
	sb.WriteString(`comp() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); _tether; printf '%s\n' "${COMPREPLY[*]}"; }` + "\n")
	var cases [][]string
	var want []string
	for _, c := range cmds {
		words := strings.Fields(c.Name)
		for i, w := range words {
			cases = append(cases, append(append([]string{"tether"}, words[:i]...), w[:1]))
			want = append(want, w) // checked as one of the candidates
		}
		cases = append(cases, append(append([]string{"tether"}, words...), "-"))
		var f []string
		for _, fl := range c.Flags {
			f = append(f, fl.Name)
		}
		want = append(want, "="+strings.Join(append(f, "--help"), " "))
	}
	for _, cs := range cases {
		sb.WriteString("comp")
		for _, w := range cs {
			fmt.Fprintf(&sb, " %q", w)
		}
		sb.WriteString("\n")
	}
	out, err := exec.Command(bash, "-c", sb.String()).Output()
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(got) != len(cases) {
		t.Fatalf("%d answers for %d cases:\n%s", len(got), len(cases), out)
	}
	for i, cs := range cases {
		cands := strings.Fields(got[i])
		if exact, ok := strings.CutPrefix(want[i], "="); ok {
			if norm(got[i]) != norm(exact) {
				t.Errorf("%s<TAB>: %q, want the flags %q", strings.Join(cs, " "), got[i], exact)
			}
			continue
		}
		found := false
		for _, c := range cands {
			found = found || c == want[i]
		}
		if !found {
			t.Errorf("%s<TAB>: %q, want %q among them", strings.Join(cs, " "), got[i], want[i])
		}
	}
}

// TestZshFishCompletion: the zsh and fish scripts parse, and fish (which
// can be asked) completes commands and flags.
func TestZshFishCompletion(t *testing.T) {
	dir, _ := generate(t)
	if zsh, err := exec.LookPath("zsh"); err == nil {
		if out, err := exec.Command(zsh, "-n", filepath.Join(dir, "zsh/_tether")).CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
		// The function's logic, with zsh's completion builtins replaced by
		// functions that print what they were given.
		script := `compadd() { shift; print -r -- "add $*"; }
_describe() { local -a d; d=("${(@P)4}"); print -r -- describe ${(@)d%%:*}; }
_files() { print -r -- files; }
c() { words=("$@"); CURRENT=$#; _tether; }
words=(tether); CURRENT=2; source ` + filepath.Join(dir, "zsh/_tether") + `
c tether luks b; c tether adv --; c tether server ''; c tether luks bind -d ''
`
		out, err := exec.Command(zsh, "-f", "-c", script).CombinedOutput()
		want := "describe admin adv agent askpass crypttab decrypt discover doctor encrypt enroll initramfs install keyd luks secret server setup tpm version zfs help\n" +
			"describe bind create encrypt list pass regen repair report run unbind unlock\n" +
			"add --json --thp --timeout --help\n" +
			"describe kek keys\nfiles\n" +
			"files\n"
		if err != nil || string(out) != want {
			t.Errorf("zsh completion: %v\n%s\nwant\n%s", err, out, want)
		}
	} else {
		testenv.Require(t, false, "zsh is not installed")
	}
	fish := testenv.RequireCmd(t, "fish")
	for _, f := range []string{"fish/tether.fish", "fish/tether-server.fish"} {
		if out, err := exec.Command(fish, "-n", filepath.Join(dir, f)).CombinedOutput(); err != nil {
			t.Errorf("fish -n %s: %v\n%s", f, err, out)
		}
	}
	for line, want := range map[string][]string{
		"tether lu":                   {"luks"},
		"tether luks b":               {"bind"},
		"tether luks bind --t":        {"--timeout"},
		"tether adv --":               {"--json", "--thp", "--timeout"},
		"tether-server server keys l": {"list"},
		"tether luks bind -d ":        nil, // a flag's value: files, and no error
		"tether server ":              {"keys", "kek"},
	} {
		prog, _, _ := strings.Cut(line, " ")
		cmd := exec.Command(fish, "--no-config", "-c", fmt.Sprintf("source %q; complete -C %q", filepath.Join(dir, "fish", prog+".fish"), line))
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		cmd.Dir = t.TempDir()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Fatalf("fish complete -C %q: %v\n%s", line, err, stderr.String())
		}
		var got []string
		for _, l := range strings.Split(string(out), "\n") {
			w, _, _ := strings.Cut(l, "\t")
			got = append(got, w)
		}
		for _, w := range want {
			if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
				t.Errorf("fish: %s<TAB>: %q, want %q", line, got, w)
			}
		}
	}
}
