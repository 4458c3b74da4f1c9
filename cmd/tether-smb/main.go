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
	"os"

	"github.com/tether-nbde/tether/pin/smb/share"
)

func main() {
	os.Exit(share.Serve(os.Stdin, os.Stdout))
}
