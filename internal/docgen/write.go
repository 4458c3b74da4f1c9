package docgen

import (
	"os"
	"path/filepath"

	"github.com/tether-nbde/tether/internal/command"
)

// Write puts the man pages and completions into dir: man1/ (the tether
// package's pages), server/man1/ (tether-server's), and in bash/, zsh/ and
// fish/ one completion file per program, named as each shell looks for it.
// Pages are written uncompressed; the packager compresses them.
func Write(dir string, cmds []command.Doc, version, smbUsage string) error {
	files := map[string]string{
		"bash/tether":             Bash(cmds),
		"bash/tether-server":      Bash(cmds),
		"zsh/_tether":             Zsh(cmds, "tether"),
		"zsh/_tether-server":      Zsh(cmds, "tether-server"),
		"fish/tether.fish":        Fish(cmds, "tether"),
		"fish/tether-server.fish": Fish(cmds, "tether-server"),
	}
	for _, p := range ManPages(cmds, version, smbUsage) {
		sub := "man1"
		if p.Server {
			sub = "server/man1"
		}
		files[filepath.Join(sub, p.Name)] = p.Roff
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}
