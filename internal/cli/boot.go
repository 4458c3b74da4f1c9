package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/pin"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func bootLogger(env *Env) *log.Logger { return log.New(env.Stderr, "", 0) }

const keydUsage = `Usage: tether keyd [--socket PATH]... [--crypttab FILE] [--deadline D] [--timeout D]

Serve volume keys to systemd-cryptsetup. A crypttab volume whose key file
(field 3) is keyd's socket gets its key from its own bindings (the clevis
tokens in its LUKS2 header) at boot, with nothing stored on disk:

  data  UUID=...  /run/tether/keyd.sock  luks,_netdev,nofail

systemd-cryptsetup (systemd 248 or later) connects from an abstract socket
named @<random>/cryptsetup/<volume>; keyd takes the volume from that name,
finds its device in crypttab (UUID=, PARTUUID=, LABEL=, a path), recovers
the key and writes it. While the network comes up or a server restarts,
keyd holds the connection and retries with backoff; when --deadline passes
it closes the connection without a key, and systemd-cryptsetup falls back
to its next method (the password prompt). A refusal that cannot change
(a revoked or unknown managed device, a missing container file, every
binding refusing for good) ends the wait at once; a lockdown or a disabled
or pending device is waited for, since an admin may lift it. Each volume is
served on its own:
one dead server never delays another volume. One log line per volume says
what happened; a failure says what was waited for and why keyd gave up.

A TPM binding made "with_pin" (tether luks bind ... tpm2
'{"with_pin":true,...}') is tried only when every binding without a PIN has
failed. keyd then asks for its PIN through systemd's password agents
(systemd-ask-password: the console, plymouth, or
"systemd-tty-ask-password-agent --query" over ssh) and keeps retrying the
other bindings meanwhile: whichever comes first opens the volume, and the
question is withdrawn. The PIN must be typed within --deadline. A
cancelled question ends the wait at once and the passphrase prompt follows;
the volume's next start asks again. After 3 wrong PINs keyd asks no more
until it restarts (the next boot): the TPM locks PINs out after a few more.

Sockets come from systemd (tether-keyd.socket, socket activation) or from
--socket; both may be used at once. A per-volume socket at
/run/cryptsetup-keys.d/<volume>.key is found by systemd-cryptsetup without
editing crypttab, and keeps LUKS2 token plugins as a fallback.

Options:
  --socket PATH    listen on PATH (repeatable); stale sockets are replaced
  --crypttab FILE  where volumes are looked up (default /etc/crypttab;
                   read on every request, so edits apply at once)
  --deadline D     how long to hold one volume's request (default 90s)
  --timeout D      bound for each network exchange (default 10s)

Examples:
  $ tether install systemd && systemctl daemon-reload
  $ tether keyd --socket /run/tether/keyd.sock --deadline 30s
`

func keydCmd() *command.Command {
	return &command.Command{
		Name:    "keyd",
		Summary: "serve volume keys to systemd-cryptsetup (crypttab key-file socket)",
		Usage:   keydUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			var sockets listFlag
			fs.Var(&sockets, "socket", "")
			tab := fs.String("crypttab", "/etc/crypttab", "")
			deadline := fs.Duration("deadline", boot.DefaultDeadline, "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			return func(env *Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("keyd takes no arguments")
				}
				ls, err := boot.ActivationListeners()
				if err != nil {
					return err
				}
				for _, p := range sockets {
					l, err := boot.ListenUnix(p)
					if err != nil {
						return command.WithHint(fmt.Errorf("listen on %s: %w", p, err), "keyd must run as root to create sockets under /run")
					}
					ls = append(ls, l)
				}
				if len(ls) == 0 {
					return command.Usagef("no socket: give --socket PATH, or start keyd from tether-keyd.socket")
				}
				lg := bootLogger(env)
				s := &boot.KeyServer{
					Crypttab:  *tab,
					Recoverer: boot.TokenRecoverer{Options: pin.Options{Timeout: *timeout}, PINs: &boot.PINPrompt{}},
					Deadline:  *deadline,
					Log:       lg,
				}
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				errc := make(chan error, len(ls))
				for _, l := range ls {
					lg.Printf("keyd: serving keys of %s on %s (deadline %s)", *tab, l.Addr(), *deadline)
					go func(l *net.UnixListener) { errc <- s.Serve(ctx, l) }(l)
				}
				var first error
				for range ls {
					if err := <-errc; err != nil && first == nil {
						first = err
						stop()
					}
				}
				return first
			}
		},
	}
}

const askpassUsage = `Usage: tether askpass [--dir DIR] [--crypttab FILE] [--deadline D] [--retry R] [--once] [--idle D]
       tether askpass --initramfs [--crypttab FILE]

A systemd password agent for bound volumes. It watches DIR for ask.* files
whose Id= is "cryptsetup:<device>", recovers the volume's key from its
bindings and answers with one datagram "+passphrase" on the request's
Socket=. Other requests, and volumes without bindings, are left to the other
agents (the console, plymouth). Each request is bounded by --deadline and by
its own NotAfter=, and given up at once on a refusal that cannot change (a
revoked managed device, every binding refusing for good); a volume that asks again after two answers is left to
the prompt (the key it got did not open it).

Use it when crypttab's key field stays "none" (tether-askpass.path starts
it), and inside a systemd initramfs (the dracut module installs it).

Options:
  --dir DIR        the request directory (default /run/systemd/ask-password)
  --crypttab FILE  for requests that name a volume (default /etc/crypttab)
  --deadline D     bound for one request (default 90s)
  --retry R        after the deadline, keep trying behind the prompt while
                   the request stands: "no" (default), "forever", or a
                   duration such as 10m. The reason the volume was not
                   opened is logged once; attempts are then at most 30s
                   apart, so a server that comes back is used within
                   about that long. A passphrase typed meanwhile withdraws
                   the request, and the agent stops trying.
  --initramfs      take --deadline and --retry from the initramfs
                   settings: /etc/tether/initramfs.conf (written by "tether
                   install dracut --deadline D --retry R"), then
                   tether.deadline= and tether.retry= on the kernel command
                   line (defaults 30s and forever). The dracut module runs
                   the agent this way.
  --timeout D      bound for each network exchange (default 10s)
  --once           answer the requests present now, then exit
  --idle D         exit after D without any request (default: never)
`

func askpassCmd() *command.Command {
	return &command.Command{
		Name:    "askpass",
		Summary: "answer systemd password requests for bound volumes",
		Usage:   askpassUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			dir := fs.String("dir", boot.DefaultAskDir, "")
			tab := fs.String("crypttab", "/etc/crypttab", "")
			deadline := fs.Duration("deadline", boot.DefaultDeadline, "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			once := fs.Bool("once", false, "")
			idle := fs.Duration("idle", 0, "")
			retry := fs.String("retry", "no", "")
			initramfs := fs.Bool("initramfs", false, "")
			return func(env *Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("askpass takes no arguments")
				}
				behind, err := boot.ParseRetry(*retry)
				if err != nil {
					return command.Usagef("--retry: %v", err)
				}
				dl := *deadline
				if *initramfs {
					// The settings "tether install dracut" wrote, then
					// tether.deadline= and tether.retry= on the kernel
					// command line.
					cfg := boot.LoadInitramfsConfig(boot.InitramfsConfigPath, "/proc/cmdline")
					for _, w := range cfg.Warnings {
						fmt.Fprintf(env.Stderr, "tether: warning: %s\n", w)
					}
					dl, behind = cfg.Deadline, cfg.Retry
				}
				var net *boot.EarlyNet
				if *initramfs {
					// Why a volume that needs the network was not opened:
					// dracut's networkd writes no lease files, so the
					// kernel says which card has an address.
					net = &boot.EarlyNet{HasAddr: boot.KernelHasAddr}
				}
				a := &boot.Agent{
					Net:       net,
					Dir:       *dir,
					Crypttab:  *tab,
					Recoverer: boot.TokenRecoverer{Options: pin.Options{Timeout: *timeout}},
					Deadline:  dl,
					Behind:    behind,
					Log:       bootLogger(env),
					Idle:      *idle,
				}
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				return a.Run(ctx, *once)
			}
		},
	}
}

const crypttabUsage = `Usage: tether crypttab -d DEV -n NAME [--write FILE] [--askpass | --root] [--socket PATH]

Print the crypttab line for a bound volume, or with --write put it into
FILE and print the line written. --write replaces the line of NAME and keeps
its options (nofail, headless=true, keyfile-timeout= stay; the ones below
are added; in the default mode keyfile-offset= and keyfile-erase are
dropped: systemd-cryptsetup cannot seek in a socket, and would delete
it), every other line and every comment; the file is replaced
atomically. The device is named by its LUKS UUID (an image file by its
absolute path).

  default    the key comes from tether keyd:  NAME UUID=.. /run/tether/keyd.sock luks,_netdev,nofail
  --askpass  the key field stays none; tether askpass answers the prompt
  --root     a volume the initramfs opens: none, luks,initramfs

_netdev puts the volume under remote-cryptsetup.target, set up after the
local file systems, so its key server may wait for the network. nofail
keeps the boot from waiting for it: without it, a server that is down holds
multi-user.target until someone types the volume's passphrase at the
console prompt systemd-cryptsetup falls back to — forever, on a machine
without a keyboard. Mount such volumes with _netdev,nofail in fstab too.

Example:
  $ tether crypttab -d /dev/sdb1 -n backup --write /etc/crypttab
`

func crypttabCmd() *command.Command {
	return &command.Command{
		Name:    "crypttab",
		Summary: "print or write the crypttab line of a bound volume",
		Usage:   crypttabUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			dev := fs.String("d", "", "")
			name := fs.String("n", "", "")
			write := fs.String("write", "", "")
			socket := fs.String("socket", "/run/tether/keyd.sock", "")
			askpass := fs.Bool("askpass", false, "")
			root := fs.Bool("root", false, "")
			return func(env *Env, args []string) error {
				if len(args) != 0 || *dev == "" || *name == "" {
					return command.Usagef("want -d DEV and -n NAME")
				}
				if strings.ContainsAny(*name, " \t/") {
					return command.Usagef("volume name %q must not contain blanks or slashes", *name)
				}
				e, err := crypttabEntry(*dev, *name, *socket, *askpass, *root)
				if err != nil {
					return err
				}
				if *write == "" {
					fmt.Fprintln(env.Stdout, e.String())
					return nil
				}
				line, err := writeCrypttab(*write, e)
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Stdout, line.String())
				return nil
			}
		},
	}
}

const crypttabOpenUsage = `Usage: tether crypttab open [--crypttab FILE] [--deadline D] [--timeout D] [NAME]...

Open every volume of FILE (or those named) that has bindings and is not open
yet, all at once, each bounded by --deadline (a refusal that cannot change,
such as a revoked managed device, ends the wait at once): what dracut's
initqueue hook runs before its prompt. Volumes without bindings are skipped quietly. One
line per volume says what happened; the exit status is 1 if a bound volume
was left closed.

Options:
  --crypttab FILE  default /etc/crypttab
  --deadline D     per volume (default 60s)
  --timeout D      bound for each network exchange (default 10s)

initramfs-tools uses "tether initramfs local-top" instead, which also
retries behind the prompt.
`

func crypttabOpenCmd() *command.Command {
	return &command.Command{
		Name:    "crypttab open",
		Summary: "open every bound crypttab volume that is still closed",
		Usage:   crypttabOpenUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			tab := fs.String("crypttab", "/etc/crypttab", "")
			deadline := fs.Duration("deadline", 60*time.Second, "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			return func(env *Env, args []string) error {
				ents, err := boot.ReadCrypttab(*tab)
				if err != nil {
					return err
				}
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				r := boot.TokenRecoverer{Options: pin.Options{Timeout: *timeout}}
				// The volumes that are there are opened even when a name
				// asked for is not (a boot goes on as far as it can).
				missing := missingNames(ents, args)
				n := boot.OpenCrypttab(ctx, ents, args, r, boot.Cryptsetup{}, *deadline, bootLogger(env))
				switch {
				case len(missing) > 0 && n > 0:
					return fmt.Errorf("%d bound volume(s) left closed, and %s", n, noVolumeNamed(missing[0], *tab, ents))
				case len(missing) > 0:
					hint := fmt.Sprintf("write its line first: tether crypttab -d DEV -n %s --write %s", missing[0], *tab)
					if len(ents) > 0 {
						hint = fmt.Sprintf("use a name of field 1 of %s: tether crypttab open --crypttab %[1]s %s", *tab, ents[0].Name)
					}
					return command.WithHint(errors.New(noVolumeNamed(missing[0], *tab, ents)), "%s", hint)
				case n > 0:
					return fmt.Errorf("%d bound volume(s) left closed", n)
				}
				return nil
			}
		},
	}
}

const luksRunUsage = `Usage: tether luks run -d DEV --mount DIR [-n NAME] [-o OPTS] [--deadline D] -- CMD [ARG]...

The backup-drive flow: unlock DEV with its bindings, mount it on DIR, run
CMD in DIR, then unmount and close — also when CMD fails, and when tether
is interrupted (SIGINT, SIGTERM and SIGHUP go to CMD; cleanup follows when
it exits). A signal before CMD starts stops the unlock and cleans up.

Options:
  -d DEV         the LUKS2 device or image file
  --mount DIR    where to mount it (must exist)
  -n NAME        the /dev/mapper name (default tether-run-<device>)
  -o OPTS        mount options, e.g. ro,noatime
  --deadline D   how long to wait for a binding to answer (default 60s)
  --timeout D    bound for each network exchange (default 10s)

Exit status: 0 if CMD succeeded; 1 if it failed or the volume could not be
unlocked (the message says which).

Example:
  $ tether luks run -d /dev/disk/by-label/offsite --mount /mnt/offsite -- rsync -a /srv/ /mnt/offsite/
`

func luksRunCmd() *command.Command {
	return &command.Command{
		Name:    "luks run",
		Summary: "unlock and mount a volume, run a command, then unmount and close",
		Usage:   luksRunUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			dev := fs.String("d", "", "")
			mount := fs.String("mount", "", "")
			name := fs.String("n", "", "")
			opts := fs.String("o", "", "")
			deadline := fs.Duration("deadline", 60*time.Second, "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			return func(env *Env, args []string) error {
				if *dev == "" || *mount == "" || len(args) == 0 {
					return command.Usagef("want -d DEV, --mount DIR and a command after --")
				}
				n := *name
				if n == "" {
					n = "tether-run-" + unitSafe(filepath.Base(*dev))
				}
				sigs := make(chan os.Signal, 4)
				signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
				defer signal.Stop(sigs)
				cmd := exec.Command(args[0], args[1:]...)
				cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
				cmd.Dir = *mount
				err := boot.RunMounted(context.Background(), boot.RunOptions{
					Device: *dev, Name: n, Mount: *mount, MountOptions: *opts,
					Deadline:  *deadline,
					Recoverer: boot.TokenRecoverer{Options: pin.Options{Timeout: *timeout}},
					Log:       bootLogger(env),
					Command:   cmd,
					Signals:   sigs,
				})
				var ce *boot.CommandError
				if errors.As(err, &ce) {
					return fmt.Errorf("%v; %s was unmounted and closed", err, *dev)
				}
				return err
			}
		},
	}
}

const installUsage = `Usage: tether install systemd|dracut|initramfs-tools [--root DIR] [--bin PATH] [--volume NAME]... [--heal]
       tether install initramfs-tools [--deadline D] [--retry R] [--ip SPEC]
       tether install dracut [--deadline D] [--retry R]
       tether install initramfs-tools|dracut --first-boot DEV --first-boot-recovery DEV:PATH|none [--first-boot-name NAME] PIN CONFIG

Write tether's boot integration into the system (or the tree at --root),
with PATH (default: this binary) as the tether the units and scripts run.
Every file written is printed; running it again replaces them.

  systemd          tether-keyd.socket/.service (keys for crypttab sockets),
                   tether-askpass.path/.service (password agent), the
                   systemd-cryptsetup@.service drop-in that orders volumes
                   after the socket, and remote-cryptsetup.target enabled
                   so that _netdev volumes are set up. --volume NAME adds a
                   socket /run/cryptsetup-keys.d/NAME.key. Also
                   tether-agent.service (managed-mode keep-alive, enabled;
                   it runs once the machine is enrolled) and
                   tether-agent@.service for other state directories,
                   tether-secret@.service (tether secret open at boot,
                   for each /etc/tether/secrets/NAME.jwe you enable), and
                   tether-heal.service (tether tpm heal once a boot:
                   reseals tpm2 parts whose PCRs changed when a network
                   pin proves the machine is at home), which is NOT
                   enabled: --heal enables it (or systemctl enable
                   tether-heal.service); see tether tpm heal --help.
  dracut           /usr/lib/dracut/modules.d/60tether: in a systemd
                   initramfs, tether's password agent (tether askpass
                   --initramfs: answers within the deadline, then keeps
                   trying behind the prompt) and a DHCP fallback for
                   systemd-networkd; otherwise an initqueue hook, with the
                   network on (rd.neednet=1)
  initramfs-tools  /etc/initramfs-tools/hooks/tether, scripts/local-top/tether
                   (bound volumes opened before cryptroot, the network
                   brought up only if a binding needs it, retries behind
                   the prompt), scripts/local-bottom/tether (stops them)
                   and conf.d/tether (UMASK=0077: the image is root-only)

--first-boot DEV prepares a factory image whose root is not encrypted
yet: at its first boot the initramfs encrypts DEV in place (tether luks
encrypt), binds it to PIN CONFIG and removes the temporary key, and the
boot goes on from the encrypted root, opened as /dev/mapper/NAME
(--first-boot-name, default root) with no second reboot. A power cut at
any moment is finished by the next boot. DEV is the partition's path,
PARTUUID= or PARTLABEL= (a filesystem's UUID= or LABEL= disappears under
the LUKS header). The filesystem must leave DEV's last 32 MiB free
(resize2fs), and the image must already boot with root=/dev/mapper/NAME and
that name in /etc/fstab. --first-boot-recovery says where the recovery
passphrase goes: DEV:PATH, a file on a removable medium
(LABEL=KEYS:/root.key; the medium must be in at the first boot), or none
(the binding is the only way in). The settings go to
/etc/tether/first-boot.conf (root only). initramfs-tools: the local-top
script tether-first-boot, which opens the root itself (the owner's
/etc/crypttab needs a "NAME DEV none luks,initramfs" line for the prompt
after a failure); update-initramfs -u. dracut (a systemd initramfs): module
91tether-first-boot, a service that runs before systemd-cryptsetup, which
then opens the root through the "NAME DEV none luks" line the module puts
in the initramfs's crypttab, answered by tether's password agent;
dracut -f (--no-hostonly for an image that boots on other machines).

Both initramfs targets copy, besides tether and cryptsetup, the TPM drivers,
the system's CA bundle, and the managed-mode device identity of every state
directory under /etc/tether (its private key, when it is in a file: keep
the initramfs readable by root only).

Boot settings (initramfs-tools; dracut takes --deadline and --retry),
written to /etc/tether/initramfs.conf, which the initramfs reads (rebuild
it after):
  --deadline D     how long the boot waits, network included, before the
                   passphrase prompt appears (default 30s)
  --retry R        how long tether keeps trying behind the prompt: forever
                   (default), no, or a duration such as 10m
  --ip SPEC        the initramfs network when the kernel command line has
                   no ip=: initramfs-tools' syntax, e.g. dhcp, or
                   CLIENT::GATEWAY:NETMASK::IFACE:off:DNS for a static one
The kernel command line wins: tether.deadline=, tether.retry=, ip=.
Example (a factory image: sss of the TPM's PCR 7 and a Tang server; the
recovery passphrase on the USB stick labelled KEYS):
  $ tether install initramfs-tools --first-boot PARTLABEL=root --first-boot-recovery LABEL=KEYS:/root.key \
      sss '{"t":1,"pins":{"tpm2":[{"pcr_ids":"7"}],"tang":[{"url":"http://keys.lan","thp":"9C8h..."}]}}'
  $ update-initramfs -u
and with dracut, bound to the TPM alone, with no recovery passphrase:
  $ tether install dracut --first-boot PARTLABEL=root --first-boot-recovery none \
      tpm2 '{"pcr_ids":"7"}'
  $ dracut -f --no-hostonly

See docs/BOOT.md for the ordering and what happens when a server is down.
`

// installCmd is "tether install TARGET" for one of boot.Targets.
func installCmd(target string) *command.Command {
	return &command.Command{
		Name:    "install " + target,
		Summary: installSummary[target],
		Usage:   installUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			root := fs.String("root", "/", "")
			bin := fs.String("bin", "", "")
			var vols listFlag
			fs.Var(&vols, "volume", "")
			healOn := fs.Bool("heal", false, "")
			deadline := fs.String("deadline", "", "")
			retry := fs.String("retry", "", "")
			ip := fs.String("ip", "", "")
			fbDev := fs.String("first-boot", "", "")
			fbName := fs.String("first-boot-name", "root", "")
			fbRecovery := fs.String("first-boot-recovery", "", "")
			return func(env *Env, args []string) error {
				var fb *boot.FirstBoot
				switch {
				case *fbDev != "" && target == "systemd":
					return command.Usagef("--first-boot is for install initramfs-tools and dracut: the root is encrypted in the initramfs")
				case *fbDev != "" && len(args) != 2:
					return command.Usagef("--first-boot DEV takes the policy to bind: PIN CONFIG")
				case *fbDev != "" && *fbRecovery == "":
					return command.Usagef("--first-boot needs --first-boot-recovery DEV:PATH (a file on a removable medium) or none (the binding is the only way in)")
				case *fbDev != "":
					fb = &boot.FirstBoot{Device: *fbDev, Name: *fbName, Pin: args[0], Config: args[1], Recovery: *fbRecovery}
					if err := fb.Validate(); err != nil {
						return err
					}
				case len(args) != 0:
					return command.Usagef("install %s takes no arguments", target)
				}
				if len(vols) > 0 && target != "systemd" {
					return command.Usagef("--volume is for install systemd")
				}
				if *healOn && target != "systemd" {
					return command.Usagef("--heal is for install systemd (it enables tether-heal.service)")
				}
				settings := *deadline != "" || *retry != "" || *ip != ""
				switch {
				case settings && target == "systemd":
					return command.Usagef("--deadline, --retry and --ip are for install initramfs-tools and dracut")
				case *ip != "" && target == "dracut":
					// systemd-network-generator in dracut's initramfs
					// reads the kernel command line only.
					return command.Usagef("--ip is for install initramfs-tools; with dracut put ip= on the kernel command line (e.g. ip=192.0.2.10::192.0.2.1:255.255.255.0::eth0:none), or let dracut copy this machine's network settings (hostonly)")
				}
				b := *bin
				if b == "" {
					var err error
					if b, err = os.Executable(); err != nil {
						return err
					}
					if b, err = filepath.EvalSymlinks(b); err != nil {
						return err
					}
				}
				plan, err := boot.Plan(target, b, vols)
				if err != nil {
					return err
				}
				if *healOn {
					plan = append(plan, boot.HealEnabled())
				}
				if settings {
					f, err := initramfsSettings(*root, *deadline, *retry, *ip)
					if err != nil {
						return err
					}
					plan = append(plan, f)
				}
				if fb != nil {
					more, err := fb.Files(target, b)
					if err != nil {
						return err
					}
					plan = append(plan, more...)
					tab, err := fb.CrypttabFile(*root, target)
					if err != nil {
						return err
					}
					if tab != nil {
						plan = append(plan, *tab)
					}
				}
				if err := boot.Install(*root, plan); err != nil {
					return command.WithHint(err, "run as root, or give --root DIR to install into an image")
				}
				for _, f := range plan {
					fmt.Fprintln(env.Stdout, filepath.Join(*root, f.Path))
				}
				fmt.Fprintf(env.Stderr, "tether: hint: %s\n", installNext[target])
				return nil
			}
		},
	}
}

// crypttabEntry builds the line for a bound volume.
func crypttabEntry(dev, name, socket string, askpass, root bool) (boot.CrypttabEntry, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("cryptsetup", "luksUUID", dev)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		why := strings.TrimSpace(stderr.String())
		if why == "" {
			// cryptsetup says nothing about a file that is not LUKS.
			why = fmt.Sprintf("not a LUKS device (cryptsetup luksUUID: %v)", err)
		}
		return boot.CrypttabEntry{}, command.WithHint(fmt.Errorf("read the LUKS UUID of %s: %s", dev, why),
			"give the LUKS2 device or image the volume is on")
	}
	e := boot.CrypttabEntry{Name: name, Device: "UUID=" + strings.TrimSpace(stdout.String())}
	switch {
	case root:
		// The initramfs opens it (tether crypttab open before cryptroot,
		// or the password agent in a systemd initramfs).
		e.KeyFile, e.Options = "none", []string{"luks", "initramfs"}
	case askpass:
		e.KeyFile, e.Options = "none", []string{"luks", "_netdev", "nofail"}
	default:
		e.KeyFile, e.Options = socket, []string{"luks", "_netdev", "nofail"}
	}
	if !strings.HasPrefix(dev, "/dev/") {
		// An image file: let systemd-cryptsetup find it by path, which
		// crypttab wants absolute (it is read from / at boot, not from
		// wherever this command ran).
		abs, err := filepath.Abs(dev)
		if err != nil {
			return boot.CrypttabEntry{}, err
		}
		if strings.ContainsAny(abs, " \t\n") {
			return boot.CrypttabEntry{}, command.WithHint(fmt.Errorf("crypttab cannot name %q: its fields are separated by blanks", abs),
				"move the image to a path without blanks, or link it from one (ln -s)")
		}
		e.Device = abs
	}
	return e, nil
}

// writeCrypttab puts e into file: it replaces the line of e.Name (or
// appends one), keeping every other line and comment as it was. The
// options of the line it replaces are kept (headless=, nofail,
// keyfile-timeout= are the user's choices) and e's are added to them. The
// file is replaced atomically, through a symbolic link if it is one. It
// returns the line written.
func writeCrypttab(file string, e boot.CrypttabEntry) (boot.CrypttabEntry, error) {
	if p, err := filepath.EvalSymlinks(file); err == nil {
		file = p
	}
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return e, err
	}
	var out []string
	replaced := false
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 0 && !strings.HasPrefix(f[0], "#") && f[0] == e.Name {
			if !replaced {
				if ents, err := boot.ParseCrypttab(strings.NewReader(line)); err == nil && len(ents) == 1 {
					e.Options = boot.MergeOptions(e.Options, ents[0].Options)
					if e.KeyFile != "none" {
						e.Options = dropSocketBreakers(e.Options)
					}
				}
				out = append(out, e.String()+"\n")
				replaced = true
			}
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			line += "\n"
		}
		out = append(out, line)
	}
	if !replaced {
		out = append(out, e.String()+"\n")
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(file); err == nil {
		mode = fi.Mode().Perm()
	}
	return e, atomicfile.Write(file, []byte(strings.Join(out, "")), mode)
}

// socketBreakers are crypttab options that stop systemd-cryptsetup from
// reading its key from a socket: keyfile-offset= makes it seek (a socket
// cannot), keyfile-erase makes it delete the key file (the socket every
// other volume uses too).
var socketBreakers = []string{"keyfile-offset", "keyfile-erase"}

// dropSocketBreakers removes socketBreakers from opts.
func dropSocketBreakers(opts []string) []string {
	var out []string
	for _, o := range opts {
		k, _, _ := strings.Cut(o, "=")
		if !slices.Contains(socketBreakers, k) {
			out = append(out, o)
		}
	}
	return out
}

var installSummary = map[string]string{
	"systemd":         "install the units that unlock volumes at boot",
	"dracut":          "install the dracut module that unlocks root volumes",
	"initramfs-tools": "install the initramfs-tools hook and script for root volumes",
}

var installNext = map[string]string{
	"systemd":         "run \"systemctl daemon-reload\", then point crypttab at the socket (tether crypttab -d DEV -n NAME --write /etc/crypttab)",
	"dracut":          "rebuild the initramfs: dracut -f (the module is included with crypt; -a tether forces it)",
	"initramfs-tools": "rebuild the initramfs: update-initramfs -u (boot settings: /etc/tether/initramfs.conf, or tether.deadline=, tether.retry=, ip= on the kernel command line)",
}

// unitSafe replaces every character outside [A-Za-z0-9_.-] with "_", so
// that s can be part of a unit name.
func unitSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, s)
}
