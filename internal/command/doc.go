package command

import (
	"flag"
	"io"
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

// Docs returns every command of the table, sorted by name.
func (t *Table) Docs() []Doc {
	var out []Doc
	for _, c := range t.All() {
		fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.Flags(fs)
		d := Doc{Name: c.Name, Summary: c.Summary, Usage: c.Usage}
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
	return out
}
