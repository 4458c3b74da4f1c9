// Package sss is the "sss" pin: Shamir's Secret Sharing over child pins.
// The content key is the constant term of a random polynomial of degree
// t−1 over a 256-bit safe prime; each child pin encrypts one point of it,
// so any t children can decrypt. The format is Clevis's.
//
// Decryption runs all children at once, each with its own timeout, and
// returns as soon as t have succeeded: a dead or silent server costs
// nothing when enough others answer.
package sss

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

func init() { pin.Register("sss", Pin{}) }

// Pin implements pin.Pin.
type Pin struct{}

// Config is the pin's configuration: {"t":N,"pins":{"tang":[{..},{..}],"tpm2":{}}}.
// A pin's value is one configuration object or an array of them.
type Config struct {
	T    int                        `json:"t"`
	Pins map[string]json.RawMessage `json:"pins"`
}

type header struct {
	JWE []string `json:"jwe"`
	P   string   `json:"p"`
	T   int      `json:"t"`
}

type clevisHeader struct {
	Pin string `json:"pin"`
	SSS header `json:"sss"`
}

const pointSize = 32 // bytes per coordinate; p has 256 bits

// child is one child pin configuration.
type child struct {
	name string
	cfg  json.RawMessage
}

func (c *Config) children() ([]child, error) {
	names := make([]string, 0, len(c.Pins))
	for n := range c.Pins {
		names = append(names, n)
	}
	sort.Strings(names) // deterministic child order
	var out []child
	for _, n := range names {
		raw := c.Pins[n]
		trimmed := strings.TrimSpace(string(raw))
		switch {
		case strings.HasPrefix(trimmed, "["):
			var arr []json.RawMessage
			if err := json.Unmarshal(raw, &arr); err != nil {
				return nil, fmt.Errorf("pins.%s: %v", n, err)
			}
			for _, a := range arr {
				out = append(out, child{n, a})
			}
		case strings.HasPrefix(trimmed, "{"):
			out = append(out, child{n, raw})
		default:
			return nil, fmt.Errorf("pins.%s must be an object or an array of objects", n)
		}
	}
	return out, nil
}

// Encrypt implements pin.Pin.
func (Pin) Encrypt(ctx context.Context, raw json.RawMessage, secret []byte, o pin.Options) (*jose.JWE, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("configuration is malformed: %v", err)
	}
	children, err := cfg.children()
	if err != nil {
		return nil, fmt.Errorf("configuration is malformed: %v", err)
	}
	if len(children) == 0 {
		return nil, errors.New(`configuration needs at least one pin in "pins"`)
	}
	if cfg.T < 1 || cfg.T > len(children) {
		return nil, fmt.Errorf(`threshold "t" must be between 1 and the number of pins (%d), got %d`, len(children), cfg.T)
	}
	p, err := safePrime()
	if err != nil {
		return nil, err
	}
	coeffs := make([]*big.Int, cfg.T)
	for i := range coeffs {
		if coeffs[i], err = rand.Int(rand.Reader, p); err != nil {
			return nil, err
		}
	}
	h := header{P: jose.B64.EncodeToString(p.FillBytes(make([]byte, pointSize))), T: cfg.T}
	seen := map[string]bool{}
	for _, c := range children {
		x, err := distinctX(p, seen)
		if err != nil {
			return nil, err
		}
		pt := encodePoint(x, eval(coeffs, x, p))
		j, err := pin.Encrypt(ctx, c.name, c.cfg, pt, o)
		clear(pt)
		if err != nil {
			return nil, err
		}
		h.JWE = append(h.JWE, j.Compact())
	}
	ch, _ := json.Marshal(clevisHeader{Pin: "sss", SSS: h})
	key := coeffs[0].FillBytes(make([]byte, pointSize))
	defer clear(key)
	return jose.Encrypt(jose.Header{Alg: "dir", Clevis: ch}, key, secret)
}

func distinctX(p *big.Int, seen map[string]bool) (*big.Int, error) {
	for {
		x, err := rand.Int(rand.Reader, p)
		if err != nil {
			return nil, err
		}
		if x.Sign() != 0 && !seen[x.String()] {
			seen[x.String()] = true
			return x, nil
		}
	}
}

// eval evaluates the polynomial at x mod p (Horner).
func eval(coeffs []*big.Int, x, p *big.Int) *big.Int {
	y := new(big.Int)
	for i := len(coeffs) - 1; i >= 0; i-- {
		y.Mul(y, x).Add(y, coeffs[i]).Mod(y, p)
	}
	return y
}

// safePrime returns a random 256-bit safe prime p = 2q+1 (q prime), as
// clevis uses.
func safePrime() (*big.Int, error) {
	for {
		q, err := rand.Prime(rand.Reader, 255)
		if err != nil {
			return nil, err
		}
		p := new(big.Int).Lsh(q, 1)
		p.Add(p, big.NewInt(1))
		if p.BitLen() == 256 && p.ProbablyPrime(20) {
			return p, nil
		}
	}
}

// parse checks an sss JWE's header.
func parse(j *jose.JWE) (*header, *big.Int, error) {
	if j.Header.Alg != "dir" {
		return nil, nil, fmt.Errorf("JWE alg is %q, want dir", j.Header.Alg)
	}
	var ch clevisHeader
	if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil {
		return nil, nil, fmt.Errorf("JWE header clevis.sss is malformed: %v", err)
	}
	h := &ch.SSS
	pb, err := jose.B64.DecodeString(h.P)
	if err != nil || len(pb) == 0 || len(pb) > pointSize {
		return nil, nil, errors.New("JWE header clevis.sss.p is malformed")
	}
	p := new(big.Int).SetBytes(pb)
	if p.Cmp(big.NewInt(3)) < 0 {
		return nil, nil, errors.New("JWE header clevis.sss.p is too small")
	}
	if h.T < 1 || h.T > len(h.JWE) {
		return nil, nil, fmt.Errorf("JWE header clevis.sss.t = %d does not fit %d children", h.T, len(h.JWE))
	}
	return h, p, nil
}

// ChildError reports why children failed when fewer than t succeeded.
// Final counts the children that refused for good (pin.PermanentError);
// when more than N−t did, the sss JWE can never be decrypted and Decrypt
// wraps the ChildError in a pin.PermanentError.
type ChildError struct {
	T, Got   int
	Errs     []error
	Final, N int
}

func (e *ChildError) Error() string {
	var msgs []string
	for _, err := range e.Errs {
		msgs = append(msgs, err.Error())
	}
	if e.Final > e.N-e.T && e.N > 0 {
		return fmt.Sprintf("%d of the %d pins refused for good, so fewer than the %d required can ever decrypt: %s", e.Final, e.N, e.T, strings.Join(msgs, "; "))
	}
	return fmt.Sprintf("only %d of the %d required pins could decrypt: %s", e.Got, e.T, strings.Join(msgs, "; "))
}

// Decrypt implements pin.Pin.
func (Pin) Decrypt(ctx context.Context, j *jose.JWE, o pin.Options) ([]byte, error) {
	_, p, xs, ys, err := collect(ctx, j, o)
	if err != nil {
		return nil, err
	}
	secret := interpolate(xs, ys, p, new(big.Int))
	if secret == nil {
		return nil, errors.New("shares are inconsistent")
	}
	key := secret.FillBytes(make([]byte, pointSize))
	defer clear(key)
	return j.Decrypt(key)
}

// collect decrypts the children of j at once and returns the first t
// distinct points they hold, with j's header and prime.
func collect(ctx context.Context, j *jose.JWE, o pin.Options) (*header, *big.Int, []*big.Int, []*big.Int, error) {
	h, p, err := parse(j)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Once t have answered, stop the children still running and wait for
	// them, so that none is cut off mid-way by the process's exit (a tpm2
	// child would leave its objects loaded in a TPM without a resource
	// manager).
	defer wg.Wait()
	defer cancel()
	type result struct {
		x, y *big.Int
		err  error
	}
	results := make(chan result, len(h.JWE))
	for i, c := range h.JWE {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cj, err := jose.ParseCompact(c)
			if err != nil {
				results <- result{err: pin.Permanent(fmt.Errorf("child %d: %v", i+1, err))}
				return
			}
			pt, err := pin.Decrypt(ctx, cj, o)
			if err != nil {
				results <- result{err: err}
				return
			}
			if len(pt) != 2*pointSize {
				results <- result{err: pin.Permanent(fmt.Errorf("child %d: decrypted share is %d bytes, want %d", i+1, len(pt), 2*pointSize))}
				return
			}
			results <- result{x: new(big.Int).SetBytes(pt[:pointSize]), y: new(big.Int).SetBytes(pt[pointSize:])}
			clear(pt)
		}()
	}
	var xs, ys []*big.Int
	var errs []error
	final := 0
	for range h.JWE {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
			if pin.IsPermanent(r.err) {
				final++
			}
			if final > len(h.JWE)-h.T {
				// Fewer than t children can still succeed, whatever
				// the others (a server down, slow) answer later.
				return nil, nil, nil, nil, pin.Permanent(&ChildError{T: h.T, Got: len(xs), Errs: errs, Final: final, N: len(h.JWE)})
			}
			continue
		}
		dup := false
		for _, x := range xs {
			dup = dup || x.Cmp(r.x) == 0
		}
		if dup {
			continue
		}
		xs, ys = append(xs, r.x), append(ys, r.y)
		if len(xs) == h.T {
			break
		}
	}
	if len(xs) < h.T {
		return nil, nil, nil, nil, &ChildError{T: h.T, Got: len(xs), Errs: errs, Final: final, N: len(h.JWE)}
	}
	return h, p, xs, ys, nil
}

// Opened is an sss JWE decrypted with the polynomial its children share
// kept, so that children can be replaced without asking the others to
// encrypt again (see Rewrap).
type Opened struct {
	// Plaintext is what the JWE protects.
	Plaintext []byte

	h      *header
	p      *big.Int
	xs, ys []*big.Int
}

// Open decrypts j as Decrypt does, and keeps the points of the t children
// that answered: together they are the polynomial.
func Open(ctx context.Context, j *jose.JWE, o pin.Options) (*Opened, error) {
	h, p, xs, ys, err := collect(ctx, j, o)
	if err != nil {
		return nil, err
	}
	secret := interpolate(xs, ys, p, new(big.Int))
	if secret == nil {
		return nil, errors.New("shares are inconsistent")
	}
	key := secret.FillBytes(make([]byte, pointSize))
	defer clear(key)
	pt, err := j.Decrypt(key)
	if err != nil {
		return nil, err
	}
	return &Opened{Plaintext: pt, h: h, p: p, xs: xs, ys: ys}, nil
}

// Rewrap returns a new sss JWE of the same threshold and polynomial that
// protects plaintext. Each child is kept byte for byte, except those for
// which renew returns a function: that function encrypts a fresh point of
// the polynomial (x, then y, 32 bytes each, as every child holds) into
// the child's replacement. Kept children are not asked anything: pins
// whose configuration cannot be rebuilt from their header (managed,
// https, smb) keep working, and their servers need not be reachable.
//
// Shares of replaced children stay valid points of the polynomial: a copy
// of the old JWE kept elsewhere still opens the new one with them.
func (op *Opened) Rewrap(ctx context.Context, plaintext []byte, renew func(child *jose.JWE) func(ctx context.Context, point []byte) (*jose.JWE, error)) (*jose.JWE, error) {
	h := header{P: op.h.P, T: op.h.T}
	seen := map[string]bool{}
	for _, x := range op.xs {
		seen[x.String()] = true
	}
	for i, c := range op.h.JWE {
		cj, err := jose.ParseCompact(c)
		if err != nil {
			return nil, fmt.Errorf("child %d: %v", i+1, err)
		}
		enc := renew(cj)
		if enc == nil {
			h.JWE = append(h.JWE, c)
			continue
		}
		x, err := distinctX(op.p, seen)
		if err != nil {
			return nil, err
		}
		y := interpolate(op.xs, op.ys, op.p, x)
		if y == nil {
			return nil, errors.New("shares are inconsistent")
		}
		pt := encodePoint(x, y)
		nj, err := enc(ctx, pt)
		clear(pt)
		if err != nil {
			return nil, fmt.Errorf("child %d (%s): %w", i+1, pin.Describe(cj), err)
		}
		h.JWE = append(h.JWE, nj.Compact())
	}
	ch, _ := json.Marshal(clevisHeader{Pin: "sss", SSS: h})
	key := interpolate(op.xs, op.ys, op.p, new(big.Int)).FillBytes(make([]byte, pointSize))
	defer clear(key)
	return jose.Encrypt(jose.Header{Alg: "dir", Clevis: ch}, key, plaintext)
}

// encodePoint encodes a point as a child holds it: x then y, 32 bytes
// each.
func encodePoint(x, y *big.Int) []byte {
	pt := make([]byte, 2*pointSize)
	x.FillBytes(pt[:pointSize])
	y.FillBytes(pt[pointSize:])
	return pt
}

// Children returns the child JWEs of an sss JWE, in header order.
func Children(j *jose.JWE) ([]*jose.JWE, error) {
	h, _, err := parse(j)
	if err != nil {
		return nil, err
	}
	out := make([]*jose.JWE, 0, len(h.JWE))
	for i, c := range h.JWE {
		cj, err := jose.ParseCompact(c)
		if err != nil {
			return nil, fmt.Errorf("child %d: %v", i+1, err)
		}
		out = append(out, cj)
	}
	return out, nil
}

// interpolate returns f(at) for the polynomial through the points, mod p
// (Lagrange). It returns nil if some xᵢ − xⱼ has no inverse mod p.
func interpolate(xs, ys []*big.Int, p, at *big.Int) *big.Int {
	sum := new(big.Int)
	for i := range xs {
		num, den := big.NewInt(1), big.NewInt(1)
		for j := range xs {
			if i == j {
				continue
			}
			num.Mul(num, new(big.Int).Sub(at, xs[j])).Mod(num, p)
			den.Mul(den, new(big.Int).Sub(xs[i], xs[j])).Mod(den, p)
		}
		inv := new(big.Int).ModInverse(den, p)
		if inv == nil {
			return nil
		}
		term := new(big.Int).Mul(ys[i], num)
		term.Mul(term, inv).Mod(term, p)
		sum.Add(sum, term).Mod(sum, p)
	}
	return sum
}

// Describe implements pin.Describer.
func (Pin) Describe(j *jose.JWE) string {
	h, _, err := parse(j)
	if err != nil {
		return "sss(?)"
	}
	parts := []string{fmt.Sprintf("t=%d", h.T)}
	for _, c := range h.JWE {
		if cj, err := jose.ParseCompact(c); err == nil {
			parts = append(parts, pin.Describe(cj))
		}
	}
	return "sss(" + strings.Join(parts, "; ") + ")"
}

// ConfigOf implements pin.Configurer: the threshold, and each child's
// configuration as its own pin rebuilds it.
func (Pin) ConfigOf(j *jose.JWE) (json.RawMessage, error) {
	var ch map[string]json.RawMessage
	json.Unmarshal(j.Header.Clevis, &ch)
	var s struct {
		T   int      `json:"t"`
		JWE []string `json:"jwe"`
	}
	if err := json.Unmarshal(ch["sss"], &s); err != nil {
		return nil, fmt.Errorf("sss JWE: %w", err)
	}
	pins := map[string][]json.RawMessage{}
	for _, c := range s.JWE {
		cj, err := jose.ParseCompact(c)
		if err != nil {
			return nil, fmt.Errorf("sss child: %w", err)
		}
		cn, cc, err := pin.ConfigOf(cj)
		if err != nil {
			return nil, err
		}
		pins[cn] = append(pins[cn], cc)
	}
	out, _ := json.Marshal(map[string]any{"t": s.T, "pins": pins})
	return out, nil
}

// RegenConfig implements pin.Regenerator: ConfigOf with each child's
// configuration as its pin regenerates it.
func (Pin) RegenConfig(ctx context.Context, j *jose.JWE, o pin.Options) (json.RawMessage, error) {
	var ch struct {
		SSS struct {
			T   int      `json:"t"`
			JWE []string `json:"jwe"`
		} `json:"sss"`
	}
	if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil {
		return nil, err
	}
	pins := map[string][]json.RawMessage{}
	for _, c := range ch.SSS.JWE {
		cj, err := jose.ParseCompact(c)
		if err != nil {
			return nil, err
		}
		cn, cc, err := pin.RegenConfig(ctx, cj, o)
		if err != nil {
			return nil, err
		}
		pins[cn] = append(pins[cn], cc)
	}
	out, _ := json.Marshal(map[string]any{"t": ch.SSS.T, "pins": pins})
	return out, nil
}

// TangKeys implements pin.TangKeyer: the Tang keys of the children that
// parse.
func (Pin) TangKeys(j *jose.JWE) []pin.TangKey {
	var ch map[string]json.RawMessage
	if json.Unmarshal(j.Header.Clevis, &ch) != nil {
		return nil
	}
	var s struct {
		JWE []string `json:"jwe"`
	}
	if json.Unmarshal(ch["sss"], &s) != nil {
		return nil
	}
	var out []pin.TangKey
	for _, c := range s.JWE {
		if cj, err := jose.ParseCompact(c); err == nil {
			out = append(out, pin.TangKeys(cj)...)
		}
	}
	return out
}
