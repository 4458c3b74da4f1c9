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

const usage = `Usage: tether-smb < REQUEST > REPLY
       tether-smb --version

tether-smb is the helper through which tether's smb pin reads its key file
from an SMB2/3 share. tether runs it; there is nothing to run by hand. It
reads one JSON request on stdin (server address, share, path, user and
password, time limit) and writes one JSON reply on stdout: the file's
contents, or an error.

Install it next to tether (or on PATH): "tether encrypt smb", "tether luks
bind ... smb" and every unlock of an smb binding need it, and the initramfs
hooks of "tether install" copy it when it is there. See docs/REMOTE-PINS.md.
`

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Print(version.Get().String("tether-smb"))
		os.Exit(0)
	}
	if len(os.Args) > 1 {
		fmt.Fprint(os.Stderr, usage)
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			os.Exit(0)
		}
		os.Exit(2)
	}
	os.Exit(share.Serve(os.Stdin, os.Stdout))
}
