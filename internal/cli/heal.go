package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/internal/heal"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
)

const tpmHealUsage = `Usage: tether tpm heal [-d DEV]... [-f FILE]... [--dry-run] [--pin-file F]
                       [--allow-passphrase [-k KEYFILE|-]] [--timeout D]

Self-healing after an update: find the tpm2 parts whose PCR policy no
longer holds (firmware, boot loader or kernel changed, and with them the
PCRs the parts were sealed to) and seal them again to the PCR values of
now — only when the secret they protect is proved, right now, by a
network pin (tang, managed, https, smb) of the same binding or of another
binding of the same volume. A server answering shows that the machine is
where it belongs; the TPM never vouches for itself: every tpm2 part, also
one that still unseals, is left out of the proof.

What it looks at: the volumes of -d and the files of -f; without either,
every volume in /etc/crypttab that has bindings, and every sealed file
/etc/tether/secrets/*.jwe (what tether-secret@NAME.service opens).

Every tpm2 part, at the top of a binding or inside sss at any depth, is
checked with the TPM without unsealing it and without a PIN. Only parts
whose PCRs changed are resealed. A part the TPM refuses for another
reason (sealed by another TPM, no TPM, dictionary-attack lockout) is
reported and its binding left alone. A signed policy (pcr_pubkey) follows
its signatures and is never resealed. A part made "with_pin" is resealed
only with --pin-file: heal never asks, and cannot check the PIN against
the old part (the TPM refuses that for its PCRs first), so the PIN in the
file becomes the part's PIN.

How: inside sss only the tpm2 parts are sealed again, as fresh shares of
the same secret; the other children are kept byte for byte (a managed or
smb child keeps working, no server is asked to encrypt). A binding is
replaced as tether luks regen replaces it: a new keyslot, verified, then
the old one removed, all journalled in the header, so that an interrupted
heal is finished or rolled back by the next tether luks command and the
volume opens throughout. A file is replaced atomically, keeping its mode,
once the new JWE decrypts to the same secret.

A binding that only a passphrase can prove (a tpm2 keyslot beside the
recovery passphrase, no network binding) is healed only with
--allow-passphrase: whoever has the passphrase could then make later
unattended boots trust a boot chain they tampered with. docs/TPM2.md,
"Self-healing after updates", says when healing is safe and when not.

Output, on stdout: one block per binding or file that has a tpm2 part:
its state (ok, resealed, would reseal, not healed), each part whose PCRs
changed with the policy digest it was sealed to and the PCR values now
(neither is secret), each resealed part with the values it is sealed to,
what proved the secret, and for what is not healed, why and a fix.

Exit status: 0 every tpm2 part unseals now (with --dry-run: would, after
the heal); 1 some part does not and is not healed; 2 wrong use.

The service: tether install systemd installs tether-heal.service, which
runs "tether tpm heal" once a boot, after the network and the volumes. It
is not enabled: without it nothing is ever resealed. Turn it on with
"systemctl enable tether-heal.service" (or tether install systemd --heal);
more options for it go into /etc/tether/heal.conf as OPTIONS=..., e.g.
OPTIONS=--timeout 30s.

Options:
  -d DEV              a LUKS2 device or image file (repeatable)
  -f FILE             a sealed file, a compact JWE (repeatable)
  --crypttab FILE     where volumes are listed (default /etc/crypttab)
  --secrets DIR       where sealed files are (default /etc/tether/secrets;
                      its *.jwe)
  --dry-run           prove and report what would be resealed; change nothing
  --pin-file F        the PIN for parts made "with_pin" (its first line;
                      /dev/fd/N for a pipe); without it they are not healed
  --allow-passphrase  let a passphrase of the volume prove a binding that no
                      network pin proves (weaker: see above)
  -k KEYFILE          that passphrase ("-": stdin; default: asked on the
                      terminal)
  --timeout D         bound for each network exchange (default 10s)
  --state-dir DIR     tether luks's state directory (default
                      $TETHER_LUKS_STATE_DIR, else /var/lib/tether/luks)

Examples:
  $ sudo tether tpm heal --dry-run
  $ sudo tether tpm heal -d /dev/sda2
  $ sudo systemctl enable tether-heal.service
`

func tpmHealCmd() *command.Command {
	return &command.Command{
		Name:    "tpm heal",
		Summary: "reseal tpm2 parts whose PCRs changed, proved by a network pin (self-healing after updates)",
		Usage:   tpmHealUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			var devs, files listFlag
			fs.Var(&devs, "d", "")
			fs.Var(&files, "f", "")
			crypttab := fs.String("crypttab", "/etc/crypttab", "")
			secrets := fs.String("secrets", "/etc/tether/secrets", "")
			dryRun := fs.Bool("dry-run", false, "")
			pinFile := fs.String("pin-file", "", "")
			allowPass := fs.Bool("allow-passphrase", false, "")
			keyFile := fs.String("k", "", "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			stateDir := fs.String("state-dir", "", "")
			return func(env *Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("tpm heal takes no arguments; name volumes with -d DEV and files with -f FILE")
				}
				if *keyFile != "" && !*allowPass {
					return command.Usagef("-k gives a passphrase, which heal uses only with --allow-passphrase (it proves less than a network pin: see tether tpm heal --help)")
				}
				o := heal.Options{Pin: pin.Options{Timeout: *timeout, Warn: env.Stderr}, DryRun: *dryRun}
				if *pinFile != "" {
					o.Pin.PIN = pinAsker(env, *pinFile)
				}
				if *allowPass {
					key, err := readKey(env, *keyFile, "the volumes")
					if err != nil {
						return err
					}
					defer clear(key)
					o.Passphrase = key
				}
				dir := *stateDir
				if dir == "" {
					dir = env.Getenv("TETHER_LUKS_STATE_DIR")
				}
				named := len(devs) > 0 || len(files) > 0
				if !named {
					var err error
					if devs, err = crypttabVolumes(env, *crypttab); err != nil {
						return err
					}
					files, _ = filepath.Glob(filepath.Join(*secrets, "*.jwe"))
					sort.Strings(files)
				}
				ctx := context.Background()
				var results []heal.Result
				for _, dev := range devs {
					v := &luks.Volume{Path: dev, StateDir: dir, Log: prefixWriter{env.Stderr}}
					rs, err := heal.Volume(ctx, v, o)
					if err != nil {
						if !named && (errors.Is(err, luks.ErrNotLUKS) || errors.Is(err, luks.ErrLUKS1)) {
							continue // not a volume tether binds
						}
						results = append(results, unreadable(dev, luksError(err, dev)))
						continue
					}
					results = append(results, rs...)
				}
				for _, f := range files {
					r, err := heal.File(ctx, f, o)
					if err != nil {
						if errors.Is(err, os.ErrNotExist) {
							err = command.WithHint(err, "check the file name")
						} else if !errors.Is(err, os.ErrPermission) {
							err = command.WithHint(err, "a sealed file is a compact JWE, as tether encrypt writes it")
						}
						results = append(results, unreadable(f, err))
						continue
					}
					if r != nil {
						results = append(results, *r)
					}
				}
				failed := 0
				for _, r := range results {
					printHealResult(env.Stdout, r)
					if r.State == heal.NotHealed {
						failed++
					}
				}
				if len(results) == 0 {
					fmt.Fprintln(env.Stderr, "tether: no binding or sealed file with a tpm2 part: nothing to heal")
				}
				if failed > 0 {
					return command.WithHint(fmt.Errorf("%d binding(s) or file(s) not healed", failed),
						"why, and a fix, are in their blocks on stdout; tether tpm heal --dry-run shows what heal would do, changing nothing")
				}
				return nil
			}
		},
	}
}

// unreadable is the result for a volume or file heal could not read.
func unreadable(what string, err error) heal.Result {
	r := heal.Result{Object: what, State: heal.NotHealed, Reason: "cannot be read: " + err.Error(), Slot: -1}
	r.Fix, _ = command.Hint(err)
	return r
}

// crypttabVolumes lists the devices of file's LUKS entries that are
// present. A missing crypttab lists none; a device that is not there (a
// nofail disk unplugged) is said so and skipped.
func crypttabVolumes(env *Env, file string) ([]string, error) {
	ents, err := boot.ReadCrypttab(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if kind := crypttabKind(e); kind != "luks" {
			continue
		}
		dev, err := boot.ResolveDevice(e.Device)
		if err != nil {
			fmt.Fprintf(env.Stderr, "tether: volume %s skipped: %v\n", e.Name, err)
			continue
		}
		out = append(out, dev)
	}
	return out, nil
}

// crypttabKind is the entry's type option: luks (the default: systemd
// probes) or plain, tcrypt, bitlk, fvault2.
func crypttabKind(e boot.CrypttabEntry) string {
	for _, k := range []string{"plain", "tcrypt", "bitlk", "fvault2"} {
		if _, ok := e.Option(k); ok {
			return k
		}
	}
	return "luks"
}

// printHealResult writes one binding's or file's block.
func printHealResult(w io.Writer, r heal.Result) {
	var state string
	switch r.State {
	case heal.OK:
		state = "ok"
	case heal.Healed:
		state = "resealed"
		if r.Slot >= 0 {
			state = fmt.Sprintf("resealed as keyslot %d", r.Slot)
		}
	case heal.WouldHeal:
		state = "would reseal (dry run: nothing changed)"
	case heal.NotHealed:
		state = "not healed: " + r.Reason
	}
	if r.Policy != "" {
		r.Object += " " + r.Policy
	}
	fmt.Fprintf(w, "%s: %s\n", r.Object, state)
	for _, p := range r.Parts {
		if p.Err == nil {
			continue
		}
		var pm *tpm.PCRMismatchError
		if errors.As(p.Err, &pm) && p.Sealed != nil {
			what := "PCR " + tpm.FormatPCRs(p.Sealed.PCRs) + " changed"
			if len(p.Sealed.PCRs) > 1 {
				// The policy is one digest over all of them.
				what = "PCRs " + tpm.FormatPCRs(p.Sealed.PCRs) + " changed (one or more of them)"
			}
			fmt.Fprintf(w, "  %s: %s; sealed to policy %x; now %s %s\n",
				p.Where(), what, p.Sealed.Digest, p.Sealed.Bank, pcrValues(p.Sealed.PCRs, p.Now))
			continue
		}
		fmt.Fprintf(w, "  %s: %v\n", p.Where(), p.Err)
	}
	for _, p := range r.Resealed {
		if p.Sealed == nil {
			continue
		}
		fmt.Fprintf(w, "  %s: resealed to %s %s (policy %x)\n",
			p.Where(), p.Sealed.Bank, pcrValues(p.Sealed.PCRs, p.Now), p.Sealed.Digest)
	}
	if r.Proof != "" {
		fmt.Fprintf(w, "  proved by %s\n", r.Proof)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if r.Fix != "" {
		fmt.Fprintf(w, "  fix: %s\n", r.Fix)
	}
}

// pcrValues formats PCR values as 7=ab12…,11=cd34… (in full: they are
// not secret, and a log should let one compare them with tpm2_pcrread).
func pcrValues(pcrs []int, vals [][]byte) string {
	if len(vals) != len(pcrs) {
		return "(could not be read)"
	}
	var out []string
	for i, p := range pcrs {
		out = append(out, fmt.Sprintf("%d=%s", p, hex.EncodeToString(vals[i])))
	}
	return strings.Join(out, ",")
}
