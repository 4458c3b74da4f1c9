package servercli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// managedServerFlags declares the managed-mode flags of "tether server".
func managedServerFlags(fs *flag.FlagSet) func() (server.ManagedConfig, error) {
	listen := fs.String("managed-listen", "", "")
	src := fs.String("store", "", "")
	kek := fs.String("kek-file", "", "")
	var hooks stringList
	fs.Var(&hooks, "webhook", "")
	tangAllow := fs.String("tang-allow", "", "")
	approval := fs.Duration("approval-timeout", 5*time.Minute, "")
	rate := fs.Int("unlock-rate", 30, "")
	uiCfg := uiServerFlags(fs) // admin_user.go
	hostnames := fs.String("managed-hostname", "", "")
	return func() (server.ManagedConfig, error) {
		mc := server.ManagedConfig{Listen: *listen, Store: *src, KEKFile: *kek,
			Config: managed.Config{Webhooks: hooks, ApprovalTimeout: *approval, UnlockRate: *rate}}
		mc.UI = uiCfg()
		for _, h := range strings.Split(*hostnames, ",") {
			if h = strings.TrimSpace(h); h != "" {
				mc.Hostnames = append(mc.Hostnames, h)
			}
		}
		for _, c := range strings.Split(*tangAllow, ",") {
			if c = strings.TrimSpace(c); c == "" {
				continue
			}
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return mc, command.Usagef("--tang-allow: %v", err)
			}
			mc.TangAllow = append(mc.TangAllow, p)
		}
		if mc.Listen == "" && (mc.Store != "" || len(mc.Webhooks) > 0) {
			return mc, command.Usagef("--store and --webhook need managed mode: add --managed-listen ADDR")
		}
		return mc, nil
	}
}

// adminConnect loads the admin credentials and returns their client.
type adminConnect func() (*admin.Client, error)

// adminCmd makes one "tether admin" command. run checks its arguments
// first and then calls connect for the admin client, so a usage mistake
// is reported as one even where no admin credentials are (and nothing is
// asked, such as a new password, before the credentials are known).
func adminCmd(name, summary, usage string, extra func(fs *flag.FlagSet) func(env *command.Env, connect adminConnect, args []string) error) *command.Command {
	return &command.Command{
		Name: name, Summary: summary, Usage: usage + adminCommon,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			cfgFile := fs.String("config", "", "")
			run := extra(fs)
			return func(env *command.Env, args []string) error {
				return run(env, func() (*admin.Client, error) { return adminClient(env, *cfgFile) }, args)
			}
		},
	}
}

// adminClient loads the admin credentials (--config, else
// $TETHER_ADMIN_CONFIG, else DATA/admin.json) and returns their client.
func adminClient(env *command.Env, path string) (*admin.Client, error) {
	if path == "" {
		path = env.Getenv("TETHER_ADMIN_CONFIG")
	}
	if path == "" {
		path = filepath.Join(defaultDataDir, "admin.json")
	}
	cfg, err := admin.LoadCredentials(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, command.WithHint(err, "the server writes its admin credentials there on first start with --managed-listen; pass --config FILE if they are elsewhere, or reissue them with tether admin reset-credentials")
	}
	if err != nil {
		return nil, err
	}
	if w := admin.CredentialsModeWarning(path); w != "" {
		fmt.Fprintf(env.Stderr, "tether: warning: %s\n", w)
	}
	return admin.NewClient(cfg), nil
}

const adminCommon = `
Every admin command takes --config FILE: the admin credentials (server URL,
TLS key pin and admin token) that the server writes 0600 to DATA/admin.json
on its first start in managed mode. Default: $TETHER_ADMIN_CONFIG, else
/var/lib/tether/admin.json. Copy the file (root-only) to administer from
another host, and edit its url.
`

const adminTokenUsage = `Usage: tether admin token create [--group NAME] [--ttl D] [--note TEXT]

Make a one-time enrolment token and print it on stdout. A device enrolled
with it is enabled at once and joins the group. The token embeds the
SHA-256 of the server's TLS key, so "tether enroll" authenticates the
server from the token alone. The server keeps only a hash of it.

Options:
  --group NAME   group the device joins (its policy applies)
  --ttl D        validity (default 24h)
  --note TEXT    kept with the token for the audit log

Example:
  $ tether admin token create --group laptops --ttl 1h
`

func adminTokenCreateCmd() *command.Command {
	return adminCmd("admin token create", "make a one-time enrolment token", adminTokenUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			group := fs.String("group", "", "")
			ttl := fs.Duration("ttl", 24*time.Hour, "")
			note := fs.String("note", "", "")
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				c, err := connect()
				if err != nil {
					return err
				}
				r, err := c.CreateToken(context.Background(), admin.TokenRequest{Group: *group, TTL: policy.Duration(*ttl), Note: *note})
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Stdout, r.Token)
				fmt.Fprintf(env.Stderr, "token expires %s; it works once\n", r.Expires.Local().Format(time.RFC3339))
				return nil
			}
		})
}

const adminDeviceListUsage = `Usage: tether admin device list [--json]

List enrolled devices with their state (pending, enabled, disabled,
revoked), the reason for it, and when each was last heard from.
`

func adminDeviceListCmd() *command.Command {
	return adminCmd("admin device list", "list enrolled devices", adminDeviceListUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			asJSON := fs.Bool("json", false, "")
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				c, err := connect()
				if err != nil {
					return err
				}
				devs, err := c.Devices(context.Background())
				if err != nil {
					return err
				}
				if *asJSON {
					return json.NewEncoder(env.Stdout).Encode(devs)
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tGROUP\tSTATE\tLAST SEEN\tREASON")
				for _, d := range devs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Name, d.Group, d.State, d.LastSeen.Local().Format(time.DateTime), d.Reason)
				}
				return tw.Flush()
			}
		})
}

const adminPolicyUsage = `Usage: tether admin device policy ID POLICY
       tether admin group set NAME POLICY

Set the policy of a device or of a group. A device's fields override its
group's; unset fields inherit. POLICY is JSON:
  cidrs      allowed source networks, e.g. ["10.0.0.0/8"]; empty = any
  keepalive  heartbeat timeout ("5m"): a device not heard from for longer
             (tether agent) is disabled until an admin enables it; "-1ns"
             turns a group's keep-alive off for one device
  approval   true: every unlock waits for tether admin unlock approve
  rate       unlocks per minute (default: the server's --unlock-rate)
  pcr_quorum new PCR values a device asks the server to sign (a signed
             tpm2 binding, "pcr_signer":"managed") are approved once this
             many devices of the group reported them; 0 (default): an
             admin approves them (tether admin pcr approve)

Example:
  $ tether admin group set laptops '{"keepalive":"10m","cidrs":["192.168.1.0/24"]}'
`

func adminDevicePolicyCmd() *command.Command {
	return adminCmd("admin device policy", "set a device's policy", adminPolicyUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 2 {
					return command.Usagef("want a device ID and a policy (JSON)")
				}
				p, err := parsePolicy(args[1])
				if err != nil {
					return err
				}
				c, err := connect()
				if err != nil {
					return err
				}
				return c.SetDevicePolicy(context.Background(), args[0], p)
			}
		})
}

func adminGroupSetCmd() *command.Command {
	return adminCmd("admin group set", "set a group's policy", adminPolicyUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 2 {
					return command.Usagef("want a group name and a policy (JSON)")
				}
				p, err := parsePolicy(args[1])
				if err != nil {
					return err
				}
				c, err := connect()
				if err != nil {
					return err
				}
				return c.SetGroup(context.Background(), args[0], p)
			}
		})
}

const adminLockdownUsage = `Usage: tether admin lockdown on|off

Lockdown refuses every managed unlock at once, on every replica, until it
is turned off. Nothing is destroyed. (Tang endpoints are not affected.)
`

func adminLockdownCmd() *command.Command {
	return adminCmd("admin lockdown", "refuse every unlock at once (on|off)", adminLockdownUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
					return command.Usagef("want on or off")
				}
				c, err := connect()
				if err != nil {
					return err
				}
				if err := c.Lockdown(context.Background(), args[0] == "on"); err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "lockdown %s\n", args[0])
				return nil
			}
		})
}

const adminEnrollOpenUsage = `Usage: tether admin enroll-open on|off

Allow (on) or refuse (off, the default) enrolment without a token
(tether enroll --pin). Such a device is "pending" and unlocks nothing until
an admin approves it (tether admin device approve), but anyone who reaches
the managed port can ask, so while it is on the server limits it: 3 per
source address (IPv6: per /64), then one per 10 minutes; at most 100
devices pending at once; names of 1 to 64 ASCII letters, digits, ".", "-"
and "_". Prefer tokens (tether admin token create). The setting is in the
store: it applies to every replica.
`

func adminEnrollOpenCmd() *command.Command {
	return adminCmd("admin enroll-open", "allow enrolment without a token (on|off)", adminEnrollOpenUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
					return command.Usagef("want on or off")
				}
				c, err := connect()
				if err != nil {
					return err
				}
				if err := c.EnrollOpen(context.Background(), args[0] == "on"); err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "enrolment without a token: %s\n", args[0])
				return nil
			}
		})
}

const adminAuditUsage = `Usage: tether admin audit verify [--anchor SEQ:HASH ...]
       tether admin audit export > audit.jsonl

Every decision (enrolment, unlock allowed or denied and why, keep-alive
timeouts) and every admin change is an audit record that carries the
SHA-256 of the record before it. verify fetches the log and checks the
chain: an edited, deleted or reordered record is reported. export writes
the records as JSON lines (and stops at a broken link).

Someone who can write the store could still rewrite the whole log with
every link recomputed, or cut its end off. An anchor, a record's number
and hash kept outside the store, detects both:
  --anchor SEQ:HASH    record SEQ must have hash HASH (repeatable)
  --anchors-from FILE  every webhook event in FILE (JSON lines, as a
                       receiver logged them) is an anchor; a FILE with
                       none is refused, as it would check nothing
verify prints the head (the last record's number and hash) to keep as an
anchor, and every webhook event carries its record's "seq" and "hash", so
a webhook receiver that keeps events holds anchors as they happen.

Example:
  tether admin audit verify --anchor 1200:3f9c…e1 --anchor 1532:77ab…04
  tether admin audit verify --anchors-from /var/log/tether-events.jsonl
`

func adminAuditVerifyCmd() *command.Command {
	return adminCmd("admin audit verify", "check the audit log's hash chain", adminAuditUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			var anchors anchorList
			fs.Var(&anchors, "anchor", "")
			from := fs.String("anchors-from", "", "")
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				if *from != "" {
					if err := anchors.readEvents(*from); err != nil {
						return err
					}
				}
				ch := audit.NewChain()
				c, err := connect()
				if err != nil {
					return err
				}
				err = c.Audit(context.Background(), func(r *audit.Record) error {
					if err := ch.Next(r); err != nil {
						return err
					}
					if want, ok := anchors[r.Seq]; ok && want != ch.Head {
						return fmt.Errorf("audit record %d has hash %s, but the anchor says %s: the log was rewritten", r.Seq, ch.Head, want)
					}
					return nil
				})
				if err != nil {
					return command.WithHint(err, "the audit log was changed behind the server's back; compare with an export")
				}
				for seq := range anchors {
					if seq > ch.Seq {
						return command.WithHint(fmt.Errorf("the anchor names record %d, but the log ends at record %d: it was cut short", seq, ch.Seq),
							"the audit log was changed behind the server's back; compare with an export")
					}
				}
				fmt.Fprintf(env.Stdout, "ok: %d records, head %s\n", ch.Seq, ch.Head)
				if len(anchors) > 0 {
					fmt.Fprintf(env.Stdout, "%d anchors match\n", len(anchors))
				}
				return nil
			}
		})
}

func adminAuditExportCmd() *command.Command {
	return adminCmd("admin audit export", "write the audit log as JSON lines", adminAuditUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				enc := json.NewEncoder(env.Stdout)
				ch := audit.NewChain()
				c, err := connect()
				if err != nil {
					return err
				}
				err = c.Audit(context.Background(), func(r *audit.Record) error {
					if err := ch.Next(r); err != nil {
						return err
					}
					return enc.Encode(r)
				})
				if err != nil {
					return command.WithHint(err, "the records up to the broken link were written")
				}
				return nil
			}
		})
}

const adminUnlockUsage = `Usage: tether admin unlock list [--json]
       tether admin unlock approve|deny ID

A device whose policy has "approval":true waits at each unlock until an
admin approves or denies it, or the server's --approval-timeout passes.
list shows the waiting unlocks (--json: as JSON, with every field);
approve and deny say on stderr what they decided.
`

func adminUnlockListCmd() *command.Command {
	return adminCmd("admin unlock list", "list unlocks waiting for approval", adminUnlockUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			asJSON := fs.Bool("json", false, "")
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				c, err := connect()
				if err != nil {
					return err
				}
				as, err := c.Approvals(context.Background())
				if err != nil {
					return err
				}
				if *asJSON {
					if as == nil {
						as = []store.Approval{}
					}
					return json.NewEncoder(env.Stdout).Encode(as)
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tDEVICE\tSOURCE\tDEADLINE")
				for _, a := range as {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.ID, a.Device, a.Source, a.Deadline.Local().Format(time.DateTime))
				}
				return tw.Flush()
			}
		})
}

const adminPCRUsage = `Usage: tether admin pcr list [--device ID] [--state pending|approved|denied] [--json]
       tether admin pcr approve|deny DEVICE POLICY

The server signs PCR values for the devices' signed tpm2 bindings
("pcr_signer":"managed", docs/TPM2.md): a device sealed a secret to the
server's PCR policy key and asks for a signature of its current values at
every unseal. A device's first values are approved when it first asks
(when it binds); values its group's rule allows ("pcr_quorum": N devices
of the group reported them) are approved by the rule, for PCRs the device
already has approved values of; any other new values — an update, a boot
chain someone changed, another set of PCRs — wait here until an admin
decides, and the device's binding does not unseal meanwhile. Approve a new
set of PCRs only if it measures the boot chain: a signature allows a
policy digest, however the device's software reached it.

list shows the reports, the newest last, with their values (PCR=hex) so
they can be compared with another device's after the same update; POLICY
is the approved policy digest list shows, or a unique prefix of it.
approve: the server signs these values whenever the device asks. deny:
never. Either can be changed later; every decision is in the audit log.
A revoked or disabled device, or a lockdown, gets no signature at all.

Example:
  $ tether admin pcr list --state pending
  $ tether admin pcr approve dev-Zm9vYmFy 3f1c
`

func adminPCRListCmd() *command.Command {
	return adminCmd("admin pcr list", "list PCR values devices asked the server to sign", adminPCRUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			asJSON := fs.Bool("json", false, "")
			device := fs.String("device", "", "")
			state := fs.String("state", "", "")
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				switch *state {
				case "", "pending", "approved", "denied":
				default:
					return command.Usagef("--state %q: want pending, approved or denied", *state)
				}
				c, err := connect()
				if err != nil {
					return err
				}
				ps, err := c.PCRStates(context.Background(), *device, *state)
				if err != nil {
					return err
				}
				if *asJSON {
					if ps == nil {
						ps = []store.PCRState{}
					}
					return json.NewEncoder(env.Stdout).Encode(ps)
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DEVICE\tPCRS\tPOLICY\tSTATE\tREPORTED\tDECIDED BY\tVALUES")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s:%s\t%s\t%s\t%s\t%s\t%s\n", p.Device, p.Bank, p.PCRIDs, p.Policy[:min(16, len(p.Policy))], p.State,
						p.Created.Local().Format(time.DateTime), p.Reason, p.Values)
				}
				return tw.Flush()
			}
		})
}

// adminPCROpCmd is "tether admin pcr OP": approve or deny.
func adminPCROpCmd(op string) *command.Command {
	return adminCmd("admin pcr "+op, op+" PCR values a device asked the server to sign", adminPCRUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 2 {
					return command.Usagef("want a device ID and a policy digest (tether admin pcr list)")
				}
				c, err := connect()
				if err != nil {
					return err
				}
				p, err := c.PCROp(context.Background(), args[0], args[1], op)
				if err != nil {
					return err
				}
				what := "approved: the server signs them whenever the device asks"
				if op == "deny" {
					what = "denied: the server never signs them"
				}
				fmt.Fprintf(env.Stderr, "%s PCRs %s = policy %s of device %s %s\n", p.Bank, p.PCRIDs, p.Policy, p.Device, what)
				return nil
			}
		})
}

const adminDeviceOpUsage = `Usage: tether admin device %[1]s [--reason TEXT]%[3]s ID

%[2]s.

  approve   a pending enrolment (made without a token) becomes enabled
  enable    a disabled device (by an admin or by a missed keep-alive)
            may unlock again; its keep-alive clock restarts
  disable   every unlock is refused until enable; reversible
  revoke    the server destroys the device's exchange key. Every disk and
            JWE bound to the device can never be unlocked again, by
            anyone, even with the device's identity key. Needs --yes.

Options:
  --reason TEXT  shown in device list and recorded in the audit log
  --yes          revoke only: confirm that the device's disks stay locked
                 for good
`

// adminDeviceOpCmd is "tether admin device OP": approve, enable, disable or revoke.
func adminDeviceOpCmd(op, summary string) *command.Command {
	yesFlag := ""
	if op == "revoke" {
		yesFlag = " --yes"
	}
	return adminCmd("admin device "+op, summary, fmt.Sprintf(adminDeviceOpUsage, op, summary, yesFlag),
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			reason := fs.String("reason", "", "")
			yes := fs.Bool("yes", false, "")
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want exactly one device ID")
				}
				if op == "revoke" && !*yes {
					return command.WithHint(errors.New("revocation is final: the device's exchange key is destroyed and every disk bound to it stays locked for good"),
						"add --yes if that is what you want; tether admin device disable is reversible")
				}
				c, err := connect()
				if err != nil {
					return err
				}
				d, err := c.DeviceOp(context.Background(), args[0], op, *reason)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "device %s (%s) is now %s\n", d.ID, d.Name, d.State)
				return nil
			}
		})
}

// adminUnlockOpCmd is "tether admin unlock OP": approve or deny.
func adminUnlockOpCmd(op string) *command.Command {
	return adminCmd("admin unlock "+op, op+" a waiting unlock", adminUnlockUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want exactly one approval ID (tether admin unlock list)")
				}
				c, err := connect()
				if err != nil {
					return err
				}
				a, err := c.ApprovalOp(context.Background(), args[0], op)
				if err != nil {
					return err
				}
				what := "approved: the device's waiting unlock goes ahead"
				if op == "deny" {
					what = "denied: the device's waiting unlock is refused"
				}
				fmt.Fprintf(env.Stderr, "unlock %s of device %s %s\n", a.ID, a.Device, what)
				return nil
			}
		})
}

const adminResetUsage = `Usage: tether admin reset-credentials [--data DIR] [--store SRC]
                                     [--config FILE] [--url URL]

Reissue the admin credentials of a managed server whose admin.json is lost
(or was exposed): make a new admin token, write it with the server's URL
and TLS key pin to FILE (0600), and replace the token in the store. The old
token stops working. The change is recorded in the audit log (actor root).

Run it as root on the server's machine with the server stopped: it works
on the store directly, and refuses while a server runs on DIR. (Replicas
on other machines sharing a PostgreSQL store are not detected: the new
token is valid for all of them at once.)

Options:
  --data DIR     the server's data directory (default /var/lib/tether)
  --store SRC    the store, if the server runs with --store (default
                 sqlite:DIR/tether.db)
  --config FILE  where to write the credentials (default DIR/admin.json)
  --url URL      the admin API's URL, https://HOST:PORT of --managed-listen
                 (default: the url of the existing FILE)

Example (after stopping the server):
  # tether admin reset-credentials --data /var/lib/tether
`

func adminResetCredentialsCmd() *command.Command {
	return &command.Command{
		Name:    "admin reset-credentials",
		Summary: "reissue the admin credentials (as root, with the server stopped)",
		Usage:   adminResetUsage,
		Flags: func(fs *flag.FlagSet) func(*command.Env, []string) error {
			data := fs.String("data", defaultDataDir, "")
			storeSrc := fs.String("store", "", "")
			out := fs.String("config", "", "")
			url := fs.String("url", "", "")
			return func(env *command.Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				ctx := context.Background()
				file := *out
				if file == "" {
					file = filepath.Join(*data, "admin.json")
				}
				u := *url
				if u == "" {
					// The old file's URL, even if the rest of it is gone.
					var old admin.Credentials
					if b, err := os.ReadFile(file); err == nil && json.Unmarshal(b, &old) == nil {
						u = old.URL
					}
				}
				if u == "" {
					return command.Usagef("no URL for the admin API: %s has none; pass --url https://HOST:PORT (the server's --managed-listen address)", file)
				}
				unlock, err := server.LockDataDirOffline(*data)
				if errors.Is(err, server.ErrServerRunning) {
					return command.WithHint(fmt.Errorf("reset admin credentials: %w", err),
						"stop the server, run this again, then start the server")
				}
				if err != nil {
					return command.WithHint(fmt.Errorf("reset admin credentials: %w", err), "is --data %s the server's data directory?", *data)
				}
				defer unlock()
				src := *storeSrc
				if src == "" {
					src = "sqlite:" + filepath.Join(*data, "tether.db")
				}
				// Opening a SQLite store creates it: make sure there is one.
				if db, ok := strings.CutPrefix(src, "sqlite:"); ok || !strings.Contains(src, "://") {
					if _, err := os.Stat(db); err != nil {
						return command.WithHint(fmt.Errorf("reset admin credentials: %w", err), "is --data %s the server's data directory (or give --store)?", *data)
					}
				}
				st, err := store.Open(ctx, src)
				if err != nil {
					return fmt.Errorf("reset admin credentials: open store: %w", err)
				}
				defer st.Close()
				if _, err := admin.ResetCredentials(ctx, st, u, file); err != nil {
					return fmt.Errorf("reset admin credentials: %w", err)
				}
				fmt.Fprintf(env.Stderr, "new admin credentials written to %s (0600); the old admin token no longer works\n", file)
				return nil
			}
		},
	}
}

func parsePolicy(s string) (policy.Policy, error) {
	var p policy.Policy
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, command.WithHint(fmt.Errorf("policy is not valid: %v", err),
			`example: '{"cidrs":["10.0.0.0/8"],"keepalive":"5m","approval":false,"rate":10}'`)
	}
	return p, nil
}

// readEvents adds the anchors in a file of webhook events, one JSON object
// per line; lines without "seq" and "hash" are skipped. A file with no
// anchor at all is refused: verifying against it would check nothing.
func (a *anchorList) readEvents(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return command.WithHint(fmt.Errorf("read the anchors: %w", err), "give --anchors-from the file your webhook receiver writes the events to")
	}
	defer f.Close()
	n, err := a.parseEvents(f, path)
	if err != nil {
		return err
	}
	if n == 0 {
		return command.WithHint(fmt.Errorf("%s holds no audit anchor (a webhook event with \"seq\" and \"hash\")", path),
			"check that it is the webhook receiver's log of events; anchors can also be given with --anchor SEQ:HASH")
	}
	return nil
}

// maxEventLine bounds one line of a webhook events file.
const maxEventLine = 1 << 20

// parseEvents adds the anchors of the webhook events in r (named name in
// errors) and returns how many lines held one. The file is not trusted:
// malformed lines are skipped, but an anchor that is malformed, or that
// contradicts another for the same record, is an error.
func (a *anchorList) parseEvents(r io.Reader, name string) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxEventLine)
	n := 0
	line := 1
	for ; sc.Scan(); line++ {
		var ev struct {
			Seq  int64  `json:"seq"`
			Hash string `json:"hash"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Seq == 0 || ev.Hash == "" {
			continue
		}
		if err := a.Set(fmt.Sprintf("%d:%s", ev.Seq, ev.Hash)); err != nil {
			return n, fmt.Errorf("%s line %d: %w", name, line, err)
		}
		n++
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return n, fmt.Errorf("%s line %d is longer than %d MiB: it is not a webhook event", name, line, maxEventLine>>20)
	}
	if sc.Err() != nil {
		return n, fmt.Errorf("read %s: %w", name, sc.Err())
	}
	return n, nil
}

// anchorList is the --anchor flag: record number → expected hash.
type anchorList map[int64]string

func (a anchorList) String() string { return fmt.Sprint(map[int64]string(a)) }

func (a *anchorList) Set(v string) error {
	seqText, hash, ok := strings.Cut(v, ":")
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if !ok || err != nil || seq < 1 || len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return fmt.Errorf("want SEQ:HASH, a record number and its 64 hex digit hash, got %q", v)
	}
	if *a == nil {
		*a = anchorList{}
	}
	if prev, dup := (*a)[seq]; dup && prev != hash {
		return fmt.Errorf("two anchors for record %d", seq)
	}
	(*a)[seq] = hash
	return nil
}
