package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/pin/managed"
)

func deviceDir(env *Env, flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if d := env.Getenv("TETHER_DEVICE_DIR"); d != "" {
		return d
	}
	return managed.DefaultDir
}

const enrollUsage = `Usage: tether enroll --server URL (--token TOKEN | --token-file FILE | --pin PIN)
                     [--state DIR] [--name NAME] [--key-store file|tpm]

Enrol this machine with a tether server in managed mode. tether creates
the machine's identity key — in the TPM when one is present (a key that
cannot leave the TPM: a copy of the disk or of the state directory is
useless elsewhere), else in a file in the state directory readable by
root only — and the server records its public half. From then on the managed pin
(tether encrypt managed) binds secrets to a key that the server holds for
this machine alone, and every unlock is authenticated by the identity key.

The token (tether admin token create) is single-use and expiring, and
carries the fingerprint of the server's TLS key: the server is
authenticated from the token alone. Without a token, --pin gives that
fingerprint (tether admin's config shows it) and the enrolment waits as
"pending" until an admin approves it; the server refuses that unless an
admin allowed it (tether admin enroll-open on), and then takes a few per
address and names of ASCII letters, digits, ".", "-" and "_" only. Prefer --token-file (or "-" for
stdin) over --token: command lines are visible to other local users.

Running enroll again with the same state directory reuses the identity
key; after a revocation it makes a new device with a new key.

Options:
  --server URL      the managed API, e.g. https://keys.lan:7501
  --token TOKEN     enrolment token
  --token-file F    read the token from F ("-" for stdin)
  --pin PIN         server TLS key pin, for enrolment without a token
  --state DIR       state directory (default $TETHER_DEVICE_DIR, else
                    /etc/tether/device)
  --name NAME       name shown to admins (default: the host name)
  --key-store KS    where the identity key lives: tpm or file (default: tpm
                    when a TPM answers at TETHER_TPM_TCTI, TPM2TOOLS_TCTI or
                    /dev/tpmrm0, else file)
  --timeout D       bound for the enrolment (default 30s)

The device ID is printed on stdout.

Example:
  $ tether enroll --server https://keys.lan:7501 --token-file /root/token
  $ echo secret | tether encrypt managed '{}' > secret.jwe
`

func enrollCmd() *command.Command {
	return &command.Command{
		Name:    "enroll",
		Summary: "enrol this machine with a managed tether server",
		Usage:   enrollUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			srv := fs.String("server", "", "")
			token := fs.String("token", "", "")
			tokenFile := fs.String("token-file", "", "")
			pin := fs.String("pin", "", "")
			state := fs.String("state", "", "")
			name := fs.String("name", "", "")
			keyStore := fs.String("key-store", "", "")
			timeout := fs.Duration("timeout", 30*time.Second, "")
			return func(env *Env, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				if *srv == "" {
					return command.Usagef("--server URL is required")
				}
				tok := *token
				if *tokenFile != "" {
					var data []byte
					var err error
					if *tokenFile == "-" {
						data, err = readInput(env.Stdin, "tether enroll --server URL --token-file - < token")
					} else {
						data, err = os.ReadFile(*tokenFile)
					}
					if err != nil {
						return fmt.Errorf("read token: %w", err)
					}
					tok = strings.TrimSpace(string(data))
				}
				if tok == "" && *pin == "" {
					return command.Usagef("give --token (or --token-file), or --pin for an enrolment an admin approves")
				}
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				defer cancel()
				dir := deviceDir(env, *state)
				id, info, err := managed.Enroll(ctx, managed.EnrollOptions{
					Server: *srv, Token: tok, Pin: *pin, Dir: dir, Name: *name, KeyStore: *keyStore,
				})
				if errors.Is(err, managed.ErrPin) {
					return command.WithHint(err, "check --server: the token was made by another server")
				}
				if errors.Is(err, os.ErrPermission) {
					return command.WithHint(err, "enrolment writes the identity key to %s: run as root or pass --state DIR", dir)
				}
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Stdout, id.State.Device)
				switch info.State {
				case "pending":
					fmt.Fprintf(env.Stderr, "enrolled as %s, pending: an admin must run tether admin device approve %s\n", info.Device, info.Device)
				default:
					fmt.Fprintf(env.Stderr, "enrolled as %s (%s); bind with: tether encrypt managed '{}'\n", info.Device, info.State)
				}
				return nil
			}
		},
	}
}
