// Command gen writes tether's man pages and shell completions, made from
// the command table that --help prints (internal/docgen), into a
// directory laid out as they are installed:
//
//	go run ./internal/docgen/gen -version 1.2.3 OUT
//
//	OUT/man1/*.1 (the tether package's pages; tether-server's in OUT/server/man1)
//	OUT/bash/tether, OUT/zsh/_tether, OUT/fish/tether.fish, and the same for tether-server
//
// scripts/package.sh runs it; nothing it makes is committed, so nothing can
// drift from --help.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tether-nbde/tether/internal/cli"
	"github.com/tether-nbde/tether/internal/docgen"
	"github.com/tether-nbde/tether/internal/servercli"
	"github.com/tether-nbde/tether/internal/version"
	"github.com/tether-nbde/tether/pin/smb/share"
)

func main() {
	ver := flag.String("version", version.Version, "version the pages name")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: go run ./internal/docgen/gen [-version V] OUTDIR")
		os.Exit(2)
	}
	if err := docgen.Write(flag.Arg(0), cli.Binary{Name: "tether-server", Extra: servercli.Commands()}.Commands(), *ver, share.Usage); err != nil {
		fmt.Fprintf(os.Stderr, "gen: error: %v\n", err)
		os.Exit(1)
	}
}
