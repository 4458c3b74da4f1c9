package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// secretRefused is tether secret open's exit status for a permanent
// refusal (a PCR policy that cannot hold until the next boot, a revoked
// device): tether-secret@.service does not restart on it.
const secretRefused = 3

const secretOpenUsage = `Usage: tether secret open [--owner USER[:GROUP]] [--mode MODE] [--timeout D] [--pin-file F] JWE OUT

Decrypt the sealed secret JWE (a file made by tether encrypt or clevis
encrypt, with any pin: tpm2, tang, sss, managed...) and write it to OUT,
readable by its owner only: root, or USER (and GROUP with --mode 0440).
The file is written atomically: it gets its owner and mode before the
secret goes in, and replaces OUT only when complete; on any failure OUT is
left as it was. OUT's directory is made (mode 0711, whatever the umask)
if missing; if it exists and USER cannot pass it, a warning says so.
Nothing of the secret reaches argv, stdout or the log.

This is what tether-secret@NAME.service runs at boot, for files such as
TrueNAS's pwenc_secret that a service needs in the clear while the disk
only holds them sealed:
  /etc/tether/secrets/NAME.jwe   the sealed file
  /etc/tether/secrets/NAME.conf  optional: OPTIONS=--owner USER --mode 0400
  /run/tether/secrets/NAME       the secret, while the unit is active
A service that needs it orders itself after the unit, or lets systemd hand
it over as a credential, readable by that service alone:
  [Unit]
  Requires=tether-secret@NAME.service
  After=tether-secret@NAME.service
  [Service]
  LoadCredential=NAME:/run/tether/secrets/NAME
  (the service reads $CREDENTIALS_DIRECTORY/NAME)

Exit status: 0 written; 1 failed (a server not answering: try again);
2 wrong use; 3 refused for good (a PCR policy that does not hold in this
boot, a revoked device, a PIN needed with nobody to ask): the unit does
not restart on it.

Options:
  --owner U[:G]   owner of OUT (name or number; default root, group: U's)
  --mode MODE     permission bits of OUT, octal (default 0400); bits for
                  other users are refused
  --timeout D     bound for each network exchange (default 10s)
  --pin-file F    the PIN of a tpm2 pin sealed "with_pin" (first line;
                  /dev/fd/N for a pipe); default: asked on the terminal

Examples (as root):
  # mkdir -p /etc/tether/secrets
  # tether encrypt tpm2 '{"pcr_ids":"7"}' < /data/pwenc_secret > /etc/tether/secrets/pwenc_secret.jwe
  # tether secret open --owner www-data /etc/tether/secrets/pwenc_secret.jwe /run/tether/secrets/pwenc_secret
  # systemctl enable --now tether-secret@pwenc_secret.service
`

func secretOpenCmd() *command.Command {
	return &command.Command{
		Name:    "secret open",
		Summary: "decrypt a sealed secret file (any pin) into place, e.g. under /run at boot",
		Usage:   secretOpenUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			owner := fs.String("owner", "", "")
			mode := fs.String("mode", "0400", "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			pinFile := fs.String("pin-file", "", "")
			return func(env *Env, args []string) error {
				if len(args) != 2 {
					return command.Usagef("want JWE and OUT: the sealed file and where its secret goes")
				}
				in, out := args[0], args[1]
				perm, err := strconv.ParseUint(*mode, 8, 32)
				if err != nil || perm&^0o777 != 0 {
					return command.Usagef("--mode %q: want octal permission bits such as 0400 or 0440", *mode)
				}
				if perm&0o007 != 0 {
					return command.Usagef("--mode %s lets every user read the secret; give the reader --owner USER[:GROUP] and a mode such as 0400 or 0440", *mode)
				}
				uid, gid, err := lookupOwner(*owner)
				if err != nil {
					return err
				}
				data, err := os.ReadFile(in)
				if err != nil {
					return command.WithHint(fmt.Errorf("read the sealed secret: %w", err),
						"make it with: tether encrypt PIN CONFIG < secret > %s", in)
				}
				if len(data) > maxInput {
					return fmt.Errorf("read the sealed secret %s: larger than %d MiB", in, maxInput>>20)
				}
				j, err := jose.ParseCompact(strings.TrimSpace(string(data)))
				if err != nil {
					return command.WithHint(fmt.Errorf("%s: %w", in, err), "give a compact JWE as tether encrypt or clevis encrypt write it")
				}
				o := pin.Options{Timeout: *timeout, PIN: pinAsker(env, *pinFile)}
				if err := askFirst(o, j); err != nil {
					if errors.Is(err, errNoTerminal) {
						return command.ExitError{Code: secretRefused, Err: err}
					}
					return err
				}
				ctx, cancel := context.WithTimeout(context.Background(), *timeout+time.Second)
				defer cancel()
				secret, err := pin.Decrypt(ctx, j, o)
				if err != nil {
					err = fmt.Errorf("decrypt %s (%s): %w", in, pin.Describe(j), err)
					if pin.IsPermanent(err) {
						return command.ExitError{Code: secretRefused, Err: err}
					}
					return err
				}
				defer clear(secret)
				if err := writeSecret(out, secret, os.FileMode(perm), uid, gid); err != nil {
					return fmt.Errorf("write the secret to %s: %w; nothing was written there", out, err)
				}
				who := "root"
				if *owner != "" {
					who = *owner
					if fi, err := os.Stat(filepath.Dir(out)); err == nil && uid != 0 && fi.Mode().Perm()&0o001 == 0 {
						fmt.Fprintf(env.Stderr, "tether: warning: %s cannot reach %s: its directory is mode %04o; chmod o+x %s\n",
							*owner, out, fi.Mode().Perm(), filepath.Dir(out))
					}
				}
				fmt.Fprintf(env.Stderr, "tether: decrypted %s (%s) into %s (owner %s, mode %04o)\n", in, pin.Describe(j), out, who, perm)
				return nil
			}
		},
	}
}

const secretRegenUsage = `Usage: tether secret regen [-y] [--timeout D] [--pin-file F] JWE

Re-encrypt the sealed file JWE under its own policy, rebuilt from it as
tether luks regen does: every tpm2 part, also inside sss, is sealed to the
PCR values of now (run it after booting into the updated state), a tang
part to its server's current keys (trusted through the old signing key,
or with -y). The secret must still decrypt: inside sss another pin (tang)
does it when the tpm2 part no longer matches its PCRs. The new JWE must
decrypt to the same secret before it replaces JWE, atomically, with the
same mode; otherwise JWE is left as it was. A tpm2 part made "with_pin"
keeps its PIN.

Options:
  -y             trust a Tang advertisement without a thumbprint
  --timeout D    bound for each network exchange (default 10s)
  --pin-file F   the PIN of a tpm2 part made "with_pin" (first line;
                 /dev/fd/N for a pipe); default: asked on the terminal

Example (as root, after a kernel update and a reboot that tang unlocked):
  # tether secret regen /etc/tether/secrets/pwenc_secret.jwe
`

func secretRegenCmd() *command.Command {
	return &command.Command{
		Name:    "secret regen",
		Summary: "re-encrypt a sealed secret file under its own policy, e.g. after an update",
		Usage:   secretRegenUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			trust := fs.Bool("y", false, "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			pinFile := fs.String("pin-file", "", "")
			return func(env *Env, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want JWE: the sealed file to re-encrypt")
				}
				return secretRegen(env, args[0], pin.Options{Trust: *trust, Timeout: *timeout, Warn: env.Stderr,
					PIN: pinAsker(env, *pinFile)})
			}
		},
	}
}

const secretCloseUsage = `Usage: tether secret close OUT

Remove a secret tether secret open wrote (a missing file is not an
error). tether-secret@NAME.service runs it when stopped.

Example:
  $ sudo tether secret close /run/tether/secrets/pwenc_secret
`

func secretCloseCmd() *command.Command {
	return &command.Command{
		Name:    "secret close",
		Summary: "remove a secret tether secret open wrote",
		Usage:   secretCloseUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			return func(env *Env, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want OUT: the file tether secret open wrote")
				}
				if err := os.Remove(args[0]); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("remove the secret %s: %w", args[0], err)
				}
				return nil
			}
		},
	}
}

// secretRegen decrypts the JWE file at path, encrypts the secret again
// under the policy rebuilt from it (luks regen's rules), checks that the
// new JWE decrypts to the same secret, and replaces the file atomically,
// keeping its mode.
func secretRegen(env *Env, path string, o pin.Options) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("regen %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("regen %s: %w", path, err)
	}
	if len(data) > maxInput {
		return fmt.Errorf("regen %s: larger than %d MiB", path, maxInput>>20)
	}
	j, err := jose.ParseCompact(strings.TrimSpace(string(data)))
	if err != nil {
		return command.WithHint(fmt.Errorf("%s: %w", path, err), "give a compact JWE as tether encrypt or clevis encrypt write it")
	}
	if err := askFirst(o, j); err != nil {
		return err
	}
	ctx := context.Background()
	dctx, cancel := context.WithTimeout(ctx, o.PerTry()+time.Second)
	secret, err := pin.Decrypt(dctx, j, o)
	cancel()
	if err != nil {
		return command.WithHint(fmt.Errorf("decrypt %s (%s): %w", path, pin.Describe(j), err),
			"if no pin of its policy can decrypt it any more, encrypt the secret again from its source: tether encrypt PIN CONFIG < SECRET > %s", path)
	}
	defer clear(secret)
	name, cfg, err := pin.RegenConfig(ctx, j, o)
	if err != nil {
		return command.WithHint(fmt.Errorf("rebuild the policy of %s: %w", path, err),
			"encrypt the secret again with an explicit policy: tether decrypt < %s | tether encrypt PIN CONFIG > NEW.jwe", path)
	}
	nj, err := pin.Encrypt(ctx, name, cfg, secret, o)
	if err != nil {
		return plainCredentialsHint(err, "tether encrypt", name, cfg)
	}
	vctx, cancel := context.WithTimeout(ctx, o.PerTry()+time.Second)
	check, err := pin.Decrypt(vctx, nj, o)
	cancel()
	if err != nil || string(check) != string(secret) {
		clear(check)
		return fmt.Errorf("the re-encrypted %s does not decrypt to the same secret (%v); %s is unchanged", path, err, path)
	}
	clear(check)
	if err := atomicfile.Write(path, []byte(nj.Compact()), fi.Mode().Perm()); err != nil {
		return fmt.Errorf("replace %s: %w; it is unchanged", path, err)
	}
	fmt.Fprintf(env.Stderr, "tether: %s is re-encrypted (%s)\n", path, pin.Describe(nj))
	return nil
}

// lookupOwner resolves USER[:GROUP] (names or numbers); the group
// defaults to the user's primary group, the empty string to root.
func lookupOwner(s string) (uid, gid int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	name, group, hasGroup := strings.Cut(s, ":")
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return 0, 0, command.Usagef("--owner %s: no user %q on this system (getent passwd %s)", s, name, name)
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	if hasGroup {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return 0, 0, command.Usagef("--owner %s: no group %q on this system (getent group %s)", s, group, group)
			}
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return uid, gid, nil
}

// writeSecret writes data to path for its reader only: a temporary file
// in the same directory that nobody else can open (0600, root) gets its
// owner and mode before the secret is written into it, then replaces path
// atomically. The directory is made (0711: others may pass, not list) if
// missing.
func writeSecret(path string, data []byte, perm os.FileMode, uid, gid int) (err error) {
	dir := filepath.Dir(path)
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	// Whatever the umask (the unit's is 0077): the owner must reach the
	// file through every directory made for it.
	for _, d := range made {
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Chown(uid, gid); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
