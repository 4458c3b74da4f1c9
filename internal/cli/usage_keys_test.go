package cli_test

import (
	"path/filepath"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

// mkKeys makes a data directory with one P-521 key pair.
func mkKeys(data string) error {
	_, err := tang.GenerateKeys(filepath.Join(data, "tang"), jose.P521)
	return err
}
