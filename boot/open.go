package boot

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// Cryptsetup runs the cryptsetup binary; it is how volumes are opened and
// closed (tether never talks to device-mapper itself).
type Cryptsetup struct {
	Path string // "" means "cryptsetup" on PATH
}

func (c Cryptsetup) run(ctx context.Context, stdin []byte, args ...string) error {
	p := c.Path
	if p == "" {
		p = "cryptsetup"
	}
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cryptsetup %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Open maps device as /dev/mapper/name with key. The key travels on
// stdin, and the keyslot is named so cryptsetup does not try slow
// (argon2) slots first.
func (c Cryptsetup) Open(ctx context.Context, device, name string, key Key) error {
	args := []string{"open", "--type", "luks2", "--key-file", "-"}
	if key.Slot >= 0 {
		args = append(args, "--key-slot", strconv.Itoa(key.Slot))
	}
	args = append(args, device, name)
	return c.run(ctx, key.Passphrase, args...)
}

// Close removes the mapping /dev/mapper/name.
func (c Cryptsetup) Close(ctx context.Context, name string) error {
	return c.run(ctx, nil, "close", name)
}

// TestKey checks that key opens its keyslot of device without opening
// anything (no device-mapper needed).
func (c Cryptsetup) TestKey(ctx context.Context, device string, key Key) error {
	args := []string{"open", "--test-passphrase", "--key-file", "-"}
	if key.Slot >= 0 {
		args = append(args, "--key-slot", strconv.Itoa(key.Slot))
	}
	return c.run(ctx, key.Passphrase, append(args, device)...)
}
