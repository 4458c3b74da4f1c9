// Command tether-smb is the smb pin's helper: it reads one key file from an
// SMB2/3 share for tether, which runs it with a JSON request on stdin (the
// password included, so that it never appears in a process listing) and
// reads a JSON reply from stdout. It is installed next to tether; see
// docs/REMOTE-PINS.md.
//
// The SMB client lives in this separate binary so that its start-up cost is
// paid only by the bindings that use it, not by every tether start.
package main

import (
	"fmt"
	"os"

	"github.com/tether-nbde/tether/internal/version"
	"github.com/tether-nbde/tether/pin/smb/share"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Print(version.Get().String("tether-smb"))
		os.Exit(0)
	}
	if len(os.Args) > 1 {
		// stderr even for --help: stdout is where tether reads replies.
		fmt.Fprint(os.Stderr, share.Usage)
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			os.Exit(0)
		}
		os.Exit(2)
	}
	os.Exit(share.Serve(os.Stdin, os.Stdout))
}
