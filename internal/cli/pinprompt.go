package cli

import (
	"github.com/tether-nbde/tether/internal/command"

	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/term"
)

// pinAsker returns the pin.Options.PIN of a command: the PIN comes from
// pinFile if given (a file, or /dev/fd/N for a pipe), else from the
// controlling terminal (/dev/tty, so that stdin stays free for the data).
// Never from argv or the environment, where other users or logs can see
// it. The answer is kept for the run: sss may hold several tpm2 children
// sealed with the same PIN, and decrypt asks before its deadline starts.
func pinAsker(env *Env, pinFile string) func(prompt string, confirm bool) ([]byte, error) {
	var (
		mu     sync.Mutex
		cached []byte
	)
	return func(prompt string, confirm bool) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if cached != nil {
			return bytes.Clone(cached), nil
		}
		var p []byte
		var err error
		if pinFile != "" {
			p, err = readPINFile(pinFile)
		} else {
			p, err = readPINTerminal(env, prompt, confirm)
		}
		if err != nil {
			return nil, err
		}
		cached = p
		return bytes.Clone(p), nil
	}
}

// readPINFile reads a PIN from a file: its first line (a trailing
// newline is not part of the PIN, as with passphrases piped to
// cryptsetup).
func readPINFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read the PIN: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return nil, fmt.Errorf("read the PIN from %s: %w", name, err)
	}
	if len(b) > 4096 {
		clear(b)
		return nil, fmt.Errorf("read the PIN from %s: longer than 4 KiB; give a file holding only the PIN", name)
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		clear(b[i:])
		b = b[:i]
	}
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("the PIN file %s is empty", name)
	}
	return b, nil
}

// errNoTerminal: a PIN is needed and neither a terminal nor --pin-file
// gives it. Under a service manager that will not change by retrying.
var errNoTerminal = errors.New("a PIN is needed and there is no terminal to ask it on")

func readPINTerminal(env *Env, prompt string, confirm bool) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return nil, command.WithHint(errNoTerminal,
			"give it with --pin-file FILE (a file holding only the PIN, or /dev/fd/N for a pipe)")
	}
	defer tty.Close()
	read := func(p string) ([]byte, error) {
		fmt.Fprintf(tty, "%s: ", p)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		if err != nil {
			return nil, fmt.Errorf("read the PIN: %w", err)
		}
		return b, nil
	}
	p, err := read(prompt)
	if err != nil {
		return nil, err
	}
	if confirm {
		again, err := read("Repeat the PIN")
		if err != nil {
			clear(p)
			return nil, err
		}
		same := bytes.Equal(p, again)
		clear(again)
		if !same {
			clear(p)
			return nil, errors.New("the two PINs differ; nothing was encrypted: run the command again")
		}
	}
	return p, nil
}
