package servercli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

const kekSealUsage = `Usage: tether server kek seal PIN CONFIG (--backup FILE | --no-backup)
                             [-y] [--data DIR | --kek-file FILE] [--timeout D]

Seal the managed server's key-encryption key (KEK) under a pin's policy, as
"tether encrypt PIN CONFIG" would. The KEK protects every device's exchange
key in the store; plain, it sits in a root-only file next to the store, so
whoever copies the server's disk or its backup has both. Sealed, the file
opens only where the policy holds: on this machine's TPM (tpm2, optionally
with PCRs), while its Tang servers answer (tang), or both (sss). The server
unseals it each time it starts, and refuses to start if it cannot.

The sealed file replaces the plain one in place (atomically), and only after
it has been unsealed again and compared: if anything fails, the file is as
it was. A sealed file can be sealed again under another policy (it must
still unseal). Every replica keeps its own copy of the KEK file, so each
one seals its copy to its own TPM.

A TPM that is cleared or replaced takes a KEK sealed to it alone with it,
and with it every device's key. So seal says where a plain copy goes:
  --backup FILE     write the plain KEK to FILE (new, 0600) first; move it
                    off this machine, e.g. to an offline medium
  --no-backup       you already keep a copy (the file as it was created)

Options:
  -y                trust Tang advertisements without a thumbprint
  --data DIR        the server's data directory (default /var/lib/tether);
                    the KEK file is DIR/kek
  --kek-file FILE   the KEK file, if the server runs with --kek-file
  --timeout D       time for each pin to answer (default 10s)

Examples:
  tether server kek seal tpm2 '{"pcr_ids":"7"}' --backup /media/usb/kek
  tether server kek seal sss '{"t":1,"pins":{"tpm2":[{}],"tang":[{"url":"http://tang.lan"}]}}' \
      --no-backup -y
  tether server kek unseal
`

// The KEK commands: seal the managed server's key-encryption key file to a
// TPM or Tang servers (any pin policy), and turn it back into a plain file.
func serverKekSealCmd() *command.Command {
	return &command.Command{
		Name:    "server kek seal",
		Summary: "seal the key-encryption key to this machine's TPM or to Tang servers",
		Usage:   kekSealUsage,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			file, _ := kekFlags(fs)
			backup := fs.String("backup", "", "")
			noBackup := fs.Bool("no-backup", false, "")
			trust := fs.Bool("y", false, "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			return func(env *command.Env, args []string) error {
				if len(args) != 2 {
					return command.Usagef("want PIN and CONFIG, e.g. tpm2 '{\"pcr_ids\":\"7\"}'")
				}
				if (*backup == "") == !*noBackup {
					return command.WithHint(command.Usagef("say where the plain copy goes (--backup FILE) or that you have one (--no-backup)"),
						"a KEK sealed to a TPM is lost with the TPM, and every device key with it: keep a copy somewhere safe")
				}
				if !json.Valid([]byte(args[1])) {
					return command.Usagef("CONFIG is not valid JSON: %s", args[1])
				}
				path := file()
				if _, err := os.Stat(path); err != nil {
					return command.WithHint(err, "is --data the server's data directory (or give --kek-file)?")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2**timeout)
				defer cancel()
				if *backup != "" {
					if err := writeBackup(ctx, path, *backup); err != nil {
						return err
					}
					fmt.Fprintf(env.Stderr, "plain copy of the key-encryption key written to %s: move it off this machine\n", *backup)
				}
				desc, err := managed.SealKEK(ctx, path, args[0], json.RawMessage(args[1]), pin.Options{Trust: *trust, Timeout: *timeout})
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "%s is sealed: %s. The server unseals it when it starts.\n", path, desc)
				return nil
			}
		},
	}
}

const kekRotateUsage = `Usage: tether server kek rotate --servers-stopped [--data DIR | --kek-file FILE]
                              [--store SRC]

Replace the managed server's key-encryption key (KEK) with a new random
one and rewrap every key the store holds under it: each device's exchange
key, the managed TLS key and the KEK check. Rotate when the KEK file, or a
backup holding it, may have been copied: the old KEK no longer opens the
store (it still opens older backups of the store).

Stop every server that uses the store first (all replicas): a running
server holds the old KEK in memory. A server running on DIR (it holds
DIR/server.lock) is detected and the rotation refused; replicas on other
machines are not, hence --servers-stopped. Afterwards copy the new KEK
file to every replica, back it up, and start them.

Nothing is lost if it stops part way. The new KEK is written to FILE.new
before the store changes, the store changes in one transaction, and then
FILE.new replaces FILE. If it stops between the two, the servers refuse to
start and say so; run it again to finish. A sealed KEK file (tether server
kek seal) must be unsealed first and sealed again afterwards. With SQLite,
the write-ahead log is checkpointed so that no old wrapped key lingers.

Options:
  --servers-stopped  confirm that no server is using the store
  --data DIR         the server's data directory (default /var/lib/tether):
                     the KEK file is DIR/kek, the store sqlite:DIR/tether.db
  --kek-file FILE    the KEK file, if the servers run with --kek-file
  --store SRC        the store, if the servers run with --store (sqlite:PATH
                     or a postgres:// URL)
`

func serverKekRotateCmd() *command.Command {
	return &command.Command{
		Name:    "server kek rotate",
		Summary: "replace the key-encryption key and rewrap every key under the new one",
		Usage:   kekRotateUsage,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			file, data := kekFlags(fs)
			storeSrc := fs.String("store", "", "")
			stopped := fs.Bool("servers-stopped", false, "")
			return func(env *command.Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				if !*stopped {
					return command.WithHint(command.Usagef("stop every server that uses the store first, then pass --servers-stopped"),
						"a running server keeps the old key-encryption key and could not unwrap the rewrapped keys")
				}
				ctx := context.Background()
				path := file()
				if _, err := os.Stat(path); err != nil {
					return command.WithHint(err, "is --data %s the server's data directory (or give --kek-file)?", *data)
				}
				// --servers-stopped is the admin's word for replicas elsewhere;
				// a server on this data directory can be seen, and would keep
				// wrapping new keys under the old KEK.
				unlock, err := server.LockDataDirOffline(*data)
				if errors.Is(err, server.ErrServerRunning) {
					return command.WithHint(fmt.Errorf("rotate the key-encryption key: %w", err),
						"stop it (and every replica), run this again, then start them")
				}
				if err == nil {
					defer unlock()
				} else if !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("rotate the key-encryption key: %w", err)
				}
				src := *storeSrc
				if src == "" {
					src = "sqlite:" + filepath.Join(*data, "tether.db")
				}
				// Opening a SQLite store creates it: make sure there is one.
				if db, ok := strings.CutPrefix(src, "sqlite:"); ok || !strings.Contains(src, "://") {
					if _, err := os.Stat(db); err != nil {
						return command.WithHint(err, "is --data %s the server's data directory (or give --store)?", *data)
					}
				}
				st, err := store.Open(ctx, src)
				if err != nil {
					return fmt.Errorf("open store: %w", err)
				}
				defer st.Close()
				finished, err := managed.RotateKEK(ctx, path, st)
				if err != nil {
					return err
				}
				if finished {
					fmt.Fprintf(env.Stderr, "finished an interrupted rotation: %s is the store's key-encryption key\n", path)
				} else {
					fmt.Fprintf(env.Stderr, "%s is a new key-encryption key and every key in the store is rewrapped under it\n", path)
				}
				fmt.Fprintf(env.Stderr, "copy it to every replica, back it up (the old one no longer opens this store), then start the servers\n")
				return nil
			}
		},
	}
}

const kekUnsealUsage = `Usage: tether server kek unseal [--data DIR | --kek-file FILE] [--timeout D]

Turn a KEK file sealed by "tether server kek seal" back into a plain one,
in place (atomically), for example before moving the server to a machine
with another TPM. It needs the sealing policy to hold, as the server does.

Options:
  --data DIR        the server's data directory (default /var/lib/tether)
  --kek-file FILE   the KEK file, if the server runs with --kek-file
  --timeout D       time for each pin to answer (default 10s)
`

func serverKekUnsealCmd() *command.Command {
	return &command.Command{
		Name:    "server kek unseal",
		Summary: "turn a sealed key-encryption key back into a plain file",
		Usage:   kekUnsealUsage,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			file, _ := kekFlags(fs)
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			return func(env *command.Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				path := file()
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				defer cancel()
				if err := managed.UnsealKEK(ctx, path); err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "%s is a plain key-encryption key file again\n", path)
				return nil
			}
		},
	}
}

// kekFlags declares --data and --kek-file and returns the KEK file's path
// and the data directory.
func kekFlags(fs *flag.FlagSet) (file func() string, data *string) {
	data = fs.String("data", defaultDataDir, "")
	kek := fs.String("kek-file", "", "")
	return func() string {
		if *kek != "" {
			return *kek
		}
		return filepath.Join(*data, "kek")
	}, data
}

// writeBackup writes the plain KEK to a new file (0600); it never
// overwrites one.
func writeBackup(ctx context.Context, path, backup string) error {
	text, _, err := managed.KEKText(ctx, path)
	if err != nil {
		return err
	}
	defer clear(text)
	f, err := os.OpenFile(backup, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("backup %s already exists: choose a new file", backup)
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if _, err := f.Write(text); err != nil {
		f.Close()
		os.Remove(backup)
		return fmt.Errorf("backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(backup)
		return fmt.Errorf("backup: %w", err)
	}
	return f.Close()
}
