package boot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"

	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/tpm2"
)

// Key is what opens a volume: a passphrase and the keyslot it belongs to.
// Whoever receives a Key clears Passphrase when done.
type Key struct {
	Passphrase []byte
	Slot       int // the LUKS keyslot, -1 if unknown
	Token      int // the LUKS2 token it came from, -1 if unknown
}

// Recoverer recovers a LUKS device's key from its bindings. It is the seam
// between boot integration and the LUKS layer: tests swap in fakes, and the
// luks package's own implementation can replace TokenRecoverer.
type Recoverer interface {
	Recover(ctx context.Context, device string) (Key, error)
}

// PermanentError marks a failure that retrying will not fix (the device
// is not LUKS2, it has no bindings, every binding was refused for good),
// so a caller with a deadline gives up at once instead of waiting it out.
// It is the pins' own type: a pin's definitive refusal is one.
type PermanentError = pin.PermanentError

// IsPermanent reports whether err is, or wraps, a PermanentError.
func IsPermanent(err error) bool { return pin.IsPermanent(err) }

// ErrNotBound means a device has no tether or clevis bindings.
var ErrNotBound = errors.New("no clevis or tether bindings in the LUKS2 header")

// TokenRecoverer reads a device's LUKS2 header (in pure Go, with the luks
// package) and decrypts every binding at once — clevis tokens and tether's
// own — the first that decrypts wins. Tokens of keyslots that are not in
// use (the leftovers of an interrupted bind) are not bindings.
//
// PINs, if set, asks for the PIN of bindings that need one (a tpm2 pin
// "with_pin", alone or in sss): those are tried only after every binding
// without a PIN failed, so a volume that opens by itself shows no
// question. Without PINs they fail at once (pin.ErrNoPIN).
type TokenRecoverer struct {
	Options pin.Options // passed to every pin
	PINs    PINs
}

// Bindings lists the readable bindings of device.
func (r TokenRecoverer) Bindings(ctx context.Context, device string) ([]luks.Binding, error) {
	h, err := luks.ReadHeaderFile(device)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err // it may still appear
		}
		return nil, &PermanentError{Err: fmt.Errorf("read LUKS2 header: %w", err)}
	}
	if h.Reencrypting() {
		return nil, &PermanentError{Err: fmt.Errorf("%s: %w", device, luks.ErrReencrypting)}
	}
	var out []luks.Binding
	for _, b := range luks.Bindings(h) {
		if b.Err == nil && b.JWE != nil {
			out = append(out, b)
		}
	}
	return out, nil
}

// Recover implements Recoverer.
func (r TokenRecoverer) Recover(ctx context.Context, device string) (Key, error) {
	bs, err := r.Bindings(ctx, device)
	if err != nil {
		return Key{Slot: -1, Token: -1}, err
	}
	if len(bs) == 0 {
		return Key{Slot: -1, Token: -1}, &PermanentError{Err: fmt.Errorf("%s: %w", device, ErrNotBound)}
	}
	var plain, withPIN []luks.Binding
	for _, b := range bs {
		if r.PINs != nil && tpm2.NeedsPIN(b.JWE) {
			withPIN = append(withPIN, b)
		} else {
			plain = append(plain, b)
		}
	}
	re := &RecoverError{Device: device}
	if key, ok := r.race(ctx, plain, r.Options, re); ok {
		if r.PINs != nil {
			r.PINs.Done(device) // withdraw a question an earlier attempt posted
		}
		return key, nil
	}
	if len(withPIN) > 0 {
		o := r.Options
		// The question outlives this attempt (ctx is the whole
		// request's): the next attempt finds the PIN typed meanwhile.
		o.PIN = r.PINs.For(ctx, device)
		n := len(re.Errs)
		if key, ok := r.race(ctx, withPIN, o, re); ok {
			r.PINs.Done(device)
			return key, nil
		}
		for _, e := range re.Errs[n:] {
			if errors.Is(e.Err, pin.ErrWrongPIN) {
				r.PINs.Wrong(device) // once: all of them had the same PIN
				break
			}
		}
	}
	sort.Slice(re.Errs, func(i, j int) bool { return re.Errs[i].Token < re.Errs[j].Token })
	if re.Permanent() {
		// Every binding said a definitive no: waiting changes nothing.
		return Key{Slot: -1, Token: -1}, &PermanentError{Err: re}
	}
	return Key{Slot: -1, Token: -1}, re
}

// race decrypts every binding of bs at once with o: the first that
// decrypts wins; the errors of the others are added to re.
func (r TokenRecoverer) race(ctx context.Context, bs []luks.Binding, o pin.Options, re *RecoverError) (Key, bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		b   luks.Binding
		key []byte
		err error
	}
	ch := make(chan result, len(bs))
	for _, b := range bs {
		go func() {
			key, err := pin.Decrypt(ctx, b.JWE, o)
			ch <- result{b, key, err}
		}()
	}
	for range bs {
		res := <-ch
		if res.err == nil {
			return Key{Passphrase: res.key, Slot: res.b.Slot, Token: res.b.Token}, true
		}
		re.Errs = append(re.Errs, &BindingError{Token: res.b.Token, Desc: pin.Describe(res.b.JWE), Err: res.err})
	}
	return Key{}, false
}
