// Package heal reseals the tpm2 parts of LUKS bindings and sealed files
// whose PCR policy no longer holds — after a firmware, boot loader or
// kernel update — to the PCR values of now. It does so only when the
// secret they protect is proved, right now, by another way in: the network
// pins (tang, managed, https, smb) of the same binding, another binding of
// the same volume opened through its network pins, or, when the caller
// allows it, a passphrase. A network pin answering means the machine
// reached its server; a TPM never vouches for itself (every tpm2 part is
// left out of the proof, also those that still unseal). What is safe and
// what is not: docs/TPM2.md, "Self-healing after updates".
//
// A LUKS binding is replaced through luks.Volume.Regen, whose journal makes
// an interrupted heal finish or roll back at the next luks command; a file
// is replaced atomically once its new JWE decrypts. Inside sss only the
// tpm2 parts are sealed again (sss.Opened.Rewrap): the other children are
// kept as they are, so a managed, https or smb child (whose configuration
// no header holds) keeps working and no server is asked to encrypt.
package heal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/sss"
	"github.com/tether-nbde/tether/pin/tpm2"
)

// Options say how to heal.
type Options struct {
	// Pin is used for every pin operation: its Timeout bounds each
	// exchange; its PIN answers for tpm2 parts made "with_pin" (nil: such
	// parts are reported, not healed: heal never asks). Skip is heal's.
	Pin pin.Options
	// Passphrase, if set, is an existing passphrase of the volumes that
	// may prove a binding when no network pin does. Weaker: whoever knows
	// it could bless a tampered boot chain (docs/TPM2.md).
	Passphrase []byte
	// DryRun finds and proves what it would reseal, and changes nothing.
	DryRun bool
}

// State is what became of a binding or file.
type State int

const (
	// OK: every tpm2 part unseals now (a signed policy's signature
	// aside).
	OK State = iota
	// Healed: the parts that no longer unsealed are sealed again.
	Healed
	// WouldHeal: a dry run would reseal them, proved as Proof says.
	WouldHeal
	// NotHealed: a tpm2 part does not unseal and is left as it is.
	NotHealed
)

// Part is one tpm2 JWE of a binding or file.
type Part struct {
	Policy string       // pin.Describe of the part, e.g. tpm2(sha256:7,11)
	Nested bool         // inside sss
	Sealed *tpm2.Policy // its policy, from its header (nil if unreadable)
	// Err is tpm2.Pin.Check's answer: nil, a *tpm.PCRMismatchError, or
	// why the TPM cannot unseal it (another TPM, no TPM, lockout).
	Err error
	// Now are the values of Sealed.PCRs now, for a part whose PCRs
	// changed, or for a part just resealed (the values it was sealed to).
	Now [][]byte
}

// Where names the part for a person: its policy, and whether it is inside
// sss.
func (p Part) Where() string {
	if p.Nested {
		return p.Policy + " in sss"
	}
	return p.Policy
}

// Result is what heal found and did for one binding or file.
type Result struct {
	Object string // "/dev/sda2 keyslot 1", or the file's path
	Policy string // pin.Describe of the binding or file
	State  State
	Parts  []Part // its tpm2 parts, as found
	// Resealed are the tpm2 parts of the new binding or file that were
	// sealed anew (Healed).
	Resealed []Part
	Proof    string // Healed, WouldHeal: what proved the secret
	Slot     int    // Healed, LUKS: the new keyslot
	Reason   string // NotHealed: why
	Fix      string // NotHealed: a command that can fix it, if there is one
	Notes    []string
}

// network are the pins whose answer means the machine reached a server.
var network = map[string]bool{"tang": true, "managed": true, "https": true, "smb": true}

// errLeftOut is why a part is not asked during the proof.
var errLeftOut = errors.New("left out: only network pins prove that the machine is at home")

// onlyNetwork is the proof's pin.Options.Skip: every pin that is not a
// network pin (tpm2, also a tpm2 part that still unseals) is left out.
func onlyNetwork(j *jose.JWE) error {
	name, _ := j.Header.Pin()
	if name == "sss" || network[name] {
		return nil
	}
	return pin.Permanent(errLeftOut)
}

// leaf is a tpm2 JWE of a policy.
type leaf struct {
	j      *jose.JWE
	nested bool
}

// tpm2Leaves lists the tpm2 JWEs of j: j itself, or its sss children at
// any depth.
func tpm2Leaves(j *jose.JWE) []leaf {
	name, _ := j.Header.Pin()
	var out []leaf
	for _, b := range tpm2.Bound(j) {
		out = append(out, leaf{b, name != "tpm2"})
	}
	return out
}

// networkPins describes the network pins of j, each once.
func networkPins(j *jose.JWE) string {
	var out []string
	for _, d := range networkLeaves(j) {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return strings.Join(out, ", ")
}

// networkLeaves describes the network pins of j.
func networkLeaves(j *jose.JWE) []string {
	name, _ := j.Header.Pin()
	if network[name] {
		return []string{pin.Describe(j)}
	}
	if name != "sss" {
		return nil
	}
	kids, _ := sss.Children(j)
	var out []string
	for _, c := range kids {
		out = append(out, networkLeaves(c)...)
	}
	return out
}

// exam is what examine found in one binding or file.
type exam struct {
	parts []Part
	heal  map[string]bool // compact form of the parts to reseal
	block string          // why the binding is left alone, if it is
	fix   string
	pin   bool // a part to reseal was made with_pin
	notes []string
}

// examine checks every tpm2 part of j with the TPM, without unsealing.
// Only parts whose PCRs changed are to be resealed; a part the TPM cannot
// unseal for another reason (another TPM, no TPM, lockout) leaves the
// whole binding alone, as does a signed policy whose literal PCRs moved.
func examine(ctx context.Context, j *jose.JWE, o Options, regen string) exam {
	e := exam{heal: map[string]bool{}}
	p := tpm2.Pin{Warn: o.Pin.Warn}
	for _, l := range tpm2Leaves(j) {
		part := Part{Policy: pin.Describe(l.j), Nested: l.nested}
		s, err := tpm2.PolicyOf(l.j)
		if err != nil {
			part.Err = err
			e.parts = append(e.parts, part)
			e.block = fmt.Sprintf("%s cannot be read: %v", part.Where(), err)
			continue
		}
		part.Sealed = s
		cctx, cancel := context.WithTimeout(ctx, o.Pin.PerTry())
		part.Err = p.Check(cctx, l.j)
		cancel()
		var pm *tpm.PCRMismatchError
		switch {
		case part.Err == nil && len(s.SignedPCRs) > 0:
			e.notes = append(e.notes, fmt.Sprintf("%s: a signed policy follows its signatures, not resealed "+
				"(after an update the key's owner signs the new values: tether tpm sign-pcrs)", part.Where()))
		case part.Err == nil:
		case errors.As(part.Err, &pm) && len(s.SignedPCRs) > 0:
			e.block = fmt.Sprintf("%s is a signed policy, which heal leaves to its signatures, but its literal %s PCRs %s changed",
				part.Where(), pm.Bank, tpm.FormatPCRs(pm.PCRs))
			e.fix = regen
		case errors.As(part.Err, &pm):
			vctx, cancel := context.WithTimeout(ctx, o.Pin.PerTry())
			part.Now, _ = p.PCRValues(vctx, s.Bank, s.PCRs)
			cancel()
			e.heal[l.j.Compact()] = true
			e.pin = e.pin || s.WithPIN
		default:
			e.block = fmt.Sprintf("the TPM refuses %s for another reason than its PCRs, which resealing does not mend", part.Where())
		}
		e.parts = append(e.parts, part)
	}
	return e
}

// decide fills r from e, and reports whether there is something to heal.
func decide(r *Result, e exam, o Options, withPIN string) bool {
	r.Parts, r.Notes = e.parts, e.notes
	switch {
	case e.block != "":
		r.State, r.Reason, r.Fix = NotHealed, "left alone: "+e.block, e.fix
	case len(e.heal) == 0:
		r.State = OK
	case e.pin && o.Pin.PIN == nil:
		r.State = NotHealed
		r.Reason = "a part to reseal was sealed with a PIN, and no PIN was given (heal never asks for one; it cannot check it either: the TPM refuses the old part for its PCRs before it looks at the PIN)"
		r.Fix = withPIN
	default:
		return true
	}
	return false
}

// renewer makes the replacement of a child that holds a part to reseal:
// the tpm2 part sealed anew to the PCRs of now (its configuration rebuilt
// from its header, as regen does), or a nested sss rewrapped the same way
// (made anew when its network pins alone do not open it).
type renewer struct {
	heal  map[string]bool
	proof pin.Options // with onlyNetwork
	seal  pin.Options
}

func (rn renewer) renew(child *jose.JWE) func(context.Context, []byte) (*jose.JWE, error) {
	name, _ := child.Header.Pin()
	anew := func(ctx context.Context, point []byte) (*jose.JWE, error) {
		n, cfg, err := pin.RegenConfig(ctx, child, rn.seal)
		if err != nil {
			return nil, err
		}
		return pin.Encrypt(ctx, n, cfg, point, rn.seal)
	}
	switch name {
	case "tpm2":
		if rn.heal[child.Compact()] {
			return anew
		}
	case "sss":
		for _, l := range tpm2Leaves(child) {
			if rn.heal[l.j.Compact()] {
				return func(ctx context.Context, point []byte) (*jose.JWE, error) {
					dctx, cancel := context.WithTimeout(ctx, rn.proof.PerTry()+time.Second)
					op, err := sss.Open(dctx, child, rn.proof)
					cancel()
					if err != nil {
						return anew(ctx, point)
					}
					defer clear(op.Plaintext)
					return op.Rewrap(ctx, point, rn.renew)
				}
			}
		}
	}
	return nil
}

// resealed checks the tpm2 parts of nj that are not in old: they were
// sealed just now, and must unseal.
func resealed(ctx context.Context, nj *jose.JWE, old []leaf, o Options) ([]Part, error) {
	was := map[string]bool{}
	for _, l := range old {
		was[l.j.Compact()] = true
	}
	p := tpm2.Pin{Warn: o.Pin.Warn}
	var out []Part
	var bad []string
	for _, l := range tpm2Leaves(nj) {
		if was[l.j.Compact()] {
			continue
		}
		part := Part{Policy: pin.Describe(l.j), Nested: l.nested}
		part.Sealed, part.Err = tpm2.PolicyOf(l.j)
		if part.Err == nil {
			cctx, cancel := context.WithTimeout(ctx, o.Pin.PerTry())
			part.Err = p.Check(cctx, l.j)
			if part.Err == nil {
				part.Now, _ = p.PCRValues(cctx, part.Sealed.Bank, part.Sealed.PCRs)
			}
			cancel()
		}
		if part.Err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", part.Where(), part.Err))
		}
		out = append(out, part)
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("a resealed part does not unseal: %s", strings.Join(bad, "; "))
	}
	return out, nil
}

// Volume heals the bindings of a LUKS2 volume. Without DryRun it first
// finishes or rolls back what an interrupted change left (luks repair).
// It returns one Result per binding with a tpm2 part; the error is for a
// volume it cannot read.
func Volume(ctx context.Context, v *luks.Volume, o Options) ([]Result, error) {
	h, err := v.Header()
	if err == nil && !o.DryRun {
		h, err = v.Repair(ctx)
	}
	if err != nil {
		return nil, err
	}
	proof := o.Pin
	proof.Skip = onlyNetwork
	saved := v.PinOptions
	v.PinOptions = o.Pin
	defer func() { v.PinOptions = saved }()
	var out []Result
	for _, b := range luks.Bindings(h) {
		if b.Err != nil || len(tpm2Leaves(b.JWE)) == 0 {
			continue
		}
		r := Result{Object: fmt.Sprintf("%s keyslot %d", v.Path, b.Slot), Policy: pin.Describe(b.JWE), Slot: -1}
		regen := fmt.Sprintf("tether luks regen -d %s -s %d", v.Path, b.Slot)
		e := examine(ctx, b.JWE, o, regen)
		if decide(&r, e, o, fmt.Sprintf("tether tpm heal -d %s --pin-file FILE", v.Path)) {
			healBinding(ctx, v, b, e, o, proof, &r)
		}
		out = append(out, r)
	}
	return out, nil
}

// healBinding proves binding b's secret and, unless DryRun, replaces it.
func healBinding(ctx context.Context, v *luks.Volume, b luks.Binding, e exam, o Options, proof pin.Options, r *Result) {
	rn := renewer{heal: e.heal, proof: proof, seal: o.Pin}
	var (
		key     []byte
		keySlot = -1
		rewrap  func(context.Context, []byte) (*jose.JWE, error)
		failed  []string
	)
	defer func() { clear(key) }()
	// The binding's own network pins.
	if name, _ := b.JWE.Header.Pin(); name == "sss" {
		dctx, cancel := context.WithTimeout(ctx, proof.PerTry()+time.Second)
		op, err := sss.Open(dctx, b.JWE, proof)
		cancel()
		if err == nil {
			key, keySlot = op.Plaintext, b.Slot
			rewrap = func(ctx context.Context, pass []byte) (*jose.JWE, error) { return op.Rewrap(ctx, pass, rn.renew) }
			r.Proof = fmt.Sprintf("its own network pins (%s); its tpm2 parts were left out", networkPins(b.JWE))
		} else {
			failed = append(failed, fmt.Sprintf("keyslot %d: %v", b.Slot, err))
		}
	}
	// Another binding of the volume, through its network pins.
	if key == nil {
		if h, err := v.Header(); err == nil {
			for _, ob := range luks.Bindings(h) {
				if ob.Slot == b.Slot || ob.Err != nil || len(networkLeaves(ob.JWE)) == 0 {
					continue
				}
				dctx, cancel := context.WithTimeout(ctx, proof.PerTry()+time.Second)
				pass, err := pin.Decrypt(dctx, ob.JWE, proof)
				cancel()
				if err == nil {
					if err = v.Runner.TestKey(ctx, v.Path, ob.Slot, pass); err != nil {
						err = fmt.Errorf("its passphrase does not open its keyslot: %w", err)
					}
				}
				if err != nil {
					clear(pass)
					failed = append(failed, fmt.Sprintf("keyslot %d: %v", ob.Slot, err))
					continue
				}
				key, keySlot = pass, ob.Slot
				r.Proof = fmt.Sprintf("keyslot %d (%s), through its network pins", ob.Slot, pin.Describe(ob.JWE))
				break
			}
		}
	}
	// A passphrase, if allowed.
	if key == nil && o.Passphrase != nil {
		slot, err := v.KeySlotOf(ctx, o.Passphrase)
		if err != nil {
			r.State, r.Reason = NotHealed, fmt.Sprintf("the passphrase given does not prove it: %v", err)
			return
		}
		key, keySlot = bytes.Clone(o.Passphrase), slot
		r.Proof = fmt.Sprintf("a passphrase of the volume (keyslot %d), not a network pin", slot)
	}
	if key == nil {
		r.State = NotHealed
		r.Reason = "nothing proves the machine is at home: no network pin of this binding or of another binding of the volume decrypted"
		if len(failed) > 0 {
			r.Reason += " (" + strings.Join(failed, "; ") + ")"
		}
		r.Fix = fmt.Sprintf("once the servers answer: tether tpm heal -d %s; or, trusting the boot chain as it is now (docs/TPM2.md says why that is weaker): tether tpm heal -d %s --allow-passphrase -k -", v.Path, v.Path)
		return
	}
	if o.DryRun {
		r.State = WouldHeal
		return
	}
	n, err := v.Regen(ctx, luks.RegenOptions{Slot: b.Slot, UseKey: true, Key: key, KeySlot: keySlot, Make: rewrap})
	if err != nil {
		r.State, r.Reason = NotHealed, fmt.Sprintf("resealing failed: %v", err)
		if n >= 0 {
			r.Fix = fmt.Sprintf("tether luks repair -d %s", v.Path)
		}
		return
	}
	r.State, r.Slot = Healed, n
	h, err := v.Header()
	if err == nil {
		var nb *luks.Binding
		if nb, err = luks.BindingFor(h, n); err == nil {
			r.Resealed, err = resealed(ctx, nb.JWE, tpm2Leaves(b.JWE), o)
		}
	}
	if err != nil {
		r.State, r.Reason = NotHealed, fmt.Sprintf("resealed as keyslot %d, but: %v", n, err)
	}
}

// File heals a sealed file (a compact JWE, as tether secret open reads
// it). It returns nil for a file without a tpm2 part. A sealed file has no
// other way in: only its own network pins can prove it, so a file sealed
// to tpm2 alone is never healed.
func File(ctx context.Context, path string, o Options) (*Result, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j, err := jose.ParseCompact(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, err
	}
	old := tpm2Leaves(j)
	if len(old) == 0 {
		return nil, nil
	}
	r := &Result{Object: path, Policy: pin.Describe(j), Slot: -1}
	e := examine(ctx, j, o, "tether secret regen "+path)
	if !decide(r, e, o, fmt.Sprintf("tether tpm heal -f %s --pin-file FILE", path)) {
		return r, nil
	}
	if name, _ := j.Header.Pin(); name != "sss" {
		r.State = NotHealed
		r.Reason = "sealed to the TPM alone, so nothing can prove the machine is at home (and nothing else decrypts it)"
		r.Fix = fmt.Sprintf("seal the secret again from its source, with a network pin beside the TPM so that it can heal: "+
			`tether encrypt sss '{"t":1,"pins":{"tpm2":{...},"tang":{"url":"..."}}}' < SECRET > %s`, path)
		return r, nil
	}
	proof := o.Pin
	proof.Skip = onlyNetwork
	dctx, cancel := context.WithTimeout(ctx, proof.PerTry()+time.Second)
	op, err := sss.Open(dctx, j, proof)
	cancel()
	if err != nil {
		r.State = NotHealed
		r.Reason = fmt.Sprintf("nothing proves the machine is at home: its network pins did not decrypt it (%v)", err)
		r.Fix = "once the servers answer: tether tpm heal -f " + path
		return r, nil
	}
	defer clear(op.Plaintext)
	r.Proof = fmt.Sprintf("its own network pins (%s); its tpm2 parts were left out", networkPins(j))
	if o.DryRun {
		r.State = WouldHeal
		return r, nil
	}
	rn := renewer{heal: e.heal, proof: proof, seal: o.Pin}
	nj, err := op.Rewrap(ctx, op.Plaintext, rn.renew)
	if err == nil {
		r.Resealed, err = resealed(ctx, nj, old, o)
	}
	if err == nil {
		vctx, cancel := context.WithTimeout(ctx, o.Pin.PerTry()+time.Second)
		check, derr := pin.Decrypt(vctx, nj, o.Pin)
		cancel()
		if derr != nil || !bytes.Equal(check, op.Plaintext) {
			err = fmt.Errorf("the resealed file does not decrypt to the same secret (%v)", derr)
		}
		clear(check)
	}
	if err == nil {
		err = atomicfile.Write(path, []byte(nj.Compact()), fi.Mode().Perm())
	}
	if err != nil {
		r.State, r.Reason = NotHealed, fmt.Sprintf("resealing failed: %v; %s is unchanged", err, path)
		return r, nil
	}
	r.State = Healed
	return r, nil
}
