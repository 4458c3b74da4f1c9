package luks

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// ErrWrongKey is returned when the given passphrase opens no keyslot.
var ErrWrongKey = errors.New("the passphrase does not open any keyslot")

// NewPassphrase returns a random passphrase for a machine keyslot: the
// base64url text of 40 random bytes, as clevis 20 and later generate.
func NewPassphrase() []byte {
	b := make([]byte, 40)
	rand.Read(b)
	out := make([]byte, base64.RawURLEncoding.EncodedLen(len(b)))
	base64.RawURLEncoding.Encode(out, b)
	clear(b)
	return out
}

// BindOptions are the inputs of Bind.
type BindOptions struct {
	Pin    string
	Config json.RawMessage
	// Key is an existing passphrase or key file content.
	Key []byte
	// KeySlot is the keyslot Key opens, or -1 to find it (bound machine
	// slots are tried last, argon2 slots one at a time).
	KeySlot int
	// Slot is the keyslot for the new key, or -1 for the first free one.
	Slot int
}

// Bind adds a keyslot with a random passphrase and stores the passphrase,
// encrypted by the pin, in a token. It returns the new keyslot.
//
// The steps, each safe to die after: (1) a header backup; (2) a txn token
// naming the planned keyslot; (3) the keyslot; (4) a check that it opens;
// (5) the binding token; (6) the txn token removed. Repair rolls back
// (1)–(4) and completes (5).
func (v *Volume) Bind(ctx context.Context, o BindOptions) (int, error) {
	unlock, err := v.lock()
	if err != nil {
		return -1, err
	}
	defer unlock()
	h, err := v.repair(ctx)
	if err != nil {
		return -1, err
	}
	keySlot, err := v.findKeySlot(ctx, h, o.Key, o.KeySlot)
	if err != nil {
		return -1, err
	}
	pass := NewPassphrase()
	defer clear(pass)
	j, err := pin.Encrypt(ctx, o.Pin, o.Config, pass, v.PinOptions)
	if err != nil {
		return -1, err
	}
	return v.bind(ctx, h, bindStep{key: o.Key, keySlot: keySlot, slot: o.Slot, pass: pass, jwe: j, op: "bind"})
}

type bindStep struct {
	key      []byte
	keySlot  int
	slot     int
	pass     []byte
	jwe      *jose.JWE
	op       string // bind or regen
	oldSlot  int    // regen: the keyslot being replaced (keySlot, or a broken one)
	oldToken int    // regen: its token
}

// bind runs the transaction of Bind and of Regen's first half. Called
// with the lock held.
func (v *Volume) bind(ctx context.Context, h *Header, s bindStep) (int, error) {
	r := v.Runner
	slot := s.slot
	if slot < 0 {
		if slot = h.FreeSlot(); slot < 0 {
			return -1, errors.New("all 32 keyslots are in use")
		}
	} else if slot >= MaxSlots {
		return -1, fmt.Errorf("keyslot %d does not exist: LUKS2 keyslots are 0 to 31", slot)
	} else if slotActive(h, slot) {
		return -1, fmt.Errorf("keyslot %d is already in use", slot)
	}
	token, err := tokenJSON(slot, s.jwe)
	if err != nil {
		return -1, err
	}
	x := txn{Type: TypeTxn, Keyslots: []string{}, Op: s.op, Slot: strconv.Itoa(slot)}
	if s.op == "regen" {
		x.OldSlot, x.OldToken = strconv.Itoa(s.oldSlot), strconv.Itoa(s.oldToken)
	}
	// Plan the header backup's name now so that the txn token can say
	// which file to delete when it is cleaned up.
	backup := filepath.Join(v.stateDir(), fmt.Sprintf("%s-%s.header", h.UUID, time.Now().UTC().Format("20060102T150405.000000000")))
	x.Backup = backup
	txnJSON, _ := json.Marshal(x)

	// Refuse early, with nothing changed, when the metadata area cannot
	// take the tokens and the keyslot: cryptsetup would fail halfway.
	const keyslotJSON = 400 // a pbkdf2 keyslot and its digest reference, with margin
	if need := len(token) + len(txnJSON) + keyslotJSON; need > h.JSONFree() {
		return -1, &FullError{Free: h.JSONFree(), Need: need}
	}
	ids := freeTokens(h, 2)
	if len(ids) < 2 {
		return -1, &FullError{Free: h.JSONFree(), Need: len(token), Tokens: true}
	}
	// The binding gets the lowest free id, as clevis's token would.
	tokID, txnID := ids[0], ids[1]

	if err := r.HeaderBackup(ctx, v.Path, backup); err != nil {
		return -1, fmt.Errorf("back up the header: %w", err)
	}
	crashpoint(s.op + ":backup")
	if err := r.ImportToken(ctx, v.Path, txnID, txnJSON, false); err != nil {
		os.Remove(backup)
		return -1, fmt.Errorf("record the change in the header: %w", err)
	}
	crashpoint(s.op + ":txn")

	fail := func(err error) (int, error) {
		if rerr := v.rollback(ctx, slot, txnID, tokID); rerr != nil {
			return -1, fmt.Errorf("%w; rolling back failed too: %v (a header backup from before the change is in %s: restore it with cryptsetup luksHeaderRestore %s --header-backup-file %s)",
				err, rerr, backup, v.Path, backup)
		}
		os.Remove(backup)
		return -1, err
	}
	kdf := MachineKDF(h.VolumeHash())
	if err := r.AddKey(ctx, v.Path, s.keySlot, s.key, slot, s.pass, kdf); err != nil {
		return fail(fmt.Errorf("add keyslot %d: %w", slot, err))
	}
	crashpoint(s.op + ":addkey")
	if err := r.TestKey(ctx, v.Path, slot, s.pass); err != nil {
		return fail(fmt.Errorf("the new keyslot %d does not open: %w", slot, err))
	}
	crashpoint(s.op + ":verified")
	if err := r.ImportToken(ctx, v.Path, tokID, token, false); err != nil {
		return fail(fmt.Errorf("store token %d: %w", tokID, err))
	}
	crashpoint(s.op + ":token")
	if s.op == "regen" {
		// The new binding works; now the old one may go. Kill the old
		// slot first: an interruption then leaves only a token for no
		// keyslot, which Repair recognises and removes.
		hh, err := v.Header()
		if err != nil {
			return slot, err
		}
		if err := v.killSlot(ctx, hh, s.oldSlot); err != nil {
			return slot, fmt.Errorf("remove the old keyslot %d: %w", s.oldSlot, err)
		}
		crashpoint("regen:killold")
		if err := r.RemoveToken(ctx, v.Path, s.oldToken); err != nil {
			return slot, fmt.Errorf("remove the old token %d: %w", s.oldToken, err)
		}
		crashpoint("regen:removeold")
	}
	if err := r.RemoveToken(ctx, v.Path, txnID); err != nil {
		return slot, fmt.Errorf("the binding is complete, but removing its txn token %d failed: %w", txnID, err)
	}
	crashpoint(s.op + ":done")
	os.Remove(backup)
	return slot, nil
}

// rollback undoes a failed bind: the token, the keyslot, then the txn.
func (v *Volume) rollback(ctx context.Context, slot, txnID, tokID int) error {
	// Use a fresh context: the failure may have been a cancellation.
	ctx = context.WithoutCancel(ctx)
	h, err := v.Header()
	if err != nil {
		return err
	}
	if _, ok := h.Token(tokID); ok {
		if err := v.Runner.RemoveToken(ctx, v.Path, tokID); err != nil {
			return err
		}
	}
	if slotActive(h, slot) {
		if err := v.killSlot(ctx, h, slot); err != nil {
			return err
		}
	}
	if _, ok := h.Token(txnID); ok {
		return v.Runner.RemoveToken(ctx, v.Path, txnID)
	}
	return nil
}

func freeTokens(h *Header, n int) []int {
	var out []int
	for i := 0; i < MaxSlots && len(out) < n; i++ {
		if _, ok := h.Token(i); !ok {
			out = append(out, i)
		}
	}
	return out
}

// FullError is returned when the header has no room for a binding.
type FullError struct {
	Free, Need int
	Tokens     bool // all 32 token ids are taken
}

func (e *FullError) Error() string {
	if e.Tokens {
		return "the LUKS2 header has no free token id (all 32 are in use)"
	}
	return fmt.Sprintf("the LUKS2 metadata area is full: %d bytes free, the binding needs about %d", e.Free, e.Need)
}

// KeySlotOf returns the keyslot key opens (ErrWrongKey if none), trying
// slots as Bind does: unbound ones first, one at a time.
func (v *Volume) KeySlotOf(ctx context.Context, key []byte) (int, error) {
	h, err := v.Header()
	if err != nil {
		return -1, err
	}
	return v.findKeySlot(ctx, h, key, -1)
}

// findKeySlot returns the keyslot key opens. With want >= 0 only that slot
// is tried. Otherwise slots without a binding come first, in priority
// order (they hold the passphrases people type), each tried on its own so
// that cryptsetup never walks every argon2 slot in one go.
func (v *Volume) findKeySlot(ctx context.Context, h *Header, key []byte, want int) (int, error) {
	if want >= 0 {
		if !slotActive(h, want) {
			return -1, fmt.Errorf("keyslot %d is not in use", want)
		}
		if err := v.Runner.TestKey(ctx, v.Path, want, key); err != nil {
			if WrongKey(err) {
				return -1, fmt.Errorf("%w: keyslot %d rejects it", ErrWrongKey, want)
			}
			return -1, err
		}
		return want, nil
	}
	bound := map[int]bool{}
	for _, b := range Bindings(h) {
		bound[b.Slot] = true
	}
	var order []int
	for _, pass := range []func(int, Keyslot) bool{
		func(n int, k Keyslot) bool { return !bound[n] && k.Priority != nil && *k.Priority == 2 },
		func(n int, k Keyslot) bool { return !bound[n] && (k.Priority == nil || *k.Priority == 1) },
		func(n int, k Keyslot) bool { return bound[n] },
		func(n int, k Keyslot) bool { return !bound[n] && k.Priority != nil && *k.Priority == 0 },
	} {
		for _, n := range h.Slots() {
			if k, _ := h.Keyslot(n); k.Type == "luks2" && pass(n, k) {
				order = append(order, n)
			}
		}
	}
	for _, n := range order {
		err := v.Runner.TestKey(ctx, v.Path, n, key)
		if err == nil {
			return n, nil
		}
		if !WrongKey(err) {
			return -1, err
		}
	}
	return -1, ErrWrongKey
}

// Unbind removes the binding of keyslot slot: the keyslot first, then its
// token. An interruption in between leaves a token for no keyslot, which
// Repair removes. The last keyslot of a volume is never removed.
func (v *Volume) Unbind(ctx context.Context, slot int) error {
	unlock, err := v.lock()
	if err != nil {
		return err
	}
	defer unlock()
	h, err := v.repair(ctx)
	if err != nil {
		return err
	}
	b, err := BindingFor(h, slot)
	if err != nil {
		// A token that cannot be parsed still binds its keyslot, and
		// unbind is the way out of it (tether doctor says so).
		for _, u := range Bindings(h) {
			if u.Slot == slot && u.Err != nil {
				b, err = &u, nil
				break
			}
		}
		if err != nil {
			return err
		}
	}
	// Record the intent first. luksKillSlot wipes the keyslot's key
	// material before it rewrites the metadata, so a crash in between
	// leaves a keyslot that nothing opens any more; the txn token tells
	// repair to finish the removal. Without room for it (a full metadata
	// area) unbind goes ahead unrecorded rather than refuse to free space.
	if err := v.mayKill(h, slot); err != nil {
		return err // before anything is written: the header stays as it was
	}
	txnID := -1
	x, _ := json.Marshal(txn{Type: TypeTxn, Keyslots: []string{}, Op: "unbind", Slot: strconv.Itoa(slot)})
	if ids := freeTokens(h, 1); len(ids) == 1 && h.JSONFree() > len(x)+100 {
		if err := v.Runner.ImportToken(ctx, v.Path, ids[0], x, false); err != nil {
			return err
		}
		txnID = ids[0]
	}
	crashpoint("unbind:txn")
	if err := v.killSlot(ctx, h, slot); err != nil {
		if txnID >= 0 {
			v.Runner.RemoveToken(ctx, v.Path, txnID)
		}
		return err
	}
	crashpoint("unbind:killslot")
	if h, err = v.Header(); err != nil {
		return err
	}
	// The token may bind other keyslots too (clevis never does that, but
	// a token can): keep it then.
	if t, ok := h.Token(b.Token); ok && len(t.Keyslots) == 0 {
		if err := v.Runner.RemoveToken(ctx, v.Path, b.Token); err != nil {
			return fmt.Errorf("keyslot %d is removed, but removing token %d failed: %w", slot, b.Token, err)
		}
	}
	crashpoint("unbind:token")
	if txnID >= 0 {
		if err := v.Runner.RemoveToken(ctx, v.Path, txnID); err != nil {
			return fmt.Errorf("keyslot %d is removed, but removing the intent token %d failed: %w", slot, txnID, err)
		}
	}
	crashpoint("unbind:done")
	return nil
}

// Passphrase decrypts the passphrase of keyslot slot's binding.
func (v *Volume) Passphrase(ctx context.Context, slot int) ([]byte, error) {
	h, err := v.Header()
	if err != nil {
		return nil, err
	}
	b, err := BindingFor(h, slot)
	if err != nil {
		return nil, err
	}
	return pin.Decrypt(ctx, b.JWE, v.PinOptions)
}

// RegenOptions are the inputs of Regen.
type RegenOptions struct {
	Slot int
	// Pin and Config choose a new policy; empty keeps the binding's own
	// (rebuilt from its JWE by its pin, see pin.RegenConfig).
	Pin    string
	Config json.RawMessage
	// Key, if set, is used when the binding cannot be decrypted (say its
	// server is gone): an existing passphrase of the volume.
	Key []byte
	// UseKey makes Regen take Key at once, without decrypting the
	// binding: the caller has proved it (tether tpm heal: another binding
	// opened the volume, or the binding's own network pins). KeySlot is
	// the keyslot Key opens, or -1 to find it.
	UseKey  bool
	KeySlot int
	// Make, if set, makes the new binding's JWE for its new passphrase,
	// in place of encrypting it under Pin and Config (tether tpm heal
	// reseals only the tpm2 parts of an sss, see sss.Opened.Rewrap).
	Make func(ctx context.Context, pass []byte) (*jose.JWE, error)
}

// Regen rebinds keyslot o.Slot with a fresh passphrase and a fresh
// encryption (after a server key rotation, or to change the policy). The
// new keyslot is added and verified before the old one is removed, the
// whole change journalled in a txn token as Bind's is, so that an
// interruption is finished or rolled back by Repair. It returns the new
// keyslot.
func (v *Volume) Regen(ctx context.Context, o RegenOptions) (int, error) {
	unlock, err := v.lock()
	if err != nil {
		return -1, err
	}
	defer unlock()
	h, err := v.repair(ctx)
	if err != nil {
		return -1, err
	}
	b, err := BindingFor(h, o.Slot)
	if err != nil {
		return -1, err
	}
	var old []byte
	keySlot := o.Slot
	if o.UseKey {
		if keySlot, err = v.findKeySlot(ctx, h, o.Key, o.KeySlot); err != nil {
			return -1, err
		}
		old = append([]byte(nil), o.Key...)
	} else {
		var derr error
		old, derr = pin.Decrypt(ctx, b.JWE, v.PinOptions)
		if derr == nil {
			if err := v.Runner.TestKey(ctx, v.Path, o.Slot, old); err != nil {
				derr = fmt.Errorf("the binding's passphrase does not open keyslot %d: %w", o.Slot, err)
			}
		}
		if derr != nil {
			if errors.Is(derr, pin.ErrWrongPIN) {
				// The PIN asked for would seal the new binding too: never
				// with one the TPM just refused.
				return -1, fmt.Errorf("decrypt the binding of keyslot %d: %w", o.Slot, derr)
			}
			if o.Key == nil {
				return -1, fmt.Errorf("decrypt the binding of keyslot %d: %w", o.Slot, derr)
			}
			v.logf("the binding of keyslot %d cannot be decrypted (%v); using the given passphrase", o.Slot, derr)
			if keySlot, err = v.findKeySlot(ctx, h, o.Key, -1); err != nil {
				return -1, err
			}
			old = append([]byte(nil), o.Key...)
		}
	}
	defer clear(old)
	pass := NewPassphrase()
	defer clear(pass)
	var j *jose.JWE
	if o.Make != nil {
		j, err = o.Make(ctx, pass)
	} else {
		name, cfg := o.Pin, o.Config
		if name == "" {
			if name, cfg, err = pin.RegenConfig(ctx, b.JWE, v.PinOptions); err != nil {
				return -1, fmt.Errorf("rebuild the configuration of keyslot %d: %w; give PIN and CONFIG", o.Slot, err)
			}
		}
		j, err = pin.Encrypt(ctx, name, cfg, pass, v.PinOptions)
	}
	if err != nil {
		return -1, err
	}
	// When the old binding is broken and the key opens another keyslot,
	// the new keyslot is made from that one; the broken one is still
	// what is replaced.
	return v.bind(ctx, h, bindStep{key: old, keySlot: keySlot, slot: -1, pass: pass, jwe: j, op: "regen", oldSlot: o.Slot, oldToken: b.Token})
}
