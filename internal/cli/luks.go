package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
)

// luksFlags are the flags every luks command shares.
type luksFlags struct {
	dev      *string
	stateDir *string
	timeout  *time.Duration
}

// luksCommand makes a "tether luks ..." command: it declares the flags
// every luks command has (-d, --state-dir, --timeout) and gives run the
// volume they name.
func luksCommand(name, summary, usage string, flags func(fs *flag.FlagSet) func(env *Env, v *luks.Volume, args []string) error) *command.Command {
	return &command.Command{
		Name: name, Summary: summary, Usage: usage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			lf := addLuksFlags(fs)
			run := flags(fs)
			return func(env *Env, args []string) error {
				v, err := lf.volume(env)
				if err != nil {
					return err
				}
				return run(env, v, args)
			}
		},
	}
}

func addLuksFlags(fs *flag.FlagSet) *luksFlags {
	return &luksFlags{
		dev:      fs.String("d", "", ""),
		stateDir: fs.String("state-dir", "", ""),
		timeout:  fs.Duration("timeout", pin.DefaultTimeout, ""),
	}
}

func (f *luksFlags) volume(env *Env) (*luks.Volume, error) {
	if *f.dev == "" {
		return nil, command.Usagef("which device? give it with -d DEV")
	}
	dir := *f.stateDir
	if dir == "" {
		dir = env.Getenv("TETHER_LUKS_STATE_DIR")
	}
	return &luks.Volume{
		Path:       *f.dev,
		StateDir:   dir,
		Log:        prefixWriter{env.Stderr},
		PinOptions: pin.Options{Timeout: *f.timeout, Warn: env.Stderr},
	}, nil
}

// prefixWriter marks tether's informational lines on stderr.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := fmt.Fprintf(p.w, "tether: %s", b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// luksError turns the luks package's errors into advice.
func luksError(err error, dev string) error {
	var full *luks.FullError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, luks.ErrLUKS1):
		return command.WithHint(err, "convert it with \"cryptsetup convert --type luks2 %s\" (back up the header first: cryptsetup luksHeaderBackup), or use clevis luks bind, which handles LUKS1 with LUKSMeta", dev)
	case errors.Is(err, luks.ErrNotLUKS):
		return command.WithHint(err, "check the device name (lsblk -f); to encrypt an existing filesystem in place use \"tether luks encrypt -d %s PIN CONFIG\"", dev)
	case errors.Is(err, luks.ErrWrongKey):
		return command.WithHint(err, "check the passphrase or key file; with a key file, trailing newlines count")
	case errors.Is(err, luks.ErrReencrypting):
		resume := "cryptsetup reencrypt --resume-only "
		if fi, serr := os.Stat(dev); serr == nil && fi.Mode().IsRegular() {
			resume += "--force-offline-reencrypt " // cryptsetup refuses image files without it
		}
		return command.WithHint(err, "finish it first: \"tether luks encrypt -d %s ...\" (the same command as before) resumes an interrupted tether encryption, \"%s%s\" any other", dev, resume, dev)
	case errors.As(err, &full):
		return command.WithHint(err, "remove tokens you no longer need (tether luks list, cryptsetup token remove), or choose a smaller policy (fewer sss children)")
	case errors.Is(err, os.ErrNotExist):
		return command.WithHint(err, "check the device or image file name")
	case errors.Is(err, os.ErrPermission):
		return command.WithHint(err, "LUKS headers and tether's state directory need root: run with sudo")
	}
	return err
}

// readKey reads an existing passphrase: from a key file (used byte for
// byte, as cryptsetup --key-file does), from stdin with "-" (one line: a
// trailing newline is dropped, as cryptsetup does for piped passphrases),
// or from a prompt on the terminal.
func readKey(env *Env, keyFile, dev string) ([]byte, error) {
	switch keyFile {
	case "-":
		b, err := io.ReadAll(io.LimitReader(env.Stdin, 8<<20+1))
		if err != nil {
			return nil, fmt.Errorf("read the passphrase from stdin: %w", err)
		}
		if len(b) > 8<<20 {
			return nil, errors.New("the key on stdin is larger than 8 MiB")
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		if len(b) == 0 {
			return nil, errors.New("no passphrase on stdin")
		}
		return b, nil
	case "":
		f, ok := env.Stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return nil, command.WithHint(errors.New("an existing passphrase of the volume is needed and stdin is not a terminal"),
				"give it with -k KEYFILE, or on stdin with -k -")
		}
		fmt.Fprintf(env.Stderr, "Enter an existing passphrase of %s: ", dev)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.Stderr)
		if err != nil {
			return nil, fmt.Errorf("read the passphrase: %w", err)
		}
		if len(b) == 0 {
			return nil, errors.New("empty passphrase")
		}
		return b, nil
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("key file %s is empty", keyFile)
	}
	return b, nil
}

// slotFlag is an optional keyslot number (-1 when not given).
func slotFlag(fs *flag.FlagSet, name string) *int { return fs.Int(name, -1, "") }

func pinConfig(args []string) (string, json.RawMessage, error) {
	if len(args) != 2 {
		return "", nil, command.Usagef("want PIN and CONFIG, e.g. tang '{\"url\":\"http://keys.lan\"}'")
	}
	cfg := json.RawMessage(args[1])
	if !json.Valid(cfg) {
		return "", nil, command.WithHint(fmt.Errorf("configuration is not valid JSON: %s", args[1]),
			`quote it for the shell: '{"url":"http://keys.lan"}'`)
	}
	return args[0], cfg, nil
}

const luksBindUsage = `Usage: tether luks bind -d DEV [-k KEYFILE|-] [-s SLOT] [--key-slot N] [-y] [--pin-file F] PIN CONFIG

Bind a LUKS2 volume to a pin: add a keyslot with a new random passphrase
and store the passphrase, encrypted by the pin, in a LUKS2 token. The volume
then unlocks wherever the pin's policy holds (tether luks unlock, clevis
luks unlock, the boot integration).

Steps: verify the existing passphrase (cryptsetup open --test-passphrase),
back up the header to the state directory, generate a passphrase (the
base64url text of 40 random bytes, as clevis 20 does), encrypt it with
PIN, add it as a keyslot with PBKDF2 at 1000 iterations and the volume's
hash (a random 320-bit key needs no stretching; clevis and
systemd-cryptenroll do the same), check that the new keyslot opens, store
the token. If anything fails, exactly what was added is removed. If
tether dies halfway, the next tether luks command on the volume finishes
or rolls back the change (see tether luks repair).

For pins clevis knows (tang, tpm2, and sss made of them) the token is
clevis's own ("type":"clevis"): stock clevis unlocks the volume and tether
unlocks volumes bound by clevis. Other pins get a "tether" token of the
same layout (docs/LUKS.md).

The existing passphrase is asked for on the terminal, read from KEYFILE
(byte for byte, as cryptsetup --key-file), or from stdin with -k - (one
line; the trailing newline is dropped).

Options:
  -k KEYFILE      existing passphrase or key file; "-" reads stdin
  -s SLOT         keyslot for the new key (default: the first free one)
  --key-slot N    the keyslot the existing passphrase opens (default:
                  tried slot by slot, unbound slots first)
  -y              trust the Tang advertisement without a thumbprint
  --pin-file F    the PIN of a tpm2 binding made "with_pin" (its first
                  line; /dev/fd/N for a pipe); default: asked on the terminal
` + luksCommon + `
Security: the new passphrase never touches argv or disk unencrypted; it
goes to cryptsetup on a pipe. The header backup holds every keyslot of
its time and is deleted when the change is complete.

Examples:
  $ sudo tether luks bind -d /dev/sda2 tang '{"url":"http://keys.lan","thp":"9C8h..."}'
  $ printf '%s' "$PASS" | sudo tether luks bind -d disk.img -k - sss \
      '{"t":1,"pins":{"tang":[{"url":"http://a"},{"url":"http://b"}]}}' -y
`

func luksBindCmd() *command.Command {
	return luksCommand("luks bind", "bind a LUKS2 volume to a pin (clevis compatible)", luksBindUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			keyFile := fs.String("k", "", "")
			slot := slotFlag(fs, "s")
			keySlot := slotFlag(fs, "key-slot")
			trust := fs.Bool("y", false, "")
			pinFile := fs.String("pin-file", "", "")
			return func(env *Env, v *luks.Volume, args []string) error {
				name, cfg, err := pinConfig(args)
				if err != nil {
					return err
				}
				v.PinOptions.Trust = *trust
				v.PinOptions.PIN = pinAsker(env, *pinFile)
				// Check the device before asking for a passphrase.
				if _, err := v.Header(); err != nil {
					return luksError(err, v.Path)
				}
				key, err := readKey(env, *keyFile, v.Path)
				if err != nil {
					return err
				}
				defer clear(key)
				n, err := v.Bind(context.Background(), luks.BindOptions{Pin: name, Config: cfg, Key: key, KeySlot: *keySlot, Slot: *slot})
				if err != nil {
					cmd := "tether luks bind -d " + v.Path
					if *keyFile != "" {
						cmd += " -k " + *keyFile
					}
					return plainCredentialsHint(luksError(err, v.Path), cmd, name, cfg)
				}
				fmt.Fprintf(env.Stderr, "tether: bound keyslot %d of %s to %s\n", n, v.Path, name)
				return nil
			}
		})
}

const luksUnbindUsage = `Usage: tether luks unbind -d DEV -s SLOT

Remove the binding of keyslot SLOT: the keyslot is wiped first, then its
token (so an interruption never leaves a hidden working keyslot behind,
only a dead token that the next tether command removes). The last keyslot
of a volume is never removed.

Options:
  -s SLOT         the bound keyslot (see tether luks list)
` + luksCommon + `
Example:
  $ sudo tether luks unbind -d /dev/sda2 -s 1
`

func luksUnbindCmd() *command.Command {
	return luksCommand("luks unbind", "remove a binding (its keyslot and token)", luksUnbindUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			slot := slotFlag(fs, "s")
			return func(env *Env, v *luks.Volume, args []string) error {
				if len(args) != 0 || *slot < 0 {
					return command.Usagef("want -d DEV -s SLOT and no arguments")
				}
				if err := v.Unbind(context.Background(), *slot); err != nil {
					return withListHint(luksError(err, v.Path), v.Path)
				}
				fmt.Fprintf(env.Stderr, "tether: removed the binding of keyslot %d of %s\n", *slot, v.Path)
				return nil
			}
		})
}

const luksPassUsage = `Usage: tether luks pass -d DEV -s SLOT [--pin-file F]

Decrypt the passphrase of a bound keyslot (made by tether or by clevis)
and write it to stdout, without a newline, like clevis luks pass.

Options:
  -s SLOT         the bound keyslot
  --pin-file F    the PIN of a tpm2 binding made "with_pin" (its first
                  line; /dev/fd/N for a pipe); default: asked on the terminal
` + luksCommon + `
Security: stdout is the passphrase: pipe it into a command, do not let it
land in a terminal's scrollback or a file.

Example:
  $ sudo tether luks pass -d disk.img -s 1 | sudo cryptsetup open --test-passphrase --key-slot 1 --key-file - disk.img
`

func luksPassCmd() *command.Command {
	return luksCommand("luks pass", "print the passphrase of a bound keyslot", luksPassUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			slot := slotFlag(fs, "s")
			pinFile := fs.String("pin-file", "", "")
			return func(env *Env, v *luks.Volume, args []string) error {
				if len(args) != 0 || *slot < 0 {
					return command.Usagef("want -d DEV -s SLOT and no arguments")
				}
				v.PinOptions.PIN = pinAsker(env, *pinFile)
				pass, err := v.Passphrase(context.Background(), *slot)
				if err != nil {
					return withListHint(luksError(err, v.Path), v.Path)
				}
				defer clear(pass)
				_, err = env.Stdout.Write(pass)
				return err
			}
		})
}

const luksListUsage = `Usage: tether luks list -d DEV [-s SLOT]

List the bindings (clevis and tether tokens) of a LUKS2 volume, one line
per keyslot, in clevis's format: SLOT: PIN 'CONFIG'. For tang the config
names the thumbprint of the signing key the binding trusted. Bindings
whose configuration holds a credential (smb, https, managed) are shown as
SLOT: PIN(WHERE) instead: where the key comes from, and for smb and https
whether their credentials are in the clear or which pin protects them,
never the password or identity. Interrupted changes are reported on stderr. list reads the
header only: it needs no network and changes nothing.

Options:
  -s SLOT         list only this keyslot
` + luksCommon + `
Example:
  $ tether luks list -d disk.img
  1: tang '{"thp":"9C8h...","url":"http://keys.lan"}'
  2: smb(\\nas\keys\ha.key, credentials protected by tang(http://keys.lan))
`

func luksListCmd() *command.Command {
	return luksCommand("luks list", "list the bindings of a LUKS2 volume", luksListUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			slot := slotFlag(fs, "s")
			return func(env *Env, v *luks.Volume, args []string) error {
				if len(args) != 0 {
					return command.Usagef("list takes no arguments")
				}
				h, err := v.Header()
				if err != nil {
					return luksError(err, v.Path)
				}
				for _, b := range luks.Bindings(h) {
					if *slot >= 0 && b.Slot != *slot {
						continue
					}
					if b.Err != nil {
						fmt.Fprintf(env.Stdout, "%d: ? (%v)\n", b.Slot, b.Err)
						continue
					}
					name, cfg, err := pin.ConfigOf(b.JWE)
					if err != nil {
						// Pins whose configuration is not rebuilt (it would
						// need a password or a device identity) are described:
						// where the key comes from, never a credential.
						fmt.Fprintf(env.Stdout, "%d: %s\n", b.Slot, pin.Describe(b.JWE))
						continue
					}
					fmt.Fprintf(env.Stdout, "%d: %s '%s'\n", b.Slot, name, cfg)
				}
				printLeftovers(env, h, v.Path)
				for _, w := range h.Warnings {
					fmt.Fprintf(env.Stderr, "tether: warning: %s\n", w)
				}
				return nil
			}
		})
}

const luksRepairUsage = `Usage: tether luks repair -d DEV

Finish or roll back binding changes that were interrupted (power loss,
kill -9): a bind that had not stored its token loses its keyslot again, a
regen whose new binding was stored finishes removing the old one, tokens
left for wiped keyslots are removed. bind, unbind and regen do this first
by themselves; list and report only show what is left.

Options:
` + luksCommon

func luksRepairCmd() *command.Command {
	return luksCommand("luks repair", "finish or roll back interrupted binding changes", luksRepairUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			return func(env *Env, v *luks.Volume, args []string) error {
				if len(args) != 0 {
					return command.Usagef("repair takes no arguments")
				}
				_, err := v.Repair(context.Background())
				return luksError(err, v.Path)
			}
		})
}

const luksRegenUsage = `Usage: tether luks regen -d DEV -s SLOT [-k KEYFILE|-] [-y] [--pin-file F] [PIN CONFIG]

Rebind keyslot SLOT with a fresh passphrase, for example after the Tang
server rotated its keys. The binding's passphrase is decrypted, a new
keyslot with a new passphrase is added and verified, its token stored, and
only then the old keyslot and token are removed. The new binding may get
another keyslot number; regen prints it.

Without PIN CONFIG the policy is rebuilt from the old binding; for tang the
new advertisement is trusted because the old signing key (kept hidden by
the server after rotation) signs it when asked by its thumbprint. A tpm2
part is sealed again to the PCR values of now, also inside sss; one made
"with_pin" keeps its PIN (asked once, to decrypt the old binding).

Options:
  -s SLOT         the bound keyslot to regenerate
  -k KEYFILE      an existing passphrase to use if the old binding can no
                  longer be decrypted ("-": stdin)
  -y              trust the Tang advertisement without a thumbprint
  --pin-file F    the PIN of a tpm2 binding made "with_pin" (its first
                  line; /dev/fd/N for a pipe); default: asked on the terminal
` + luksCommon + `
Example:
  $ sudo tether luks report -d /dev/sda2 || sudo tether luks regen -d /dev/sda2 -s 1
`

func luksRegenCmd() *command.Command {
	return luksCommand("luks regen", "rebind a keyslot with a fresh passphrase (after key rotation)", luksRegenUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			slot := slotFlag(fs, "s")
			keyFile := fs.String("k", "", "")
			trust := fs.Bool("y", false, "")
			pinFile := fs.String("pin-file", "", "")
			return func(env *Env, v *luks.Volume, args []string) error {
				if *slot < 0 {
					return command.Usagef("which keyslot? give it with -s SLOT")
				}
				v.PinOptions.PIN = pinAsker(env, *pinFile)
				o := luks.RegenOptions{Slot: *slot}
				var err error
				if len(args) > 0 {
					if o.Pin, o.Config, err = pinConfig(args); err != nil {
						return err
					}
				}
				v.PinOptions.Trust = *trust
				if *keyFile != "" {
					if o.Key, err = readKey(env, *keyFile, v.Path); err != nil {
						return err
					}
					defer clear(o.Key)
				}
				n, err := v.Regen(context.Background(), o)
				if err != nil {
					if _, ok := errors.AsType[*pin.PlainCredentialsError](err); ok {
						return plainCredentialsHint(err, fmt.Sprintf("tether luks regen -d %s -s %d", v.Path, *slot), o.Pin, o.Config)
					}
					err = luksError(err, v.Path)
					if !command.HasHint(err) {
						err = command.WithHint(err, "if the binding's server is gone for good, give an existing passphrase with -k and a new PIN CONFIG")
					}
					return err
				}
				fmt.Fprintf(env.Stderr, "tether: keyslot %d of %s is rebound as keyslot %d\n", *slot, v.Path, n)
				return nil
			}
		})
}

const luksReportUsage = `Usage: tether luks report -d DEV

Check every binding's Tang keys against what the servers advertise now
(GET /adv). A binding whose key is no longer advertised was made before a
key rotation: it still unlocks while the server keeps the old key, but
should be regenerated so the old key can be deleted.

Exit status: 0 all current, 1 some binding uses a rotated key or could not
be checked.

Options:
` + luksCommon + `
Example:
  $ tether luks report -d disk.img
  1: tang(http://keys.lan): rotated key at http://keys.lan
`

func luksReportCmd() *command.Command {
	return luksCommand("luks report", "report bindings that use rotated Tang keys", luksReportUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			return func(env *Env, v *luks.Volume, args []string) error {
				if len(args) != 0 {
					return command.Usagef("report takes no arguments")
				}
				h, err := v.Header()
				if err != nil {
					return luksError(err, v.Path)
				}
				checks, err := v.Report(context.Background())
				if err != nil {
					return luksError(err, v.Path)
				}
				if len(checks) == 0 {
					fmt.Fprintf(env.Stderr, "tether: %s has no clevis or tether bindings\n", v.Path)
				}
				stale, unknown := 0, 0
				for _, c := range checks {
					state := "ok"
					switch {
					case len(c.Rotated) > 0:
						stale++
						state = "rotated key at " + strings.Join(c.Rotated, ", ")
					case len(c.Unknown) > 0:
						unknown++
						state = "unknown: " + strings.Join(c.Unknown, "; ")
					}
					fmt.Fprintf(env.Stdout, "%d: %s: %s\n", c.Slot, c.Policy, state)
				}
				printLeftovers(env, h, v.Path)
				if stale > 0 {
					return command.WithHint(fmt.Errorf("%d binding(s) of %s use keys their servers no longer advertise", stale, v.Path),
						"rebind them with \"tether luks regen -d %s -s SLOT\"; they still unlock until the old keys are deleted", v.Path)
				}
				if unknown > 0 {
					return fmt.Errorf("%d binding(s) of %s could not be checked", unknown, v.Path)
				}
				return nil
			}
		})
}

const luksUnlockUsage = `Usage: tether luks unlock -d DEV [-n NAME] [--test] [--readonly] [--pin-file F]

Unlock a LUKS2 volume with its bindings. Every binding is tried at once,
each bounded by --timeout, so one dead server costs nothing when another
answers; the volume is opened with the keyslot of the first binding that
answers. cryptsetup is always told which keyslot to use, so it never
spends seconds on argon2 passphrase slots first.

Options:
  -n NAME         device-mapper name (default luks-UUID, as clevis)
  --test          only check that a binding opens the volume (cryptsetup
                  open --test-passphrase); needs no device-mapper
  --readonly      open read-only
  --pin-file F    the PIN of a tpm2 binding made "with_pin" (its first
                  line; /dev/fd/N for a pipe); default: asked on the terminal
` + luksCommon + `
Examples:
  $ sudo tether luks unlock -d /dev/sda2 -n data && mount /dev/mapper/data /srv
  $ tether luks unlock -d disk.img --test
`

func luksUnlockCmd() *command.Command {
	return luksCommand("luks unlock", "unlock a LUKS2 volume with its bindings, all tried at once", luksUnlockUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			name := fs.String("n", "", "")
			test := fs.Bool("test", false, "")
			readonly := fs.Bool("readonly", false, "")
			pinFile := fs.String("pin-file", "", "")
			return func(env *Env, v *luks.Volume, args []string) error {
				if len(args) != 0 {
					return command.Usagef("unlock takes no arguments")
				}
				h, err := v.Header()
				if err != nil {
					return luksError(err, v.Path)
				}
				// Every binding is tried at once, each against its own
				// deadline: a PIN is asked for before they start.
				v.PinOptions.PIN = pinAsker(env, *pinFile)
				var jwes []*jose.JWE
				for _, b := range luks.Bindings(h) {
					if b.Err == nil {
						jwes = append(jwes, b.JWE)
					}
				}
				if err := askFirst(v.PinOptions, jwes...); err != nil {
					return err
				}
				o := luks.UnlockOptions{}
				if !*test {
					o.Name = *name
					if o.Name == "" {
						o.Name = "luks-" + h.UUID
					}
					if !luks.DeviceMapperAvailable() {
						return command.WithHint(luks.ErrNoDeviceMapper, "use --test to check that a binding unlocks it, or load dm_crypt (modprobe dm_crypt)")
					}
					if *readonly {
						o.Open = append(o.Open, "--readonly")
					}
				}
				u, err := v.Unlock(context.Background(), o)
				if err != nil {
					return luksError(err, v.Path)
				}
				if o.Name != "" {
					fmt.Fprintf(env.Stderr, "tether: opened %s as /dev/mapper/%s with keyslot %d (%s)\n", v.Path, o.Name, u.Slot, u.Policy)
				} else {
					fmt.Fprintf(env.Stderr, "tether: keyslot %d of %s unlocks (%s)\n", u.Slot, v.Path, u.Policy)
				}
				return nil
			}
		})
}

const luksEncryptUsage = `Usage: tether luks encrypt -d DEV [-y] [--force] [--recovery-file PATH | --no-recovery] PIN CONFIG

Encrypt an existing filesystem or partition in place and bind it: tether
runs cryptsetup reencrypt --encrypt --reduce-device-size 32M under a
temporary key, adds a recovery passphrase, binds the volume to PIN and
removes the temporary key. Progress goes to stderr. The binding is made
first, before anything is written: a server that is down or a
configuration the pin refuses stops the command with the device untouched.

The recovery passphrase (160 random bits) is, by default, printed on
stdout once, at the end, without a newline when stdout is not a terminal
(so "> FILE" gives a file cryptsetup --key-file takes as it is); until then
it is kept in the state directory (if that is lost, as a tmpfs in a power
cut, the rerun makes a new one: only the last one printed is valid; use
--recovery-file or --no-recovery for unattended runs).

--recovery-file PATH writes it to PATH instead (mode 0600, the bare
passphrase), before its keyslot is added, so an interrupted run never
loses it; PATH must not exist, its directory must. --no-recovery adds
none: the binding (TPM, network) is then the only way in, and losing it
loses the data.

The last 32 MiB of DEV must be unused (the data moves to make room for the
LUKS2 header): for ext2/3/4 tether checks it and says how to make room (an
image file grows with truncate; a partition's filesystem shrinks with
resize2fs); other content needs --force after you made room. DEV must not
be mounted and must be at least 48 MiB.

Resumable at any point: if the run is interrupted (power loss, kill -9),
run the same command again. It starts over if cryptsetup had not yet
written the LUKS2 header (nothing is encrypted before that), resumes the
encryption (running cryptsetup's crash recovery when needed, and
completing the header itself where cryptsetup 2.6 cannot), or finishes the
remaining steps.

Security: while the run is unfinished, the temporary key is stored in the
LUKS2 header in clear (its subsystem label, "tether-encrypt:KEY"), so that
it survives a power cut with the data it opens: whoever can read the
device can read the key, as they can read the data not yet encrypted.
The key is also in cryptsetup's command line (--subsystem) while it runs,
and in blkid's world-readable cache if root runs blkid meanwhile; it opens
only keyslot 0 of that header. At the end its keyslot is wiped and the
label cleared (docs/LUKS.md). Keep a backup: on SSDs and thin storage old
blocks (plaintext, the old keyslot) may survive in-place encryption.

Options:
  -y                   trust the Tang advertisement without a thumbprint
  --force              do not check that the last 32 MiB are free
  --recovery-file PATH write the recovery passphrase to PATH (0600)
  --no-recovery        no recovery passphrase: the binding only
` + luksCommon + `
Examples:
  $ sudo tether luks encrypt -d /dev/sdb1 --recovery-file /media/usb/sdb1.key tang '{"url":"http://keys.lan","thp":"9C8h..."}'
  $ sudo cryptsetup open --test-passphrase --key-file /media/usb/sdb1.key /dev/sdb1
  $ sudo tether luks encrypt -d data.img --no-recovery tpm2 '{"pcr_ids":"7"}'
  $ truncate -s +32M data.img   # an image file whose filesystem fills it
`

func luksEncryptCmd() *command.Command {
	return luksCommand("luks encrypt", "encrypt a filesystem in place and bind it (resumable)", luksEncryptUsage,
		func(fs *flag.FlagSet) func(*Env, *luks.Volume, []string) error {
			trust := fs.Bool("y", false, "")
			force := fs.Bool("force", false, "")
			recoveryFile := fs.String("recovery-file", "", "")
			noRecovery := fs.Bool("no-recovery", false, "")
			return func(env *Env, v *luks.Volume, args []string) error {
				name, cfg, err := pinConfig(args)
				if err != nil {
					return err
				}
				if *noRecovery && *recoveryFile != "" {
					return command.Usagef("--no-recovery and --recovery-file exclude each other")
				}
				v.PinOptions.Trust = *trust
				o := luks.EncryptOptions{
					Pin: name, Config: cfg, Force: *force, Progress: env.Stderr,
					RecoveryFile: *recoveryFile, NoRecovery: *noRecovery,
				}
				if !*noRecovery && *recoveryFile == "" {
					o.Recovery = env.Stdout
				}
				slot, err := v.Encrypt(context.Background(), o)
				var done *luks.AlreadyBoundError
				if errors.As(err, &done) {
					fmt.Fprintf(env.Stderr, "tether: %s is %v\n", v.Path, err)
					return nil
				}
				if err != nil {
					if _, ok := errors.AsType[*pin.PlainCredentialsError](err); ok {
						// Nothing was lost: the same command with a fixed
						// configuration resumes and binds.
						return plainCredentialsHint(err, "tether luks encrypt -d "+v.Path, name, cfg)
					}
					if _, ok := errors.AsType[*luks.BindFirstError](err); ok {
						return command.WithHint(err, "%s is untouched: make the binding work (is the server up? tether adv URL checks a tang or tether server) and run the same command again", v.Path)
					}
					var ne *luks.NotEncryptableError
					if errors.As(err, &ne) && ne.Hint != "" {
						return command.WithHint(err, "%s", ne.Hint)
					}
					if !errors.Is(err, luks.ErrLUKS1) && !errors.Is(err, os.ErrNotExist) {
						return command.WithHint(err, "run the same command again: it resumes where it stopped")
					}
					return luksError(err, v.Path)
				}
				switch {
				case *noRecovery:
					fmt.Fprintf(env.Stderr, "tether: %s is encrypted and bound (keyslot %d); it has no recovery passphrase: the binding is the only way in\n", v.Path, slot)
				case *recoveryFile != "":
					fmt.Fprintf(env.Stderr, "tether: %s is encrypted and bound (keyslot %d); the recovery passphrase is in %s (cryptsetup --key-file takes it as it is)\n", v.Path, slot, *recoveryFile)
				default:
					endLineOnTerminal(env)
					fmt.Fprintf(env.Stderr, "tether: %s is encrypted and bound (keyslot %d); the recovery passphrase is on stdout: write it down, it is not shown again\n", v.Path, slot)
				}
				return nil
			}
		})
}

const luksCreateUsage = `Usage: tether luks create FILE --size SIZE [--fs ext4] [-y] PIN CONFIG

Create a new LUKS2 container file of SIZE bytes (suffixes K, M, G, T),
bound to PIN, with a recovery passphrase printed on stdout, once (without
a newline when stdout is not a terminal: "> FILE" gives a file cryptsetup
--key-file takes as it is). FILE must not exist; it is created with mode
0600.

With --fs ext4 the container gets an ext4 filesystem. With device-mapper
tether opens the new volume and runs mkfs.ext4 inside; without it (some
containers and VMs) tether makes the filesystem in the plain file first and
encrypts it in place, which writes the whole file once (see tether luks
encrypt; an interrupted run resumes with tether luks encrypt -d FILE).

Options:
  --size SIZE     the size of the file (required; at least 64M)
  --fs ext4       make an ext4 filesystem inside
  -y              trust the Tang advertisement without a thumbprint
` + luksCommon + `
Example:
  $ tether luks create cloud_container.img --size 2G --fs ext4 tang '{"url":"http://keys.lan"}' -y > recovery.txt
`

func luksCreateCmd() *command.Command {
	return &command.Command{
		Name:    "luks create",
		Summary: "create a new bound LUKS2 container file",
		Usage:   luksCreateUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			lf := addLuksFlags(fs)
			trust := fs.Bool("y", false, "")
			size := fs.String("size", "", "")
			fsType := fs.String("fs", "", "")
			return func(env *Env, args []string) error {
				if len(args) != 3 {
					return command.Usagef("want FILE PIN CONFIG")
				}
				*lf.dev = args[0]
				v, err := lf.volume(env)
				if err != nil {
					return err
				}
				name, cfg, err := pinConfig(args[1:])
				if err != nil {
					return err
				}
				if *size == "" {
					return command.Usagef("how big? give the size with --size, e.g. --size 1G")
				}
				n, err := parseSize(*size)
				if err != nil {
					return command.Usagef("--size %s: %v", *size, err)
				}
				v.PinOptions.Trust = *trust
				slot, err := v.Create(context.Background(), luks.CreateOptions{
					Size: n, FS: *fsType, Pin: name, Config: cfg, Recovery: env.Stdout, Progress: env.Stderr,
				})
				if err != nil {
					if _, ok := errors.AsType[*pin.PlainCredentialsError](err); ok {
						cmd := "tether luks create --size " + *size
						if *fsType != "" {
							cmd += " --fs " + *fsType
						}
						return plainCredentialsHint(err, cmd+" "+v.Path, name, cfg)
					}
					if errors.Is(err, os.ErrExist) {
						return command.WithHint(err, "create never overwrites: choose a new file name, or bind an existing volume with tether luks bind")
					}
					return luksError(err, v.Path)
				}
				endLineOnTerminal(env)
				fmt.Fprintf(env.Stderr, "tether: created %s, bound in keyslot %d; the recovery passphrase is on stdout: write it down, it is not shown again\n", v.Path, slot)
				return nil
			}
		},
	}
}

// endLineOnTerminal ends the line of a recovery passphrase printed on a
// terminal. Redirected, stdout holds the bare passphrase, which cryptsetup
// --key-file takes byte for byte (a newline would be part of it).
func endLineOnTerminal(env *Env) {
	if f, ok := env.Stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintln(env.Stdout)
	}
}

// parseSize parses sizes like 4096, 512K, 128M, 1G, 2T (powers of 1024;
// an optional "iB" or "B" suffix is accepted).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	var n int64
	if _, err := fmt.Sscan(t, &n); err != nil || n <= 0 || fmt.Sprint(n) != t {
		return 0, errors.New("not a size (examples: 512M, 4G)")
	}
	if n > (1<<62)/mult {
		return 0, errors.New("too large")
	}
	return n * mult, nil
}

func withListHint(err error, dev string) error {
	if command.HasHint(err) {
		return err
	}
	return command.WithHint(err, "see the bindings with \"tether luks list -d %s\"", dev)
}

func printLeftovers(env *Env, h *luks.Header, dev string) {
	if luks.EncryptUnfinished(h) {
		fmt.Fprintf(env.Stderr, "tether: warning: %s: an in-place encryption by tether luks encrypt is unfinished; its temporary key is in the header in clear (the subsystem label) until it is\n", dev)
		fmt.Fprintf(env.Stderr, "tether: hint: run the same \"tether luks encrypt -d %s ...\" command again: it finishes the job and removes the key\n", dev)
	}
	lo := luks.Leftovers(h)
	for _, l := range lo {
		fmt.Fprintf(env.Stderr, "tether: warning: interrupted change: %s\n", l.What)
	}
	if len(lo) > 0 {
		fmt.Fprintf(env.Stderr, "tether: hint: \"tether luks repair -d %s\" finishes or rolls it back (bind, unbind and regen do so first too)\n", dev)
	}
}

const luksCommon = `  -d DEV          the LUKS2 device or image file (required)
  --state-dir DIR where header backups, locks and encryption state live
                  (default $TETHER_LUKS_STATE_DIR, else /var/lib/tether/luks;
                  root only, mode 0700)
  --timeout D     bound for each pin's network exchange (default 10s)
`
