package cli

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/command"
)

func TestUnitSafe(t *testing.T) {
	for in, want := range map[string]string{
		"sda2": "sda2", "nvme0n1p3": "nvme0n1p3", "data.img": "data.img", "a b:c": "a_b_c",
		"disk@by-id": "disk_by-id", "é": "_", "x\xffy": "x_y",
	} {
		if got := unitSafe(in); got != want {
			t.Errorf("unitSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestShippedCommandLines parses every tether command line in the files
// "tether install" writes (unit ExecStart=, the dracut hook) with the
// command's own flags (a unit specifier such as %f stands as written): a unit whose flags do not parse fails at every boot
// (tether-askpass.service shipped "--idle 2min", which Go's durations
// refuse, and the password agent never ran).
func TestShippedCommandLines(t *testing.T) {
	const bin = "/usr/bin/tether"
	checked := 0
	for _, target := range boot.Targets {
		plan, err := boot.Plan(target, bin, []string{"data"})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range plan {
			for _, line := range strings.Split(string(f.Data), "\n") {
				line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "ExecStart="))
				// The initramfs-tools hook copies tether to /sbin/tether.
				if !strings.HasPrefix(line, bin+" ") && !strings.HasPrefix(line, "/sbin/tether ") {
					continue
				}
				// Up to a shell pipe or redirection.
				words := strings.Fields(line)[1:]
				for i, w := range words {
					if w == "|" || strings.HasPrefix(w, "2>") || strings.HasPrefix(w, ">") {
						words = words[:i]
						break
					}
				}
				c := Binary{Name: "tether"}.table().Find(words)
				if c == nil {
					t.Errorf("%s: %q names no tether command", f.Path, line)
					continue
				}
				fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
				fs.SetOutput(io.Discard)
				c.Flags(fs)
				if _, err := command.ParseFlags(fs, words[len(strings.Fields(c.Name)):]); err != nil {
					t.Errorf("%s: %q: %v", f.Path, line, err)
				}
				checked++
			}
		}
	}
	if checked < 7 {
		t.Errorf("checked %d command lines; the shipped files have at least 7 (agent, agent@, askpass twice, keyd, the dracut hook, local-top, local-bottom)", checked)
	}
}
