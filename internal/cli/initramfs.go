package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/pin"
)

// The initramfs-tools scripts are glue: every decision (which volumes need
// the network, how long to wait, what to say) is made here.

// initramfsRunDir keeps the pid files and the network log; /run is moved
// into the booted system, so the log survives the boot.
const initramfsRunDir = "/run/tether"

// pendingEnv carries the first phase's leftovers to the retry process.
const pendingEnv = "TETHER_PENDING"

// initramfsConsole prints to the console and the kernel log; see
// boot.Console for what the kernel's own console level changes.
func initramfsConsole(env *Env) *boot.Console {
	c := &boot.Console{Out: env.Stderr}
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		c.Kmsg = f
		if data, err := os.ReadFile("/proc/sys/kernel/printk"); err == nil {
			if lvl, err := strconv.Atoi(strings.Fields(string(data) + " 0")[0]); err == nil && lvl > 4 {
				c.KernelEchoes = true
			}
		}
	}
	return c
}

// configureNetworking is initramfs-tools' own network setup, run by a
// shell as a background job: ip= (from the kernel command line or tether's
// config) says how, and its output goes to /run/tether/net.log instead of
// the console where the passphrase prompt is.
func configureNetworking(ip string) func() *exec.Cmd {
	return func() *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", ". /scripts/functions; starttime=$(_uptime); configure_networking")
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "IP=") {
				env = append(env, kv)
			}
		}
		cmd.Env = append(env, "IP="+ip)
		if f, err := os.OpenFile(filepath.Join(initramfsRunDir, "net.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			cmd.Stdout, cmd.Stderr = f, f
		}
		return cmd
	}
}

func earlyUnlock(env *Env, tab, config, cmdline string) (*boot.EarlyUnlock, error) {
	c := initramfsConsole(env)
	cfg := boot.LoadInitramfsConfig(config, cmdline)
	for _, w := range cfg.Warnings {
		c.Say("tether: %s", w)
	}
	ents, err := boot.ReadCrypttab(tab)
	if err != nil {
		c.Say("tether: cannot read %s: %v; cryptroot asks for every passphrase", tab, err)
		return nil, err
	}
	r := boot.TokenRecoverer{Options: pin.Options{}}
	u := &boot.EarlyUnlock{
		Crypttab: ents, Config: cfg,
		Recoverer: r, Bindings: r, Opener: boot.Cryptsetup{},
		Check:   boot.Cryptsetup{}.TestKey,
		Console: c,
	}
	// A network someone else configured (ip= for an NFS root, dropbear)
	// is used as it is: tether neither restarts nor releases it.
	if len(u.Net.Leases()) == 0 || (&boot.NetStarter{}).Started() {
		if _, err := os.Stat("/scripts/functions"); err == nil {
			u.Network = &boot.NetStarter{Command: configureNetworking(cfg.NetworkIP())}
		}
	}
	return u, nil
}

const initramfsLocalTopUsage = `Usage: tether initramfs local-top [--crypttab FILE] [--config FILE] [--cmdline FILE] [NAME]...

What initramfs-tools' scripts/local-top/tether runs before cryptroot. For
every bound volume of FILE that is still closed, at once:

  1. the network is brought up (initramfs-tools' configure_networking, in
     the background) only if a binding needs it (tang, https, smb, managed
     anywhere in its policy; tpm2-only bindings do not);
  2. the key is recovered and the volume opened, all within the deadline
     (network, name resolution and servers included);
  3. when the deadline passes, one line per volume says why it is still
     closed (console and kernel log), cryptroot's prompt appears, and
     "tether initramfs retry" keeps trying behind it: a recovered key is
     written to the prompt's FIFO, so cryptroot opens the volume itself.

The deadline and retry come from FILE (default /etc/tether/initramfs.conf,
written by "tether install initramfs-tools --deadline D --retry R --ip IP")
and the kernel command line, which wins: tether.deadline=30s,
tether.retry=forever|no|10m, ip= (initramfs-tools' syntax).

Options:
  --crypttab FILE  default /cryptroot/crypttab
  --config FILE    default /etc/tether/initramfs.conf
  --cmdline FILE   the kernel command line (default /proc/cmdline)
`

func initramfsLocalTopCmd() *command.Command {
	return &command.Command{
		Name:    "initramfs local-top",
		Summary: "unlock bound volumes in initramfs-tools' local-top (used by its script)",
		Usage:   initramfsLocalTopUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			tab := fs.String("crypttab", "/cryptroot/crypttab", "")
			config := fs.String("config", boot.InitramfsConfigPath, "")
			cmdline := fs.String("cmdline", "/proc/cmdline", "")
			return func(env *Env, args []string) error {
				u, err := earlyUnlock(env, *tab, *config, *cmdline)
				if err != nil {
					return err
				}
				u.Names = args
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				os.MkdirAll(initramfsRunDir, 0o755)
				pending := u.Run(ctx)
				if len(pending) == 0 || u.Config.Retry == 0 {
					return nil
				}
				data, _ := json.Marshal(pending)
				self, err := os.Executable()
				if err != nil {
					self = "/sbin/tether"
				}
				cmd := exec.Command(self, "initramfs", "retry", "--crypttab", *tab, "--config", *config, "--cmdline", *cmdline)
				cmd.Env = append(os.Environ(), pendingEnv+"="+string(data))
				// Not the console's input: that is the prompt's.
				cmd.Stdin = nil
				cmd.Stdout, cmd.Stderr = env.Stderr, env.Stderr
				cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
				if err := cmd.Start(); err != nil {
					u.Console.Say("tether: cannot keep trying behind the prompt: %v", err)
					return nil
				}
				os.WriteFile(filepath.Join(initramfsRunDir, boot.RetryPIDFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
				cmd.Process.Release()
				return nil
			}
		},
	}
}

const initramfsRetryUsage = `Usage: tether initramfs retry [--crypttab FILE] [--config FILE] [--cmdline FILE]

Started by "tether initramfs local-top" for the volumes it left closed:
retries with backoff (capped at 30s) behind cryptroot's prompt and gives a
recovered key to the askpass process asking for that volume. It ends when
every volume is open (by its key or the typed passphrase), when a binding
refuses for good, or when tether.retry= passes; "tether initramfs
local-bottom" stops it in any case before the real system starts.

Options: --crypttab, --config and --cmdline as for "tether initramfs local-top".
`

func initramfsRetryCmd() *command.Command {
	return &command.Command{
		Name:    "initramfs retry",
		Summary: "keep unlocking behind the passphrase prompt (started by initramfs local-top)",
		Usage:   initramfsRetryUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			tab := fs.String("crypttab", "/cryptroot/crypttab", "")
			config := fs.String("config", boot.InitramfsConfigPath, "")
			cmdline := fs.String("cmdline", "/proc/cmdline", "")
			return func(env *Env, args []string) error {
				var pending []boot.Pending
				if err := json.Unmarshal([]byte(os.Getenv(pendingEnv)), &pending); err != nil || len(pending) == 0 {
					return command.Usagef("initramfs retry is started by initramfs local-top, with the volumes left closed")
				}
				u, err := earlyUnlock(env, *tab, *config, *cmdline)
				if err != nil {
					return err
				}
				u.Config.Warnings = nil
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				u.Retry(ctx, pending)
				return nil
			}
		},
	}
}

const initramfsLocalBottomUsage = `Usage: tether initramfs local-bottom

What initramfs-tools' scripts/local-bottom/tether runs once the root is
mounted: stops the retry behind the prompt and the network setup tether
started, and releases the addresses it configured, so nothing of tether's
runs in the booted system and its own networking starts from a clean card.
`

func initramfsLocalBottomCmd() *command.Command {
	return &command.Command{
		Name:    "initramfs local-bottom",
		Summary: "stop what tether started in the initramfs (used by its script)",
		Usage:   initramfsLocalBottomUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			return func(env *Env, args []string) error {
				c := &boot.Console{Out: env.Stderr}
				for _, d := range boot.StopEarly(initramfsRunDir, boot.EarlyNet{}) {
					c.Note("tether: %s", d)
				}
				return nil
			}
		},
	}
}

const needsNetworkUsage = `Usage: tether crypttab needs-network [--crypttab FILE] [-q] [NAME]...

Print, for every volume of FILE (or those named), whether its bindings need
the network (tang, https, smb or managed anywhere in the policy) or are
local (tpm2 only). The exit status is 0 if any volume needs the network,
1 if none does. A device that cannot be found counts as needing it.

Example:
  $ tether crypttab needs-network --crypttab /etc/crypttab root
  root	network
`

func crypttabNeedsNetworkCmd() *command.Command {
	return &command.Command{
		Name:    "crypttab needs-network",
		Summary: "say whether a crypttab volume's bindings need the network",
		Usage:   needsNetworkUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			tab := fs.String("crypttab", "/etc/crypttab", "")
			quiet := fs.Bool("q", false, "")
			return func(env *Env, args []string) error {
				ents, err := boot.ReadCrypttab(*tab)
				if err != nil {
					return err
				}
				want := map[string]bool{}
				for _, a := range args {
					want[a] = true
				}
				r := boot.TokenRecoverer{}
				any := false
				for _, e := range ents {
					if len(want) > 0 && !want[e.Name] {
						continue
					}
					what := "no bindings"
					if dev, err := boot.ResolveDevice(e.Device); err != nil {
						// Unknown: the network may be needed.
						what, any = "device not found; assuming the network is needed", true
					} else if bs, err := r.Bindings(context.Background(), dev); err == nil && len(bs) > 0 {
						if boot.NeedsNetwork(bs) {
							what, any = "network", true
						} else {
							what = "local (no network)"
						}
					}
					if !*quiet {
						fmt.Fprintf(env.Stdout, "%s\t%s\n", e.Name, what)
					}
				}
				// A name no line has (a typo in a script, a line gone):
				// the network may be needed, as for a missing device.
				for _, n := range missingNames(ents, args) {
					any = true
					fmt.Fprintf(env.Stderr, "tether: warning: %s\n", noVolumeNamed(n, *tab, ents))
					if !*quiet {
						fmt.Fprintf(env.Stdout, "%s\tnot in %s; assuming the network is needed\n", n, *tab)
					}
				}
				if !any {
					return command.SilentExit(1)
				}
				return nil
			}
		},
	}
}

// missingNames returns the names asked for that no line of ents has.
func missingNames(ents []boot.CrypttabEntry, names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.ContainsFunc(ents, func(e boot.CrypttabEntry) bool { return e.Name == n }) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// noVolumeNamed says that tab has no line for name, and which it has.
func noVolumeNamed(name, tab string, ents []boot.CrypttabEntry) string {
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if len(names) == 0 {
		return fmt.Sprintf("%s has no volume %q (it has none)", tab, name)
	}
	return fmt.Sprintf("%s has no volume %q (its volumes: %s)", tab, name, strings.Join(names, ", "))
}

// initramfsSettings is the config file with the settings given to
// "tether install": the file already there is kept, the flags given
// replace its lines. A bad value is refused before anything is written.
func initramfsSettings(root, deadline, retry, ip string) (boot.InstallFile, error) {
	c := boot.DefaultInitramfsConfig()
	if data, err := os.ReadFile(filepath.Join(root, boot.InitramfsConfigPath)); err == nil {
		boot.ParseInitramfsConfig(&c, data)
		c.Warnings = nil
	}
	if deadline != "" {
		d, err := boot.ParseDeadline(deadline)
		if err != nil {
			return boot.InstallFile{}, command.Usagef("--deadline: %v", err)
		}
		c.Deadline = d
	}
	if retry != "" {
		d, err := boot.ParseRetry(retry)
		if err != nil {
			return boot.InstallFile{}, command.Usagef("--retry: %v", err)
		}
		c.Retry = d
	}
	if ip != "" {
		probe := boot.DefaultInitramfsConfig()
		boot.ParseInitramfsConfig(&probe, []byte("ip="+ip))
		if len(probe.Warnings) > 0 || strings.Count(ip, ":") > 9 {
			return boot.InstallFile{}, command.Usagef("--ip %q: want initramfs-tools' ip= syntax, e.g. dhcp, or 192.0.2.10::192.0.2.1:255.255.255.0::eth0:off:192.0.2.1", ip)
		}
		c.IP = ip
	}
	return boot.InstallFile{Path: boot.InitramfsConfigPath, Mode: 0o644, Data: boot.MarshalInitramfsConfig(c)}, nil
}
