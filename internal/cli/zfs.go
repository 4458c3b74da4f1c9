package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/pin/managed"
)

const zfsSetupUsage = `Usage: tether zfs setup [--state DIR] [POOL/DATASET]

Prepare an enrolled device (tether enroll --key-store file) so that ZFS
native encryption fetches dataset keys from the tether server itself:
keylocation=https://SERVER/v1/zfs/POOL/DATASET with keyformat=raw.

The server answers with a raw 32-byte key only to this device's identity
key (as TLS client certificate) and only while its policy allows an unlock
(enabled, allowed network, not in lockdown, rate limit, keep-alive);
revoking the device destroys the keys for good. The key is derived from the
device's server-side key and the dataset name, so each dataset has its own.
Unlike managed unlocks, the server sees these keys: ZFS cannot blind.

This writes, next to the device state:
  zfs-client.crt   the identity key's certificate (SSL_CLIENT_CERT_FILE)
  zfs-server.crt   the server's certificate, checked against the pin taken
                   at enrolment (SSL_CA_CERT_FILE)
and prints the zfs command and the environment libcurl needs. The server's
certificate must name its host: start the server with --managed-hostname.

Options:
  --state DIR   device state directory (default $TETHER_DEVICE_DIR, else
                /etc/tether/device)
`

func zfsSetupCmd() *command.Command {
	return &command.Command{
		Name:    "zfs setup",
		Summary: "prepare an enrolled device for ZFS keylocation=https://",
		Usage:   zfsSetupUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			state := fs.String("state", "", "")
			return func(env *Env, args []string) error {
				if len(args) > 1 {
					return command.Usagef("want at most one argument, the dataset")
				}
				dir := deviceDir(env, *state)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				f, err := managed.WriteZFSFiles(ctx, dir)
				if err != nil {
					return err
				}
				dataset := "POOL/DATASET"
				if len(args) == 1 {
					dataset = args[0]
				}
				fmt.Fprintf(env.Stdout, `# Create (or change) the dataset to fetch its key from the server:
zfs create -o encryption=on -o keyformat=raw -o keylocation=%[1]s%[2]s %[2]s
# zfs load-key needs the device's identity as client certificate:
export SSL_CLIENT_CERT_FILE=%[3]s
export SSL_CLIENT_KEY_FILE=%[4]s
export SSL_CA_CERT_FILE=%[5]s
`, f.BaseURL, dataset, f.ClientCert, f.ClientKey, f.ServerCert)
				return nil
			}
		},
	}
}
