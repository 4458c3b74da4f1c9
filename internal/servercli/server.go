package servercli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"text/tabwriter"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/tang"
)

const defaultDataDir = "/var/lib/tether"

const serverUsage = `Usage: tether server [--listen ADDR] [--data DIR] [--prefix PATH]
                     [--curve P-521|P-384|P-256] [--tls-cert FILE --tls-key FILE]

Run the key server. It speaks the Tang protocol, so stock clevis clients
bind to and unlock from it exactly as from tangd:

  GET  /adv             the signed advertisement of the current keys
  GET  /adv/{kid}       the same, also signed by the signing key kid
                        (even a rotated one)
  POST /rec/{kid}       the McCallum-Relyea recovery exchange
  GET  /healthz         "ok" while the server runs
  GET  /metrics         Prometheus metrics (requests, /rec latency)

The server never learns the keys it helps recover: clients blind every
request. Keys are kept in DIR/tang in tangd's format (one JWK per file,
rotated keys hidden with a leading "."), generated on first start.
Changes to that directory (tether server keys rotate/import) are picked up
within 10 ms, without a restart.

Options:
  --listen ADDR     address to listen on (default ":7500")
  --data DIR        data directory, created if missing (default /var/lib/tether)
  --prefix PATH     serve every endpoint under PATH, e.g. /tang (tangd -e)
  --curve NAME      curve for keys generated on first start (default P-521).
                    P-521 is tangd's default: a tether server generates the
                    same kind of keys a tangd would, so either can take over
                    from the other and every clevis version understands them.
                    P-256 keys are several times cheaper per request; clevis
                    supports them too.
  --tls-cert FILE   serve HTTPS with this certificate (PEM) ...
  --tls-key FILE    ... and this private key (PEM)
  --log-level LVL   debug, info, warn or error (default info)
  --announce=false  do not announce the Tang port on the local network.
                    By default the server answers multicast DNS queries
                    for the DNS-SD service _tang._tcp (UDP port 5353) with
                    its addresses, port and the thumbprints of its signing
                    keys, so that tether setup and tether discover find
                    it. That tells the network no more than /adv does,
                    except that a key server runs here. Always off when
                    --listen is a loopback address

Managed mode (docs/MANAGED.md; see tether enroll and tether admin):
  --managed-listen ADDR  serve the managed device API and the admin API
                    over TLS on ADDR (e.g. ":7501"); off when empty. The
                    certificate is self-signed and pinned by devices
  --store SRC       sqlite:PATH (default sqlite:DIR/tether.db) or a
                    postgres:// URL shared by several replicas
  --kek-file FILE   key-encryption key for keys at rest (default DIR/kek,
                    created 0600); every replica needs the same one. It
                    can be sealed to the TPM or Tang servers (tether
                    server kek seal); the server then unseals it at start
  --webhook URL     POST a JSON event for unlocks, denials, approvals,
                    quiet devices and revocations (repeatable)
  --tang-allow CIDR answer the Tang endpoints only from these networks
                    (comma-separated; also without managed mode)
  --approval-timeout D  how long an unlock waits for approval (default 5m)
  --unlock-rate N   unlocks per device per minute unless its policy says
                    otherwise (default 30; -1 = unlimited)
  --ui=false        no dashboard. By default the managed listener also
                    serves it at https://ADDR/ui/ (docs/DASHBOARD.md); the
                    first start creates the account "admin" with a random
                    password in DIR/ui-admin.txt (0600)
  --ui-session-idle D  a dashboard session unused this long ends (default 30m)
  --ui-session-max D   every dashboard session ends this long after
                    sign-in (default 12h)
  --managed-hostname NAMES  DNS names and IP addresses (comma-separated)
                    for the self-signed certificate made on first start,
                    so that name-checking clients (ZFS keylocation via
                    libcurl) accept it; devices pin the key regardless

ZFS: enrolled devices fetch raw 32-byte dataset keys at
  https://HOST:PORT/v1/zfs/POOL/DATASET
with their identity key as client certificate, under the same policy as
managed unlocks (see tether zfs setup).

Connections: each listener has a cap of open connections, sized from the
open-files limit (RLIMIT_NOFILE, raised to its hard limit at start): 256
descriptors stay for the store and files, the managed listener gets an
eighth of the rest (at least 64), the Tang port what remains. So idle
connections to the Tang port can never take the managed API's share.
A connection over a cap is closed at once, counted in /metrics
(tether_connections_refused_total) and logged at most every 10 s. Raise
the limit (LimitNOFILE= in a systemd unit) to raise the caps.

The server stops gracefully on SIGTERM or SIGINT: it stops accepting and
lets requests in flight finish. Logs go to stderr and never contain key
material or request bodies.

Examples:
  $ tether server --listen 127.0.0.1:7500 --data ./tether-data
  $ clevis encrypt tang '{"url":"http://127.0.0.1:7500","thp":"..."}' < secret > secret.jwe
`

func serverCmd() *command.Command {
	return &command.Command{
		Name:    "server",
		Summary: "run the key server (Tang protocol)",
		Usage:   serverUsage,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			listen := fs.String("listen", ":7500", "")
			data := fs.String("data", defaultDataDir, "")
			prefix := fs.String("prefix", "", "")
			curve := fs.String("curve", "P-521", "")
			cert := fs.String("tls-cert", "", "")
			key := fs.String("tls-key", "", "")
			logLevel := fs.String("log-level", "info", "")
			announce := fs.Bool("announce", true, "")
			managedCfg := managedServerFlags(fs) // admin.go
			return func(env *command.Env, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				mc, err := managedCfg()
				if err != nil {
					return err
				}
				c, err := jose.CurveByName(*curve)
				if err != nil {
					return command.Usagef("--curve: %v", err)
				}
				if (*cert == "") != (*key == "") {
					return command.Usagef("--tls-cert and --tls-key go together")
				}
				var lvl slog.Level
				if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
					return command.Usagef("--log-level: %v", err)
				}
				log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lvl}))
				if env.Getenv("GOGC") == "" {
					// The server's live heap is small (tens of MB even for a
					// large fleet); collecting at 3x instead of 2x of it
					// costs little memory and a share of GC CPU per request.
					debug.SetGCPercent(200)
				}
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
				defer stop()
				err = server.Run(ctx, server.Config{
					Listen: *listen, DataDir: *data, Prefix: *prefix, Curve: c,
					TLSCert: *cert, TLSKey: *key, Log: log, Managed: mc,
					Announce: *announce,
				})
				if errors.Is(err, os.ErrPermission) {
					return command.WithHint(err, "choose a data directory you can write with --data DIR")
				}
				return err
			}
		},
	}
}

const keysListUsage = `Usage: tether server keys list [--data DIR] [--all]

List the key server's keys with their S256 thumbprints. Give a client the
thumbprint of the advertised signing key as "thp" so that it can trust
the advertisement without asking.

Options:
  --data DIR   the server's data directory (default /var/lib/tether)
  --all        also list rotated keys
`

func serverKeysListCmd() *command.Command {
	return &command.Command{
		Name:    "server keys list",
		Summary: "list the server's keys and their thumbprints",
		Usage:   keysListUsage,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			data := fs.String("data", defaultDataDir, "")
			all := fs.Bool("all", false, "")
			return func(env *command.Env, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				keys, err := tang.LoadKeyDir(server.KeyDir(*data))
				if err != nil {
					return command.WithHint(err, "is --data %s the server's data directory?", *data)
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "STATE\tUSE\tCURVE\tTHUMBPRINT (S256)")
				for _, k := range keys {
					if k.Hidden && !*all {
						continue
					}
					state, use := "advertised", "exchange"
					if k.Hidden {
						state = "rotated"
					}
					if k.Signing() {
						use = "signing"
					}
					tp, _ := k.JWK.Thumbprint("S256")
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", state, use, k.JWK.Crv, tp)
				}
				return tw.Flush()
			}
		},
	}
}

const keysRotateUsage = `Usage: tether server keys rotate [--data DIR] [--curve NAME]

Generate a new signing and exchange key pair and retire the keys that were
advertised. Retired keys are no longer advertised, so new bindings use the
new keys, but they still answer recovery requests: every existing binding
keeps working. Rebind clients (tether luks regen) and then delete the
retired key files (DIR/tang/.*.jwk) to retire them for good.

A running server picks the new keys up within 10 ms.

Options:
  --data DIR    the server's data directory (default /var/lib/tether)
  --curve NAME  curve of the new keys (default P-521)
`

func serverKeysRotateCmd() *command.Command {
	return &command.Command{
		Name:    "server keys rotate",
		Summary: "generate new keys and retire the advertised ones",
		Usage:   keysRotateUsage,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			data := fs.String("data", defaultDataDir, "")
			curve := fs.String("curve", "P-521", "")
			return func(env *command.Env, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				c, err := jose.CurveByName(*curve)
				if err != nil {
					return command.Usagef("--curve: %v", err)
				}
				dir := server.KeyDir(*data)
				if _, err := os.Stat(dir); err != nil {
					return command.WithHint(err, "is --data %s the server's data directory?", *data)
				}
				newKeys, hidden, err := tang.Rotate(dir, c)
				if err != nil {
					return err
				}
				for _, k := range newKeys {
					tp, _ := k.JWK.Thumbprint("S256")
					fmt.Fprintf(env.Stderr, "new key %s\n", tp)
				}
				fmt.Fprintf(env.Stderr, "%d old keys retired: they no longer appear in /adv but still recover existing bindings\n", len(hidden))
				return nil
			}
		},
	}
}

const keysImportUsage = `Usage: tether server keys import [--data DIR] TANGDIR

Copy every key of a tangd key directory (e.g. /var/lib/tang or /var/db/tang)
into the server's data directory, keeping rotated keys rotated. Every
binding made against that tangd then recovers against tether: point the
clients' URL (or the DNS name) at tether and stop tangd. The tangd
directory is only read. Keys already present are skipped.

Example:
  $ tether server keys import --data /var/lib/tether /var/lib/tang
`

func serverKeysImportCmd() *command.Command {
	return &command.Command{
		Name:    "server keys import",
		Summary: "take over the keys of a tangd key directory",
		Usage:   keysImportUsage,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			data := fs.String("data", defaultDataDir, "")
			return func(env *command.Env, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want exactly one argument, the tangd key directory")
				}
				imported, err := tang.Import(server.KeyDir(*data), args[0])
				if err != nil {
					return err
				}
				for _, k := range imported {
					tp, _ := k.JWK.Thumbprint("S256")
					state := "advertised"
					if k.Hidden {
						state = "rotated"
					}
					fmt.Fprintf(env.Stderr, "imported %s key %s\n", state, tp)
				}
				fmt.Fprintf(env.Stderr, "%d keys imported\n", len(imported))
				return nil
			}
		},
	}
}
