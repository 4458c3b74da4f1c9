// Command tether-server is tether with the key server's commands: "tether
// server" (the Tang and managed key server, its dashboard and keys) and
// "tether admin". tether runs it for those commands; see internal/cli's
// forward.go for why they live in a binary of their own.
package main

import (
	"os"

	"github.com/tether-nbde/tether/internal/cli"
	"github.com/tether-nbde/tether/internal/servercli"
)

func main() {
	// tether's commands and the server's: "server ..." and "admin ...".
	b := cli.Binary{Name: "tether-server", Extra: servercli.Commands()}
	os.Exit(b.Run(os.Args[1:], cli.StdEnv()))
}
