// Package pin defines what a pin is — a way to encrypt a small secret so
// that it can only be decrypted where a policy holds (a Tang server is
// reachable, a TPM is in a given state, t of n other pins agree) — and
// keeps the registry of pins by name.
//
// Every pin produces a compact JWE in Clevis's format: the protected header
// carries {"clevis":{"pin":NAME,NAME:{...}}} with everything needed to
// decrypt, so a JWE is self-describing and Decrypt needs no configuration.
package pin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/tether-nbde/tether/jose"
)

// Options tune encryption and decryption. The zero value is usable.
type Options struct {
	// Trust skips the advertisement trust check of network pins (clevis -y).
	Trust bool
	// Timeout bounds each network exchange or child pin. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Warn receives warnings for the person running the command, such as
	// credentials stored in the clear; nil means os.Stderr.
	Warn io.Writer
	// PIN asks the person for the PIN of a secret sealed with one (the
	// tpm2 pin's "with_pin"). prompt says what it is for; confirm asks
	// for a new PIN, twice. nil means nobody can be asked (a boot
	// service): such secrets then fail with ErrNoPIN.
	PIN func(prompt string, confirm bool) ([]byte, error)
	// Skip, if set, is asked before Decrypt hands a JWE to its pin,
	// for every JWE of a policy (the children of sss too): a non-nil
	// error fails that JWE at once, without asking its pin. tether tpm
	// heal leaves out every pin but the network ones with it, to prove
	// that a secret is recovered with the machine at home.
	Skip func(j *jose.JWE) error
}

// ErrWrongPIN is matched (errors.Is) by refusals because of the PIN: it
// was wrong, or the TPM refuses PINs for now. Asking again with the same
// PIN is pointless, and the PIN must not be reused for a new binding.
var ErrWrongPIN = errors.New("wrong PIN")

// ErrNoPIN is returned for a secret that needs a PIN when Options.PIN is
// nil.
var ErrNoPIN = errors.New("this secret needs a PIN and nobody can be asked for it here; " +
	"decrypt it on a terminal (tether decrypt asks), or give the PIN with --pin-file FILE")

// Warnf writes one warning line to o.Warn.
func (o Options) Warnf(format string, args ...any) {
	w := o.Warn
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, "tether: warning: "+format+"\n", args...)
}

// PlainCredentialsError is what a pin that fetches key material with
// credentials (https, smb) returns when those credentials would be stored
// in the clear in the JWE header and the configuration neither protects
// them with another pin nor accepts the risk.
type PlainCredentialsError struct {
	Pin  string // "smb", "https"
	What string // "the share password"
}

func (e *PlainCredentialsError) Error() string {
	return e.What + ` would be stored in the clear in the JWE header, where anyone holding the disk can read it; ` +
		`protect it with another pin ("protect") or accept that with "allow_plain_credentials":true`
}

// DefaultTimeout bounds one network exchange when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// PerTry returns the per-exchange timeout to use.
func (o Options) PerTry() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

// PermanentError is a definitive refusal: asking again will not change
// the answer (the device was revoked or is unknown to the server, the
// credentials were withdrawn, the JWE names another machine). Callers
// that retry until a deadline — keyd, the password agent, the initramfs —
// give up at once instead of waiting it out on every boot. A refusal an
// administrator may lift (lockdown, approval pending, a disabled device)
// or a server that does not answer is not permanent.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as a PermanentError; nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{err}
}

// IsPermanent reports whether err is, or wraps, a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// Pin encrypts and decrypts secrets under one kind of policy.
type Pin interface {
	// Encrypt encrypts secret under cfg, the pin's JSON configuration.
	Encrypt(ctx context.Context, cfg json.RawMessage, secret []byte, o Options) (*jose.JWE, error)
	// Decrypt decrypts a JWE this pin made. The JWE's header has already
	// been checked to name this pin.
	Decrypt(ctx context.Context, j *jose.JWE, o Options) ([]byte, error)
}

var (
	mu   sync.RWMutex
	pins = map[string]Pin{}
)

// Register makes a pin available by name. It is called from the init
// functions of the pin packages.
func Register(name string, p Pin) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := pins[name]; dup {
		panic("pin: duplicate registration of " + name)
	}
	pins[name] = p
}

// Names lists the registered pins.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	var out []string
	for n := range pins {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func lookup(name string) (Pin, error) {
	mu.RLock()
	defer mu.RUnlock()
	p, ok := pins[name]
	if !ok {
		return nil, fmt.Errorf("unknown pin %q (known pins: %v)", name, namesLocked())
	}
	return p, nil
}

func namesLocked() []string {
	var out []string
	for n := range pins {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Encrypt encrypts secret with the named pin.
func Encrypt(ctx context.Context, name string, cfg json.RawMessage, secret []byte, o Options) (*jose.JWE, error) {
	p, err := lookup(name)
	if err != nil {
		return nil, err
	}
	if !json.Valid(cfg) {
		return nil, fmt.Errorf("%s: configuration is not valid JSON", name)
	}
	j, err := p.Encrypt(ctx, cfg, secret, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return j, nil
}

// Decrypt decrypts any JWE made by a registered pin, choosing the pin from
// the JWE's header.
func Decrypt(ctx context.Context, j *jose.JWE, o Options) ([]byte, error) {
	name, err := j.Header.Pin()
	if err != nil {
		return nil, err
	}
	p, err := lookup(name)
	if err != nil {
		return nil, err
	}
	if o.Skip != nil {
		if err := o.Skip(j); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	out, err := p.Decrypt(ctx, j, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// Describe returns a one-line human description of a JWE's policy, such as
// "tang(http://keys.lan)" or "sss(t=2; tang(a), tang(b), tpm2)". Pins that
// implement Describer say more than their name.
func Describe(j *jose.JWE) string {
	name, err := j.Header.Pin()
	if err != nil {
		return "unknown"
	}
	mu.RLock()
	p := pins[name]
	mu.RUnlock()
	if d, ok := p.(Describer); ok {
		return d.Describe(j)
	}
	return name
}

// Describer is implemented by pins that can summarise a JWE's policy.
type Describer interface {
	Describe(j *jose.JWE) string
}

// Each pin owns the format of its clevis header member: what follows asks
// the pin that made a JWE, so that callers (luks, the CLI) rebuild
// configurations and find Tang keys without knowing any pin's header. A
// pin implements the interfaces its header supports; the functions fall
// back to the same answer for a pin that does not as for an unknown one.

// Configurer is implemented by pins that can rebuild, from the header of
// a JWE they made, a configuration that makes another JWE of the same
// policy, as clevis luks list and regen do. Pins whose configuration
// names what no header holds (a password or key file, a device identity:
// https, smb, managed) do not implement it.
type Configurer interface {
	// ConfigOf returns the configuration, from the header alone: no
	// network, no secret.
	ConfigOf(j *jose.JWE) (json.RawMessage, error)
}

// Regenerator is implemented by pins whose configuration for a fresh
// encryption (a regen) should differ from ConfigOf's: tang carries the
// trust of the original binding over to the server's current keys, sss
// asks the same of its children. It may ask servers, each exchange
// bounded by o.PerTry().
type Regenerator interface {
	RegenConfig(ctx context.Context, j *jose.JWE, o Options) (json.RawMessage, error)
}

// TangKey is an exchange key of a Tang server that a JWE was made with: it
// decrypts only while the server still holds that key.
type TangKey struct {
	URL string // the server
	Kid string // the S256 thumbprint of its exchange key
}

// TangKeyer is implemented by pins whose JWEs depend on Tang servers'
// keys: tang itself, and pins that hold other pins' JWEs (sss), through
// their children.
type TangKeyer interface {
	TangKeys(j *jose.JWE) []TangKey
}

// registered returns the pin named in j's header, or nil if none is
// registered under that name.
func registered(j *jose.JWE) (string, Pin, error) {
	name, err := j.Header.Pin()
	if err != nil {
		return "", nil, err
	}
	mu.RLock()
	defer mu.RUnlock()
	return name, pins[name], nil
}

// ConfigOf rebuilds the pin name and configuration a JWE was made with,
// from its header (see Configurer).
func ConfigOf(j *jose.JWE) (string, json.RawMessage, error) {
	name, p, err := registered(j)
	if err != nil {
		return "", nil, err
	}
	c, ok := p.(Configurer)
	if !ok {
		return "", nil, fmt.Errorf("cannot rebuild the configuration of a %s binding", name)
	}
	cfg, err := c.ConfigOf(j)
	if err != nil {
		return "", nil, err
	}
	return name, cfg, nil
}

// RegenConfig is ConfigOf for encrypting anew now: pins that implement
// Regenerator refresh what the header holds (see there); for the others
// it is ConfigOf.
func RegenConfig(ctx context.Context, j *jose.JWE, o Options) (string, json.RawMessage, error) {
	name, cfg, err := ConfigOf(j)
	if err != nil {
		return "", nil, err
	}
	_, p, _ := registered(j)
	r, ok := p.(Regenerator)
	if !ok {
		return name, cfg, nil
	}
	if cfg, err = r.RegenConfig(ctx, j, o); err != nil {
		return "", nil, err
	}
	return name, cfg, nil
}

// TangKeys lists the Tang keys a JWE depends on (see TangKeyer): none for
// pins that do not implement TangKeyer, or a header that is not well
// formed.
func TangKeys(j *jose.JWE) []TangKey {
	_, p, err := registered(j)
	if err != nil {
		return nil
	}
	if t, ok := p.(TangKeyer); ok {
		return t.TangKeys(j)
	}
	return nil
}
