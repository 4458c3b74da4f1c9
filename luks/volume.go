package luks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// Token types tether writes.
const (
	// TypeClevis is clevis's token: stock clevis unlocks what it holds.
	TypeClevis = "clevis"
	// TypeTether holds a binding whose pin clevis does not know. Same
	// layout as a clevis token (see docs/LUKS.md).
	TypeTether = "tether"
	// TypeTxn records an unfinished tether change to the header: it is
	// written before anything else changes, and removed last.
	TypeTxn = "tether-txn"
)

// clevisPins are the pins stock clevis can decrypt.
var clevisPins = map[string]bool{"tang": true, "tpm2": true, "sss": true}

// DefaultStateDir keeps header backups, locks and the state of unfinished
// in-place encryptions. It must be readable by root only.
const DefaultStateDir = "/var/lib/tether/luks"

// Volume is a LUKS2 device or image file.
type Volume struct {
	Path string
	// Runner executes cryptsetup; nil uses cryptsetup from PATH.
	Runner *Runner
	// StateDir holds header backups, locks and encryption state; empty
	// means DefaultStateDir.
	StateDir string
	// Log receives messages for the person (what was cleaned up, the
	// slot chosen); nil discards them.
	Log io.Writer
	// PinOptions are used for every pin encryption and decryption.
	PinOptions pin.Options

	// held is the lock file while the volume is locked.
	held *os.File
}

func (v *Volume) stateDir() string {
	if v.StateDir != "" {
		return v.StateDir
	}
	return DefaultStateDir
}

func (v *Volume) logf(format string, a ...any) {
	if v.Log != nil {
		fmt.Fprintf(v.Log, format+"\n", a...)
	}
}

// Header reads the volume's header and refuses what tether cannot handle.
func (v *Volume) Header() (*Header, error) {
	h, err := ReadHeaderFile(v.Path)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// Binding is a keyslot whose passphrase a pin protects.
type Binding struct {
	Slot  int
	Token int
	Type  string // TypeClevis or TypeTether
	JWE   *jose.JWE
	Err   error // the token could not be parsed
}

// Pin returns the binding's pin name.
func (b *Binding) Pin() string {
	if b.JWE == nil {
		return "?"
	}
	p, err := b.JWE.Header.Pin()
	if err != nil {
		return "?"
	}
	return p
}

// bindingToken is the layout of clevis and tether tokens.
type bindingToken struct {
	Type     string          `json:"type"`
	Keyslots []string        `json:"keyslots"`
	JWE      json.RawMessage `json:"jwe"`
}

// Bindings lists the clevis and tether tokens of h by keyslot. A token
// listing no active keyslot is not a binding (see Leftovers).
func Bindings(h *Header) []Binding {
	var out []Binding
	for _, id := range h.TokenIDs() {
		t, _ := h.Token(id)
		if t.Type != TypeClevis && t.Type != TypeTether {
			continue
		}
		for _, ks := range t.Keyslots {
			n, _ := strconv.Atoi(ks)
			if _, ok := h.Keyslot(n); !ok {
				continue
			}
			b := Binding{Slot: n, Token: id, Type: t.Type}
			var bt bindingToken
			if err := json.Unmarshal(t.Raw, &bt); err != nil {
				b.Err = fmt.Errorf("token %d: %w", id, err)
			} else if b.JWE, err = jose.ParseFlattened(bt.JWE); err != nil {
				b.Err = fmt.Errorf("token %d: %w", id, err)
			}
			out = append(out, b)
		}
	}
	return out
}

// BindingFor returns the binding of keyslot slot.
func BindingFor(h *Header, slot int) (*Binding, error) {
	if _, ok := h.Keyslot(slot); !ok {
		return nil, fmt.Errorf("keyslot %d is not in use", slot)
	}
	for _, b := range Bindings(h) {
		if b.Slot == slot {
			if b.Err != nil {
				return nil, b.Err
			}
			return &b, nil
		}
	}
	return nil, fmt.Errorf("keyslot %d has no clevis or tether binding", slot)
}

// tokenJSON makes a clevis or tether token for slot.
func tokenJSON(slot int, j *jose.JWE) ([]byte, error) {
	typ := TypeTether
	if name, err := j.Header.Pin(); err == nil && clevisKnows(name, j) {
		typ = TypeClevis
	}
	return json.Marshal(bindingToken{Type: typ, Keyslots: []string{strconv.Itoa(slot)}, JWE: j.Flattened()})
}

// clevisKnows reports whether stock clevis can decrypt j: its pin and, for
// sss, every child's pin are clevis pins.
func clevisKnows(name string, j *jose.JWE) bool {
	if !clevisPins[name] {
		return false
	}
	if name != "sss" {
		return true
	}
	var ch struct {
		SSS struct {
			JWE []string `json:"jwe"`
		} `json:"sss"`
	}
	if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil {
		return false
	}
	for _, c := range ch.SSS.JWE {
		cj, err := jose.ParseCompact(c)
		if err != nil {
			return false
		}
		cn, err := cj.Header.Pin()
		if err != nil || !clevisKnows(cn, cj) {
			return false
		}
	}
	return true
}

// txn is the tether-txn token: the intent of an unfinished change.
type txn struct {
	Type     string   `json:"type"`
	Keyslots []string `json:"keyslots"` // always empty: the token opens nothing
	Op       string   `json:"op"`       // "bind", "regen" or "unbind"
	Slot     string   `json:"slot"`     // the keyslot being added
	OldSlot  string   `json:"old_slot,omitempty"`
	OldToken string   `json:"old_token,omitempty"`
	Backup   string   `json:"backup,omitempty"` // header backup to delete when done
}

// parseTxn reads a txn token. The header is not trusted (a disk can come
// from anyone): the keyslots it names must be ids, and the backup it asks
// to delete must be one tether made for this volume — a file named
// UUID-*.header directly in stateDir — else it is not deleted (ok false
// says so; the rest of the token still counts).
func parseTxn(raw []byte, stateDir, uuid string) (x txn, backupOK bool, err error) {
	if err := json.Unmarshal(raw, &x); err != nil {
		return txn{}, false, err
	}
	if _, err := slotID(x.Slot); err != nil {
		return txn{}, false, fmt.Errorf("slot: %w", err)
	}
	if x.Op == "regen" {
		if _, err := slotID(x.OldSlot); err != nil {
			return txn{}, false, fmt.Errorf("old slot: %w", err)
		}
	}
	if x.Backup == "" {
		return x, true, nil
	}
	dir, base := filepath.Split(x.Backup)
	if uuid == "" || filepath.Clean(dir) != filepath.Clean(stateDir) || filepath.Clean(x.Backup) != x.Backup ||
		!strings.HasPrefix(base, uuid+"-") || !strings.HasSuffix(base, ".header") {
		return x, false, nil
	}
	return x, true, nil
}

// lock serialises tether's changes to one volume. cryptsetup has its own
// locks for each command; this one covers tether's multi-step changes.
func (v *Volume) lock() (unlock func(), err error) {
	dir := v.stateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	// Header backups and the keys of unfinished encryptions live here.
	if fi, err := os.Stat(dir); err != nil {
		return nil, err
	} else if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("state directory %s is open to other users (mode %o); it holds header backups and keys: chmod 700 %s, or choose another with --state-dir", dir, fi.Mode().Perm(), dir)
	}
	abs, err := filepath.Abs(v.Path)
	if err != nil {
		return nil, err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	sum := sha256.Sum256([]byte(abs))
	name := filepath.Join(dir, "lock-"+hex.EncodeToString(sum[:8]))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", v.Path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", v.Path, err)
	}
	v.held = f
	return func() { v.held = nil; f.Close() }, nil
}

// Leftover is something an interrupted change left in the header.
type Leftover struct {
	Token int
	What  string // for a person
}

// Leftovers lists what interrupted tether (or clevis) changes left: txn
// tokens and binding tokens that no longer list an active keyslot.
func Leftovers(h *Header) []Leftover {
	var out []Leftover
	for _, id := range h.TokenIDs() {
		t, _ := h.Token(id)
		switch t.Type {
		case TypeTxn:
			var x txn
			json.Unmarshal(t.Raw, &x)
			what := fmt.Sprintf("token %d: unfinished %s of keyslot %s", id, x.Op, x.Slot)
			out = append(out, Leftover{Token: id, What: what})
		case TypeClevis, TypeTether:
			live := false
			for _, ks := range t.Keyslots {
				n, _ := strconv.Atoi(ks)
				if _, ok := h.Keyslot(n); ok {
					live = true
				}
			}
			if !live {
				out = append(out, Leftover{Token: id, What: fmt.Sprintf("token %d: %s token for no active keyslot", id, t.Type)})
			}
		}
	}
	return out
}

// Repair finishes or rolls back what interrupted changes left, then
// returns the fresh header. Every mutating operation calls it first.
func (v *Volume) Repair(ctx context.Context) (*Header, error) {
	unlock, err := v.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return v.repair(ctx)
}

func (v *Volume) repair(ctx context.Context) (*Header, error) {
	h, err := v.checkedHeader()
	if err != nil {
		return nil, err
	}
	v.removeStaleBackups(h)
	if len(Leftovers(h)) == 0 {
		return h, nil
	}
	r := v.Runner
	for _, id := range h.TokenIDs() {
		t, _ := h.Token(id)
		if t.Type != TypeTxn {
			continue
		}
		x, backupOK, err := parseTxn(t.Raw, v.stateDir(), h.UUID)
		if err != nil {
			return nil, fmt.Errorf("token %d: %w", id, err)
		}
		if !backupOK {
			v.logf("token %d names %q as its header backup, which is not one tether makes in %s: not deleted", id, x.Backup, v.stateDir())
			x.Backup = ""
		}
		slot, _ := slotID(x.Slot)
		done := slotActive(h, slot) && hasBindingFor(h, slot)
		switch {
		case x.Op == "unbind":
			// Finish the removal: the keyslot may already be wiped.
			// Its binding token, left without a keyslot, goes below.
			if slotActive(h, slot) {
				if err := v.killSlot(ctx, h, slot); err != nil {
					return nil, err
				}
			}
			v.logf("finished an interrupted unbind of keyslot %d", slot)
		case done && x.Op == "regen":
			// The new binding is in place and was verified before its
			// token was written: finish removing the old one.
			old, _ := slotID(x.OldSlot)
			if slotActive(h, old) && old != slot {
				if err := v.killSlot(ctx, h, old); err != nil {
					return nil, err
				}
				v.logf("finished an interrupted regen: removed the old keyslot %d (replaced by %d)", old, slot)
			}
		case done:
			v.logf("finished an interrupted bind of keyslot %d", slot)
		default:
			// Roll back: remove the slot the change added, but only if
			// it still looks like ours (a PBKDF2 machine slot that no
			// token uses): someone may have added a key there since.
			if ks, ok := h.Keyslot(slot); ok {
				if ks.KDF.Type == "pbkdf2" && ks.KDF.Iterations == MachineKDF("").Iterations && len(h.TokensFor(slot)) == 0 {
					if err := v.killSlot(ctx, h, slot); err != nil {
						return nil, err
					}
					v.logf("rolled back an interrupted %s: removed keyslot %d, which it had added", x.Op, slot)
				} else {
					v.logf("an interrupted %s had planned keyslot %d, which now holds another key: left alone", x.Op, slot)
				}
			} else {
				v.logf("rolled back an interrupted %s of keyslot %d (nothing had been added)", x.Op, slot)
			}
		}
		if h, err = v.Header(); err != nil {
			return nil, err
		}
		if err := r.RemoveToken(ctx, v.Path, id); err != nil {
			return nil, err
		}
		if x.Backup != "" {
			os.Remove(x.Backup)
		}
		if h, err = v.Header(); err != nil {
			return nil, err
		}
	}
	// Binding tokens whose keyslots are gone (killed by an interrupted
	// unbind or regen, or by hand) open nothing: remove them.
	for _, l := range Leftovers(h) {
		t, ok := h.Token(l.Token)
		if !ok || (t.Type != TypeClevis && t.Type != TypeTether) {
			continue
		}
		if err := r.RemoveToken(ctx, v.Path, l.Token); err != nil {
			return nil, err
		}
		v.logf("removed %s token %d, which opened no keyslot any more", t.Type, l.Token)
	}
	return v.Header()
}

// removeStaleBackups deletes header backups of this volume that no txn
// token refers to: they were made by a change that died before it wrote
// its txn token, or that finished. A backup holds every keyslot of its
// time, removed passphrases included, so none is kept longer than needed.
func (v *Volume) removeStaleBackups(h *Header) {
	if h.UUID == "" {
		return
	}
	live := map[string]bool{}
	for _, id := range h.TokenIDs() {
		if t, _ := h.Token(id); t.Type == TypeTxn {
			var x txn
			if json.Unmarshal(t.Raw, &x) == nil {
				live[x.Backup] = true
			}
		}
	}
	old, _ := filepath.Glob(filepath.Join(v.stateDir(), h.UUID+"-*.header"))
	for _, f := range old {
		if !live[f] {
			os.Remove(f)
		}
	}
}

func slotActive(h *Header, n int) bool { _, ok := h.Keyslot(n); return ok }

func hasBindingFor(h *Header, slot int) bool {
	for _, id := range h.TokensFor(slot) {
		if t, _ := h.Token(id); t.Type == TypeClevis || t.Type == TypeTether {
			return true
		}
	}
	return false
}

// killSlot removes keyslot n, refusing to remove the last keyslot: tether
// never leaves a volume without a way in.
func (v *Volume) killSlot(ctx context.Context, h *Header, n int) error {
	if err := v.mayKill(h, n); err != nil {
		return err
	}
	return v.Runner.KillSlot(ctx, v.Path, n)
}

// mayKill refuses to remove the last keyslot: the volume would be lost.
func (v *Volume) mayKill(h *Header, n int) error {
	for _, s := range h.Slots() {
		if ks, _ := h.Keyslot(s); s != n && ks.Type == "luks2" {
			return nil
		}
	}
	return fmt.Errorf("refusing to remove keyslot %d: it is the last keyslot of %s", n, v.Path)
}

// checkedHeader reads the header and refuses volumes tether must not
// change: an unfinished reencryption belongs to cryptsetup (or to
// tether luks encrypt) first.
func (v *Volume) checkedHeader() (*Header, error) {
	h, err := v.Header()
	if err != nil {
		return nil, err
	}
	if h.Reencrypting() {
		return nil, ErrReencrypting
	}
	return h, nil
}

// ErrReencrypting is returned for a volume whose encryption or
// reencryption has not finished.
var ErrReencrypting = errors.New("the volume's encryption or reencryption is unfinished")

// crashpoint kills the process at a named step when the test environment
// asks for it (TETHER_TEST_CRASH_AT=step): the crash tests run the real
// binary and check that every step is safe to die at.
func crashpoint(step string) {
	if s := os.Getenv("TETHER_TEST_CRASH_AT"); s != "" && s == step {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
