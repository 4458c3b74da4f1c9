package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/eventlog"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/tpm2"
)

const tpmExplainUsage = `Usage: tether tpm explain [--event-log FILE] [--bank B] [--pcr-ids IDS] [--jwe FILE | -d DEV [-s SLOT]] [--no-tpm] [--json]

Show which measurements made each PCR's value: the TCG event log that the
firmware and the boot loaders wrote while this machine booted, replayed
PCR by PCR, beside the value the TPM holds now. With a tpm2 binding
(--jwe FILE, or -d DEV for a LUKS2 volume's tpm2 bindings, sss children
included) it also says whether the binding's PCR policy holds now,
whether it holds with the values the log replays, and which PCR broke it
where that can be known: the answer to "why does my TPM binding no longer
unlock?".

For each PCR it prints the replayed value, the TPM's value and whether
they match, then the events: their number in the log (as tpm2_eventlog
counts them), type, the first bytes of the digest, and what the event
data says was measured (a UEFI variable such as SecureBoot, PK, KEK, db
or dbx and what it holds, a boot application's path, grub's commands).
A TPM value that differs from the replay means something was extended
that the log does not show: the running system (PCR 10 by IMA, 11 and 15
by systemd-pcrphase, systemd-pcrfs and systemd-pcrmachine, 16 and 23 by
anything), or a log that was cut short.

A tpm2 JWE holds its PCRs and one digest over their values at sealing,
never the values themselves (clevis's format; pcr_digest stores none
either). With one PCR a failed policy names it. With several, tether
names the ones that changed when the log shows it (the policy holds with
the values the log replays for PCRs extended later); otherwise it says
that it cannot know and shows the value and events of each.

What the PCRs measure (TCG PC Client, and Linux's boot chain):
  0   firmware code
  1   firmware settings, boot variables
  2   option ROMs of add-in cards; 3 their settings
  4   boot loaders (shim, grub, systemd-boot) and EFI-stub kernels
  5   GPT, boot manager actions
  7   Secure Boot state and keys (PK, KEK, db, dbx) and the certificates
      that verified what booted
  8   grub's commands, the kernel command line
  9   files grub read: its configuration, the kernel, the initrd
  11  unified kernel image sections and boot phases (systemd)
  12  kernel command line and credentials (systemd-stub)
  14  shim's MOK lists

The event log is read from /sys/kernel/security/tpm0/binary_bios_measurements:
root only, and shown by the kernel only with securityfs mounted and a TPM
whose firmware made a log. A copy of that file from another machine,
given with --event-log and --no-tpm, explains that machine's boot. The
log is untrusted: it says what the firmware claims it measured, and only
a replay that equals the TPM's value makes it believable.

Options:
  --event-log FILE  the binary event log (default
                    /sys/kernel/security/tpm0/binary_bios_measurements)
  --bank B          PCR bank: sha256 (default), sha1, sha384 or sha512;
                    a binding's PCRs are shown in the binding's bank
  --pcr-ids IDS     the PCRs to show, e.g. 7,11 (default: those of the
                    bindings, else every PCR the log extends)
  --jwe FILE        a tpm2 JWE, or an sss JWE with tpm2 children (- for stdin)
  -d DEV            a LUKS2 volume (device or image file): its tpm2 bindings
  -s SLOT           with -d: only the binding of this keyslot
  --no-tpm          do not ask the TPM (the log is another machine's);
                    without a TPM the log alone is shown anyway
  --json            one JSON object, for scripts, with whole digests

The exit status is 0 when everything could be read, whatever it shows; 1
when the event log, the TPM, the JWE or the volume cannot be read.

Examples:
  # tether tpm explain --pcr-ids 7
  # tether tpm explain -d /dev/nvme0n1p3
  # tether tpm explain --jwe /etc/tether/pwenc_secret.jwe --json
  $ tether tpm explain --event-log other-machine.bin --no-tpm --pcr-ids 4
`

func tpmExplainCmd() *command.Command {
	return &command.Command{
		Name:    "tpm explain",
		Summary: "show which boot events made each PCR's value, and why a tpm2 binding's policy broke",
		Usage:   tpmExplainUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			o := explainOpts{}
			fs.StringVar(&o.logFile, "event-log", eventlog.DefaultPath, "")
			fs.StringVar(&o.bank, "bank", "sha256", "")
			ids := fs.String("pcr-ids", "", "")
			fs.StringVar(&o.jwe, "jwe", "", "")
			fs.StringVar(&o.dev, "d", "", "")
			slot := slotFlag(fs, "s")
			fs.BoolVar(&o.noTPM, "no-tpm", false, "")
			fs.BoolVar(&o.json, "json", false, "")
			return func(env *Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("explain takes no arguments")
				}
				o.slot = *slot
				if _, err := tpm.HashAlg(o.bank); err != nil || eventlog.BankSize(o.bank) == 0 {
					return command.Usagef("--bank %q: want sha1, sha256, sha384 or sha512", o.bank)
				}
				if *ids != "" {
					pcrs, err := tpm.ParsePCRs(*ids)
					if err != nil || len(pcrs) == 0 {
						return command.Usagef("--pcr-ids %q: want PCR indexes such as 7,11", *ids)
					}
					o.pcrs = pcrs
				}
				switch {
				case o.jwe != "" && o.dev != "":
					return command.Usagef("give --jwe FILE or -d DEV, not both")
				case o.slot >= 0 && o.dev == "":
					return command.Usagef("-s SLOT needs -d DEV")
				}
				return explainPCRs(env, o)
			}
		},
	}
}

type explainOpts struct {
	logFile, bank, jwe, dev string
	slot                    int
	pcrs                    []int
	noTPM, json             bool
}

// hexBytes is a digest in JSON: lowercase hex.
type hexBytes []byte

func (h hexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// The report, as --json prints it.
type explainReport struct {
	EventLog  string          `json:"event_log"`
	Format    string          `json:"format"` // crypto-agile or sha1
	LogBanks  []string        `json:"log_banks"`
	Events    int             `json:"events"`
	TPM       string          `json:"tpm,omitempty"` // the TCTI, if the TPM was read
	TPMNote   string          `json:"tpm_note,omitempty"`
	Bindings  []bindingReport `json:"bindings,omitempty"`
	PCRs      []pcrReport     `json:"pcrs"`
	tpmValues map[pcrKey][]byte
	replays   map[pcrKey]*eventlog.Replay
}

type pcrKey struct {
	bank string
	pcr  int
}

type pcrReport struct {
	Bank        string        `json:"bank"`
	PCR         int           `json:"pcr"`
	Measures    string        `json:"measures,omitempty"`
	Replayed    hexBytes      `json:"replayed,omitempty"`
	ReplayError string        `json:"replay_error,omitempty"`
	TPM         hexBytes      `json:"tpm,omitempty"`
	Match       *bool         `json:"match,omitempty"`
	Why         string        `json:"why_different,omitempty"`
	Events      []eventReport `json:"events"`
}

type eventReport struct {
	Num         int      `json:"num"`
	Type        string   `json:"type"`
	Digest      hexBytes `json:"digest"`
	Description string   `json:"description,omitempty"`
}

type bindingReport struct {
	Source     string   `json:"source"` // the JWE file, or "keyslot N"
	Pin        string   `json:"pin"`
	Bank       string   `json:"bank,omitempty"`
	PCRs       []int    `json:"pcr_ids"`
	SignedPCRs []int    `json:"pcr_signed_ids,omitempty"`
	Policy     hexBytes `json:"policy"`
	// TPMSays is the TPM's verdict (tpm2's Check): empty when it would
	// unseal, else the error a decryption would give.
	TPMSays     string `json:"tpm_says,omitempty"`
	UnsealsNow  *bool  `json:"unseals_now,omitempty"`
	LogHolds    *bool  `json:"log_satisfies_policy,omitempty"`
	Changed     []int  `json:"changed,omitempty"`
	Exact       bool   `json:"changed_exact"`
	Explanation string `json:"explanation"`
	Signed      string `json:"signed,omitempty"`
}

// pcrMeasures says what a PCR measures, for the person reading.
var pcrMeasures = map[int]string{
	0:  "firmware code",
	1:  "firmware settings, boot variables",
	2:  "option ROMs of add-in cards",
	3:  "settings of the option ROMs",
	4:  "boot loaders (shim, grub, systemd-boot) and EFI-stub kernels",
	5:  "GPT, boot manager actions",
	6:  "platform specific (wake events)",
	7:  "Secure Boot state and keys (PK, KEK, db, dbx), certificates that verified what booted",
	8:  "grub's commands, the kernel command line",
	9:  "files grub read: its configuration, the kernel, the initrd",
	10: "IMA (the running kernel)",
	11: "unified kernel image sections, boot phases (systemd)",
	12: "kernel command line, credentials (systemd-stub)",
	13: "system extensions (systemd-stub)",
	14: "shim's MOK lists",
	15: "machine id, file systems (systemd, after boot)",
	16: "debug: anything may extend it",
	23: "application: anything may extend it",
}

// whyDifferent says what extends a PCR that the firmware log does not
// show.
func whyDifferent(pcr int) string {
	switch pcr {
	case 10:
		return "IMA extends PCR 10 after boot; its log is /sys/kernel/security/ima/ascii_runtime_measurements"
	case 11, 15:
		return fmt.Sprintf("systemd extends PCR %d after boot (systemd-pcrphase, systemd-pcrfs, systemd-pcrmachine); its log is /run/log/systemd/tpm2-measure.log", pcr)
	case 16, 23:
		return fmt.Sprintf("anything that can talk to the TPM may extend PCR %d", pcr)
	}
	return "something extended it that the log does not show: after the log was written (by the running system), " +
		"or the log was cut short, or it is another boot's or machine's (then use --no-tpm)"
}

// explainSource is a tpm2 JWE to explain, and where it came from.
type explainSource struct {
	name   string
	jwe    *jose.JWE
	policy *tpm2.Policy
}

func explainPCRs(env *Env, o explainOpts) error {
	l, err := readEventLog(o.logFile)
	if err != nil {
		return err
	}
	sources, err := explainSources(env, o)
	if err != nil {
		return err
	}
	r := &explainReport{EventLog: o.logFile, LogBanks: l.Banks, Events: len(l.Events), Format: "crypto-agile",
		tpmValues: map[pcrKey][]byte{}, replays: map[pcrKey]*eventlog.Replay{}}
	if !l.Agile {
		r.Format = "sha1"
	}

	// Which PCRs, in which banks: the bindings', those asked for, or
	// every PCR the log extends.
	var keys []pcrKey
	add := func(bank string, pcrs ...int) {
		for _, p := range pcrs {
			if k := (pcrKey{bank, p}); !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	for _, s := range sources {
		add(s.policy.Bank, s.policy.PCRs...)
		add(s.policy.Bank, s.policy.SignedPCRs...)
	}
	add(o.bank, o.pcrs...)
	if len(keys) == 0 {
		add(o.bank, l.PCRs()...)
	}
	slices.SortFunc(keys, func(a, b pcrKey) int {
		if a.bank != b.bank {
			return strings.Compare(a.bank, b.bank)
		}
		return a.pcr - b.pcr
	})

	if !o.noTPM {
		if err := readTPMValues(env, r, keys); err != nil {
			return err
		}
	}
	for _, k := range keys {
		r.PCRs = append(r.PCRs, pcrSection(l, r, k))
	}
	for _, s := range sources {
		r.Bindings = append(r.Bindings, explainBinding(r, s, o.noTPM || r.TPM == ""))
	}
	if o.json {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printExplain(env.Stdout, r)
	return nil
}

// readEventLog reads the event log, with advice when it is not there.
func readEventLog(name string) (*eventlog.Log, error) {
	l, err := eventlog.Read(name)
	switch {
	case err == nil:
		return l, nil
	case errors.Is(err, os.ErrNotExist) && name == eventlog.DefaultPath:
		err = fmt.Errorf("no TCG event log at %s: the kernel shows it there only with securityfs mounted and a TPM whose firmware made a log", name)
		if !securityfsMounted() {
			return nil, command.WithHint(err, "securityfs is not mounted: mount -t securityfs securityfs /sys/kernel/security, then run this again")
		}
		return nil, command.WithHint(err, "securityfs is mounted, so this machine has no TPM, its driver is not loaded (tpm_crb, tpm_tis), "+
			"or its firmware made no log (a VM needs a vTPM and UEFI firmware); to explain another machine's boot, "+
			"copy its log and give --event-log FILE --no-tpm")
	case errors.Is(err, os.ErrNotExist):
		return nil, command.WithHint(fmt.Errorf("read the TCG event log: %w", err),
			"give the binary log, a copy of %s", eventlog.DefaultPath)
	case errors.Is(err, os.ErrPermission):
		return nil, command.WithHint(fmt.Errorf("read the TCG event log: %w", err), "only root may read it: run with sudo")
	case errors.Is(err, eventlog.ErrNotLog):
		return nil, command.WithHint(err, "give the binary log as the kernel shows it (%s), not tpm2_eventlog's YAML", eventlog.DefaultPath)
	}
	return nil, fmt.Errorf("read the TCG event log: %w", err)
}

// securityfsMounted reports whether /sys/kernel/security is a securityfs.
func securityfsMounted() bool {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return true // cannot tell: do not send the person to mount it
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "/sys/kernel/security" && f[2] == "securityfs" {
			return true
		}
	}
	return false
}

// explainSources reads the tpm2 JWEs to explain: --jwe's, or the tpm2
// bindings (and sss children) of -d's volume.
func explainSources(env *Env, o explainOpts) ([]explainSource, error) {
	var out []explainSource
	addJWE := func(name string, j *jose.JWE) error {
		leaves := tpm2.Bound(j)
		for i, leaf := range leaves {
			p, err := tpm2.PolicyOf(leaf)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			where := name
			if leaf != j {
				where = fmt.Sprintf("%s, sss: tpm2 child %d of %d", name, i+1, len(leaves))
			}
			out = append(out, explainSource{name: where, jwe: leaf, policy: p})
		}
		return nil
	}
	switch {
	case o.jwe != "":
		var data []byte
		var err error
		if o.jwe == "-" {
			data, err = readInput(env.Stdin, "tether tpm explain --jwe - < secret.jwe")
		} else {
			data, err = os.ReadFile(o.jwe)
		}
		if err != nil {
			return nil, fmt.Errorf("read the JWE: %w", err)
		}
		j, err := jose.ParseCompact(strings.TrimSpace(string(data)))
		if err != nil {
			return nil, command.WithHint(fmt.Errorf("%s: %w", o.jwe, err), "give --jwe a compact JWE as tether encrypt or clevis encrypt write it")
		}
		if err := addJWE(o.jwe, j); err != nil {
			return nil, err
		}
		if len(out) == 0 {
			name, _ := j.Header.Pin()
			return nil, command.WithHint(fmt.Errorf("%s is a %s JWE with no tpm2 part: no PCR policy to explain", o.jwe, name),
				"give --pcr-ids to show PCRs anyway")
		}
	case o.dev != "":
		h, err := luks.ReadHeaderFile(o.dev)
		if err != nil {
			return nil, luksError(err, o.dev)
		}
		for _, b := range luks.Bindings(h) {
			if b.Err != nil || (o.slot >= 0 && b.Slot != o.slot) {
				continue
			}
			if err := addJWE(fmt.Sprintf("keyslot %d", b.Slot), b.JWE); err != nil {
				return nil, err
			}
		}
		if len(out) == 0 {
			what := o.dev + " has no tpm2 binding"
			if o.slot >= 0 {
				what = fmt.Sprintf("keyslot %d of %s has no tpm2 binding", o.slot, o.dev)
			}
			return nil, command.WithHint(errors.New(what), "tether luks list -d %s shows its bindings; give --pcr-ids to show PCRs anyway", o.dev)
		}
	}
	return out, nil
}

// readTPMValues reads the PCRs of keys from the TPM. No TPM is not an
// error: the log is shown alone.
func readTPMValues(env *Env, r *explainReport, keys []pcrKey) error {
	t, err := tpm.Open(context.Background(), "")
	if errors.Is(err, tpm.ErrNoTPM) {
		r.TPMNote = "no TPM here: the log is shown alone"
		fmt.Fprintf(env.Stderr, "tether: %v\ntether: showing the event log alone (--no-tpm does so without this note)\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	defer t.Close()
	r.TPM = t.TCTI().String()
	byBank := map[string][]int{}
	var banks []string
	for _, k := range keys {
		if byBank[k.bank] == nil {
			banks = append(banks, k.bank)
		}
		byBank[k.bank] = append(byBank[k.bank], k.pcr)
	}
	for _, bank := range banks {
		vals, err := t.ReadPCRs(bank, byBank[bank])
		if err != nil {
			// An inactive bank: the log may still be replayed in it.
			fmt.Fprintf(env.Stderr, "tether: warning: %v\n", err)
			continue
		}
		for i, p := range byBank[bank] {
			r.tpmValues[pcrKey{bank, p}] = vals[i]
		}
	}
	return nil
}

func pcrSection(l *eventlog.Log, r *explainReport, k pcrKey) pcrReport {
	s := pcrReport{Bank: k.bank, PCR: k.pcr, Measures: pcrMeasures[k.pcr], Events: []eventReport{}}
	rp, err := l.Replay(k.bank, k.pcr)
	if err != nil {
		s.ReplayError = err.Error()
	} else {
		r.replays[k] = rp
		s.Replayed = rp.Value
		for _, e := range rp.Events {
			s.Events = append(s.Events, eventReport{Num: e.Num, Type: e.TypeName(), Digest: e.Digest(k.bank), Description: e.Describe()})
		}
	}
	if v, ok := r.tpmValues[k]; ok {
		s.TPM = v
		if rp != nil {
			m := bytes.Equal(v, rp.Value)
			s.Match = &m
			if !m {
				s.Why = whyDifferent(k.pcr)
			}
		}
	}
	return s
}

// values returns the values of pcrs in bank from m, nil if one is
// missing.
func values[V any](m map[pcrKey]V, bank string, pcrs []int, get func(V) []byte) [][]byte {
	out := make([][]byte, len(pcrs))
	for i, p := range pcrs {
		v, ok := m[pcrKey{bank, p}]
		if !ok {
			return nil
		}
		out[i] = get(v)
	}
	return out
}

func explainBinding(r *explainReport, s explainSource, noTPM bool) bindingReport {
	p := s.policy
	b := bindingReport{Source: s.name, Pin: pin.Describe(s.jwe), Bank: p.Bank, PCRs: p.PCRs, SignedPCRs: p.SignedPCRs, Policy: p.Digest}
	if b.PCRs == nil {
		b.PCRs = []int{}
	}
	ids := tpm.FormatPCRs(p.PCRs)
	now := values(r.tpmValues, p.Bank, p.PCRs, func(v []byte) []byte { return v })
	replayed := values(r.replays, p.Bank, p.PCRs, func(v *eventlog.Replay) []byte { return v.Value })
	if noTPM {
		now = nil
	} else {
		// The TPM's own verdict, as a decryption would give it (the same
		// check tether doctor makes).
		err := tpm2.Pin{}.Check(context.Background(), s.jwe)
		ok := err == nil
		b.UnsealsNow = &ok
		if err != nil {
			b.TPMSays = err.Error()
		}
		if pm := (*tpm.PCRMismatchError)(nil); errors.As(err, &pm) {
			// Its own advice is to run this command: say it shortly.
			b.TPMSays = "it does not unseal now: its PCR policy is not satisfied (" + pcrNames(pm.Bank, pm.PCRs) +
				plural(pm.PCRs, " is", " are") + " not in the state it was sealed to)"
		}
		if errors.Is(err, tpm.ErrWrongTPM) {
			b.Explanation = "it was sealed by another TPM (or this one was cleared since): no PCR value makes it unseal here"
			return b
		}
	}
	if p.SignedPCRs != nil {
		b.Signed = signedVerdict(r, p, noTPM)
	}
	if len(p.PCRs) == 0 {
		if p.SignedPCRs == nil {
			b.Explanation = "it has no PCR policy: no PCR can break it"
		} else {
			b.Explanation = "its PCRs are all signed ones (pcr_signed_ids): it unseals while a signature allows their values; see signed"
		}
		return b
	}
	holds := func(vals [][]byte) bool {
		if vals == nil {
			return false
		}
		ok, err := p.Holds(vals)
		return err == nil && ok
	}
	if replayed != nil {
		lh := holds(replayed)
		b.LogHolds = &lh
	}
	what := pcrNames(p.Bank, p.PCRs)
	switch {
	case now != nil && holds(now):
		b.Explanation = fmt.Sprintf("%s %s the %s it was sealed to: the PCRs do not stop it", what,
			plural(p.PCRs, "holds", "hold"), plural(p.PCRs, "value", "values"))
		return b
	case now == nil && replayed == nil:
		b.Explanation = "neither the TPM's values nor a replay of the log are at hand: nothing to compare with its policy"
		return b
	case now == nil && *b.LogHolds:
		b.Explanation = fmt.Sprintf("the values the log replays for %s satisfy its policy: in the boot the log shows it unseals "+
			"(unless something extends them after the log, as systemd does PCR 11)", what)
		return b
	}
	// It does not hold: which PCR? The JWE holds one digest over all
	// the values, so only values that satisfy it tell: those the log
	// replays for the PCRs that were extended after it.
	if now != nil && replayed != nil {
		var diff []int // indexes where the TPM and the log differ
		for i := range p.PCRs {
			if !bytes.Equal(now[i], replayed[i]) {
				diff = append(diff, i)
			}
		}
		if len(diff) > 0 && len(diff) <= 10 {
			for mask := 1; mask < 1<<len(diff); mask++ {
				mixed := slices.Clone(now)
				var changed []int
				for j, i := range diff {
					if mask&(1<<j) != 0 {
						mixed[i] = replayed[i]
						changed = append(changed, p.PCRs[i])
					}
				}
				if holds(mixed) {
					b.Changed, b.Exact = changed, true
					b.Explanation = fmt.Sprintf("%s changed after the boot the log shows: the policy holds with the %s the log "+
						"replays for %s, so the secret was sealed in the state this log shows and %s%s %s extended after the log (see below)",
						pcrNames(p.Bank, changed), plural(changed, "value", "values"), plural(changed, "it", "them"),
						plural(changed, "PCR ", "PCRs "), tpm.FormatPCRs(changed), plural(changed, "was", "were"))
					return b
				}
			}
		}
	}
	b.Changed = p.PCRs
	if len(p.PCRs) == 1 {
		b.Exact = true
		b.Explanation = fmt.Sprintf("%s is not in the state it was sealed to, neither now nor in the log's replay: the events below "+
			"made its value in this boot; the JWE holds no value to compare them with, so look for what changed since sealing "+
			"(firmware, Secure Boot db or dbx, shim, boot loader or kernel updates)", what)
		if now == nil {
			b.Explanation = fmt.Sprintf("%s does not replay to the value it was sealed to: the events below made its value in the boot "+
				"the log shows; look for what changed since sealing (firmware, Secure Boot db or dbx, shim, boot loader or kernel updates)", what)
		}
		return b
	}
	b.Explanation = fmt.Sprintf("at least one of %s changed since sealing, and which cannot be known: the JWE holds one digest over "+
		"their values, not the values (clevis's format), and no mix of the TPM's and the log's values satisfies it. "+
		"The value and events of each are below: compare them with the state it was sealed in (tpm2_pcrread %s:%s then, or "+
		"that boot's event log)", what, p.Bank, ids)
	return b
}

// signedVerdict says whether the signature file allows the signed PCRs'
// current and replayed values.
func signedVerdict(r *explainReport, p *tpm2.Policy, noTPM bool) string {
	ids := tpm.FormatPCRs(p.SignedPCRs)
	var parts []string
	check := func(what string, vals [][]byte) {
		if vals == nil {
			return
		}
		ok, err := p.SignatureFor(vals)
		switch {
		case err != nil:
			parts = append(parts, fmt.Sprintf("%s: %v", what, err))
		case ok:
			parts = append(parts, fmt.Sprintf("%s has a signature by its key for the %s", p.Signatures, what))
		default:
			parts = append(parts, fmt.Sprintf("%s has no signature by its key for the %s (sign them: tether tpm sign-pcrs --pcr-ids %s)", p.Signatures, what, ids))
		}
	}
	if !noTPM {
		check("current values of PCR "+ids, values(r.tpmValues, p.Bank, p.SignedPCRs, func(v []byte) []byte { return v }))
	}
	check("values the log replays for PCR "+ids, values(r.replays, p.Bank, p.SignedPCRs, func(v *eventlog.Replay) []byte { return v.Value }))
	return strings.Join(parts, "; ")
}

// count says "1 event", "2 events".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// pcrNames says "sha256 PCR 7" or "sha256 PCRs 7,11".
func pcrNames(bank string, pcrs []int) string {
	return bank + plural(pcrs, " PCR ", " PCRs ") + tpm.FormatPCRs(pcrs)
}

func plural(s []int, one, many string) string {
	if len(s) == 1 {
		return one
	}
	return many
}

// shortDigest is the first bytes of a digest, enough to tell events apart.
func shortDigest(d []byte) string {
	if len(d) > 6 {
		return hex.EncodeToString(d[:6]) + "…"
	}
	return hex.EncodeToString(d)
}

func printExplain(w io.Writer, r *explainReport) {
	fmt.Fprintf(w, "event log %s: %s, digests %s, %d events\n", r.EventLog, r.Format, strings.Join(r.LogBanks, " "), r.Events)
	if r.TPM != "" {
		fmt.Fprintf(w, "TPM %s\n", r.TPM)
	}
	for _, b := range r.Bindings {
		fmt.Fprintf(w, "\n%s: %s\n", b.Source, b.Pin)
		if b.UnsealsNow != nil {
			if *b.UnsealsNow {
				fmt.Fprintf(w, "  TPM:  it unseals now\n")
			} else {
				fmt.Fprintf(w, "  TPM:  %s\n", b.TPMSays)
			}
		}
		if b.LogHolds != nil {
			if *b.LogHolds {
				fmt.Fprintf(w, "  log:  the values the log replays satisfy its policy\n")
			} else {
				fmt.Fprintf(w, "  log:  the values the log replays do not satisfy its policy\n")
			}
		}
		if b.Signed != "" {
			fmt.Fprintf(w, "  signed: %s\n", b.Signed)
		}
		fmt.Fprintf(w, "  why:  %s\n", b.Explanation)
	}
	for _, s := range r.PCRs {
		fmt.Fprintf(w, "\n%s PCR %d", s.Bank, s.PCR)
		if s.Measures != "" {
			fmt.Fprintf(w, ": %s", s.Measures)
		}
		fmt.Fprintln(w)
		if s.ReplayError != "" {
			fmt.Fprintf(w, "  log  cannot be replayed: %s\n", s.ReplayError)
		} else {
			fmt.Fprintf(w, "  log  %x  (%s)\n", []byte(s.Replayed), count(len(s.Events), "event"))
		}
		if s.TPM != nil {
			switch {
			case s.Match == nil:
				fmt.Fprintf(w, "  TPM  %x\n", []byte(s.TPM))
			case *s.Match:
				fmt.Fprintf(w, "  TPM  %x  = the log\n", []byte(s.TPM))
			default:
				fmt.Fprintf(w, "  TPM  %x  differs from the log: %s\n", []byte(s.TPM), s.Why)
			}
		}
		for _, e := range s.Events {
			fmt.Fprintf(w, "  %4d  %-33s %-13s %s\n", e.Num, e.Type, shortDigest(e.Digest), e.Description)
		}
	}
}
