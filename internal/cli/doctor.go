package cli

import (
	"context"
	"flag"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/internal/doctor"
	"github.com/tether-nbde/tether/pin"
)

const doctorUsage = `Usage: tether doctor [-v] [--root DIR] [--timeout D] [-d DEV]...

Check that this machine is ready to unlock its bound volumes at boot, and
say, one line per problem, what to run to fix it:

  VOLUME-OR-PART: WHAT IS WRONG; fix: COMMAND

What is checked, for every volume of /etc/crypttab that has tether or
clevis bindings or asks tether's socket for its key (and every -d DEV):
  - crypttab: the line fits how the key comes (keyd's socket, a
    per-volume socket, the password agent, the initramfs); no
    keyfile-offset= or keyfile-erase on a socket line (systemd-cryptsetup
    cannot read a socket with an offset, and would delete it); _netdev
    and nofail when a binding needs the network
  - units: tether-keyd.socket or tether-askpass.path installed and
    enabled, the systemd-cryptsetup drop-in there, the tether their
    services run there, remote-cryptsetup.target enabled for _netdev
  - the header: every token parses and names a pin tether knows; no
    unfinished encryption or interrupted binding change
  - key sources, now: each Tang server answers and still advertises the
    keys the binding was made with and a signing key it trusted (else
    the binding was made before a key rotation: regen it); each tpm2
    binding's sealed object loads on this TPM and its PCR policy still
    holds (checked against the PCRs' values, nothing is unsealed); a
    managed binding's server accepts connections (it is not asked to
    unlock: that is an event on the server); every other binding
    decrypts and opens its keyslot (cryptsetup --test-passphrase, as
    tether luks unlock --test)
  - a PIN: a volume whose every binding needs a TPM PIN (tpm2
    "with_pin", alone or in an sss that cannot do without it) does not
    unlock by itself, since nobody is asked for a PIN at boot
  - the root volume (the one / is mounted from in fstab, or a crypttab
    line with the initramfs option): tether's initramfs-tools hook or
    dracut module is installed, and every initramfs image in /boot holds
    tether, cryptsetup, the local-top script, and what the bindings need
    (ipconfig for network pins, tether-smb, a CA bundle for https, a
    TPM driver for tpm2, the managed device identity); images are listed
    with lsinitramfs or lsinitrd, or read as cpio archives

doctor changes nothing. It reads LUKS2 headers and the TPM and decrypts
binding passphrases in memory to test them: run it as root.

Options:
  -v            also print one "ok:" line per check that passed
  -d DEV        also check this LUKS2 device or image file (repeatable)
  --root DIR    check the system installed under DIR (an image, a
                chroot) instead of this one: its /etc, /boot and unit
                directories; devices and key sources are still reached
                from here, and the fixes name DIR
  --timeout D   bound for each network exchange (default 10s)

The TPM is the one tpm2-tools would use ($TPM2TOOLS_TCTI, else
/dev/tpmrm0).

Exit status: 0 no problem found; 1 problems were found (listed on
stdout); 2 wrong use.

Examples:
  $ sudo tether doctor
  volume data keyslot 1: tang server http://keys.lan:7500 rotated its keys: ...; fix: tether luks regen -d /dev/sdb1 -s 1
  units: tether-keyd.socket is installed but not enabled: it does not start at boot; fix: systemctl enable tether-keyd.socket
  $ sudo tether doctor -v --root /mnt/image
`

func doctorCmd() *command.Command {
	return &command.Command{
		Name:    "doctor",
		Summary: "check that bound volumes will unlock at boot, and say how to fix what will not",
		Usage:   doctorUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			verbose := fs.Bool("v", false, "")
			root := fs.String("root", "/", "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			var devs listFlag
			fs.Var(&devs, "d", "")
			return func(env *Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("doctor takes no arguments (volumes with -d DEV)")
				}
				o := doctor.Options{Root: *root, Timeout: *timeout, Devices: devs}
				if *verbose {
					o.OK = env.Stdout
				}
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				problems := doctor.Check(ctx, o)
				for _, p := range problems {
					fmt.Fprintln(env.Stdout, p.String())
				}
				if len(problems) > 0 {
					fmt.Fprintf(env.Stderr, "tether: doctor found %d problem(s): run the fix of each line, then tether doctor again\n", len(problems))
					return command.SilentExit(1)
				}
				fmt.Fprintln(env.Stderr, "tether: doctor found no problem")
				return nil
			}
		},
	}
}
