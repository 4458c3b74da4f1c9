// Command tether is network-bound disk encryption: see `tether help`.
package main

import (
	"os"

	"github.com/tether-nbde/tether/internal/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], cli.StdEnv()))
}
