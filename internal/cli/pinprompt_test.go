package cli_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// onTerminal runs shell command cmd on a pseudo-terminal (script(1)),
// typing the lines of input into it, and returns what the terminal showed.
func onTerminal(t *testing.T, dir, cmd string, input ...string) (string, error) {
	t.Helper()
	sh := exec.Command("script", "-qec", cmd, "/dev/null")
	sh.Dir = dir
	// script copies its stdin to the terminal; the program reads it once
	// it asks (the line discipline keeps what arrives earlier).
	sh.Stdin = strings.NewReader(strings.Join(input, "\n") + "\n")
	var out bytes.Buffer
	sh.Stdout, sh.Stderr = &out, &out
	err := sh.Run()
	return out.String(), err
}

// TestPINTerminal: without --pin-file the PIN is asked on the terminal
// (stdin carries the data): twice when encrypting, and two different
// answers encrypt nothing; once when decrypting.
func TestPINTerminal(t *testing.T) {
	testenv.RequireCmd(t, "script")
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI)
	t.Setenv(tpm.EnvTCTI, "")
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "s"), []byte("terminal secret"), 0o600)
	enc := bin + ` encrypt tpm2 '{"with_pin":true}' < s > s.jwe`

	out, err := onTerminal(t, dir, enc, "2580", "2581")
	if err == nil || !strings.Contains(out, "the two PINs differ") {
		t.Fatalf("different PINs: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "s.jwe")); err == nil && fi.Size() > 0 {
		t.Fatal("different PINs: something was encrypted")
	}
	if out, err := onTerminal(t, dir, enc, "2580", "2580"); err != nil ||
		!strings.Contains(out, "New PIN for the TPM-sealed secret: ") || !strings.Contains(out, "Repeat the PIN: ") {
		t.Fatalf("encrypt on a terminal: %v\n%s", err, out)
	}
	out, err = onTerminal(t, dir, bin+" decrypt < s.jwe", "2580")
	if err != nil || !strings.Contains(out, "PIN of the TPM-sealed secret: ") || !strings.Contains(out, "terminal secret") {
		t.Fatalf("decrypt on a terminal: %v\n%s", err, out)
	}
	out, err = onTerminal(t, dir, bin+" decrypt < s.jwe", "0000")
	if err == nil || !strings.Contains(out, "wrong PIN") || strings.Contains(out, "terminal secret") {
		t.Fatalf("decrypt on a terminal, wrong PIN: %v\n%s", err, out)
	}
}
