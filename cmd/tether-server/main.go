// Command tether-server is tether with the key server's commands: "tether
// server" (the Tang and managed key server, its dashboard and keys) and
// "tether admin". tether runs it for those commands; see internal/cli's
// forward.go for why they live in a binary of their own.
package main

import (
	"os"

	"github.com/tether-nbde/tether/internal/cli"
	_ "github.com/tether-nbde/tether/internal/servercli" // registers "server ..." and "admin ..."
)

func main() {
	cli.Program = "tether-server"
	os.Exit(cli.Run(os.Args[1:], cli.StdEnv()))
}
