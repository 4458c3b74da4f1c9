package boot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
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

// PermanentError marks a failure that retrying will not fix (the device is
// not LUKS2, it has no bindings), so a caller with a deadline gives up at
// once instead of waiting it out.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// ErrNotBound means a device has no tether or clevis bindings.
var ErrNotBound = errors.New("no clevis bindings in the LUKS2 header")

// TokenRecoverer reads a device's LUKS2 tokens with cryptsetup and decrypts
// every clevis token at once; the first that decrypts wins. It reads the
// token format of docs (clevis's): {"type":"clevis","keyslots":["N"],
// "jwe":{flattened JWE}}.
type TokenRecoverer struct {
	Cryptsetup string      // path of cryptsetup; "" means "cryptsetup" on PATH
	Options    pin.Options // passed to every pin
}

// Binding is one clevis token of a volume.
type Binding struct {
	Token int
	Slot  int
	JWE   *jose.JWE
}

type luksMetadata struct {
	Tokens map[string]json.RawMessage `json:"tokens"`
}

type clevisToken struct {
	Type     string          `json:"type"`
	Keyslots []string        `json:"keyslots"`
	JWE      json.RawMessage `json:"jwe"`
}

// Bindings lists the clevis tokens of device, in token order.
func (r TokenRecoverer) Bindings(ctx context.Context, device string) ([]Binding, error) {
	cs := r.Cryptsetup
	if cs == "" {
		cs = "cryptsetup"
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, cs, "luksDump", "--dump-json-metadata", device)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if _, ok := err.(*exec.ExitError); ok && ctx.Err() == nil {
			// cryptsetup ran and refused: not LUKS2, or unreadable.
			return nil, &PermanentError{fmt.Errorf("read LUKS2 header of %s: %s", device, msg)}
		}
		return nil, fmt.Errorf("read LUKS2 header of %s: %v %s", device, err, msg)
	}
	var md luksMetadata
	if err := json.Unmarshal(stdout.Bytes(), &md); err != nil {
		return nil, &PermanentError{fmt.Errorf("read LUKS2 header of %s: metadata is not JSON: %v", device, err)}
	}
	var out []Binding
	for id, raw := range md.Tokens {
		var tok clevisToken
		if json.Unmarshal(raw, &tok) != nil || tok.Type != "clevis" || len(tok.Keyslots) == 0 {
			continue
		}
		n, err1 := strconv.Atoi(id)
		slot, err2 := strconv.Atoi(tok.Keyslots[0])
		if err1 != nil || err2 != nil {
			continue
		}
		j, err := parseTokenJWE(tok.JWE)
		if err != nil {
			continue // a token we cannot read is not a binding we can use
		}
		out = append(out, Binding{Token: n, Slot: slot, JWE: j})
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Token < out[k].Token })
	return out, nil
}

// parseTokenJWE accepts the flattened JWE object clevis stores, and for
// robustness a compact JWE in a JSON string.
func parseTokenJWE(raw json.RawMessage) (*jose.JWE, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return jose.ParseCompact(s)
	}
	return jose.ParseFlattened(raw)
}

// Recover implements Recoverer.
func (r TokenRecoverer) Recover(ctx context.Context, device string) (Key, error) {
	bs, err := r.Bindings(ctx, device)
	if err != nil {
		return Key{Slot: -1, Token: -1}, err
	}
	if len(bs) == 0 {
		return Key{Slot: -1, Token: -1}, &PermanentError{fmt.Errorf("%s: %w", device, ErrNotBound)}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		b   Binding
		key []byte
		err error
	}
	ch := make(chan result, len(bs))
	for _, b := range bs {
		go func() {
			key, err := pin.Decrypt(ctx, b.JWE, r.Options)
			ch <- result{b, key, err}
		}()
	}
	var errs []string
	for range bs {
		res := <-ch
		if res.err == nil {
			return Key{Passphrase: res.key, Slot: res.b.Slot, Token: res.b.Token}, nil
		}
		errs = append(errs, fmt.Sprintf("token %d (%s): %v", res.b.Token, pin.Describe(res.b.JWE), res.err))
	}
	sort.Strings(errs)
	return Key{Slot: -1, Token: -1}, fmt.Errorf("no binding of %s answered: %s", device, strings.Join(errs, "; "))
}
