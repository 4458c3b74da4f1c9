package cli

import (
	"flag"
	"io"
	"sort"
	"strings"
)

// Doc is one command as its manual and completion see it: the same name,
// summary and usage "tether help" prints, and the flags the command
// declares. internal/docgen makes the man pages and shell completions
// from these, so they say what --help says.
type Doc struct {
	Name    string // words after "tether", e.g. "luks bind"
	Summary string
	Usage   string
	Flags   []FlagDoc
}

// FlagDoc is a flag as it is typed: "-d" for one letter, "--timeout" for
// longer names (Go's flag package takes both forms; the manuals use these).
type FlagDoc struct {
	Name string // "-d", "--timeout"
	Bool bool   // takes no value
}

// Commands returns every registered command, sorted by name.
func Commands() []Doc {
	out := make([]Doc, 0, len(commands))
	for _, c := range commands {
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.flags(fs)
		d := Doc{Name: c.name, Summary: c.summary, Usage: c.usage}
		fs.VisitAll(func(f *flag.Flag) {
			name := "--" + f.Name
			if len(f.Name) == 1 {
				name = "-" + f.Name
			}
			b, ok := f.Value.(interface{ IsBoolFlag() bool })
			d.Flags = append(d.Flags, FlagDoc{Name: name, Bool: ok && b.IsBoolFlag()})
		})
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Overview is the text "tether help" starts with, before the command list.
func Overview() string { return overview }

// ServerGroups are the command groups that live in tether-server, with
// their one-line summaries.
func ServerGroups() map[string]string {
	m := make(map[string]string, len(serverGroups))
	for k, v := range serverGroups {
		m[k] = v
	}
	return m
}

// IsServerCommand reports whether the command named name belongs to
// tether-server (and its manual to that package).
func IsServerCommand(name string) bool {
	_, ok := serverGroups[strings.Fields(name)[0]]
	return ok
}
