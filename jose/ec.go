package jose

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"

	"filippo.io/nistec"

	"github.com/tether-nbde/tether/jose/internal/p521"
)

// Curve is one of the NIST curves Tang keys may use. Points travel as
// uncompressed SEC 1 encodings (0x04 ‖ X ‖ Y) between the functions here;
// JWK coordinates are the fixed-length X and Y halves.
type Curve struct {
	Name string // JOSE name: "P-256", "P-384", "P-521"
	Size int    // bytes per coordinate and per scalar
	Alg  string // the ES* signature algorithm that goes with the curve
	ecdh ecdh.Curve
	ops  pointOps
	// baseMult, if set, computes scalar·G faster than crypto/ecdh.
	baseMult func(scalar []byte) ([]byte, error)
}

var (
	P256 = &Curve{Name: "P-256", Size: 32, Alg: "ES256", ecdh: ecdh.P256(), ops: nistOps[*nistec.P256Point]{nistec.NewP256Point}}
	P384 = &Curve{Name: "P-384", Size: 48, Alg: "ES384", ecdh: ecdh.P384(), ops: nistOps[*nistec.P384Point]{nistec.NewP384Point}}
	// P-521 uses tether's own constant-time implementation, several times
	// faster than nistec's (docs/P521.md): it is the default Tang curve.
	P521 = &Curve{Name: "P-521", Size: 66, Alg: "ES512", ecdh: ecdh.P521(), ops: p521Ops{}, baseMult: p521.ScalarBaseMult}
)

// CurveByName returns the curve with the given JOSE name.
func CurveByName(name string) (*Curve, error) {
	switch name {
	case "P-256":
		return P256, nil
	case "P-384":
		return P384, nil
	case "P-521":
		return P521, nil
	case "":
		return nil, errors.New("jwk: missing crv")
	}
	return nil, fmt.Errorf("jwk: unsupported curve %q (want P-256, P-384 or P-521)", name)
}

// GenerateKey returns a new random private EC key on c with the given alg
// and key_ops.
func (c *Curve) GenerateKey(alg string, ops ...string) (*JWK, error) {
	priv, err := c.ecdh.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k := c.JWKFromPoint(priv.PublicKey().Bytes())
	k.D = B64.EncodeToString(priv.Bytes())
	k.Alg = alg
	k.KeyOps = ops
	return k, nil
}

// JWKFromPoint returns the public JWK for an uncompressed point.
func (c *Curve) JWKFromPoint(p []byte) *JWK {
	return &JWK{
		Kty: "EC",
		Crv: c.Name,
		X:   B64.EncodeToString(p[1 : 1+c.Size]),
		Y:   B64.EncodeToString(p[1+c.Size:]),
	}
}

// Point returns the uncompressed encoding of k's public point, checking that
// k is on c and that the point is on the curve and not the identity.
func (c *Curve) Point(k *JWK) ([]byte, error) {
	if k.Kty != "EC" {
		return nil, fmt.Errorf("jwk: key type %q is not EC", k.Kty)
	}
	if k.Crv != c.Name {
		return nil, fmt.Errorf("jwk: curve %q does not match %s", k.Crv, c.Name)
	}
	x, errx := decodeB64(k.X)
	y, erry := decodeB64(k.Y)
	if errx != nil || erry != nil || len(x) != c.Size || len(y) != c.Size {
		return nil, fmt.Errorf("jwk: coordinates are not %d bytes of base64url", c.Size)
	}
	p := make([]byte, 0, 1+2*c.Size)
	p = append(append(append(p, 4), x...), y...)
	if err := c.ops.check(p); err != nil {
		return nil, errors.New("jwk: point is not on the curve")
	}
	return p, nil
}

// Scalar returns k's private scalar.
func (c *Curve) Scalar(k *JWK) ([]byte, error) {
	d, err := decodeB64(k.D)
	if err != nil || len(d) != c.Size {
		return nil, errors.New("jwk: private scalar missing or malformed")
	}
	if _, err := c.ecdh.NewPrivateKey(d); err != nil {
		return nil, fmt.Errorf("jwk: invalid private scalar: %w", err)
	}
	return d, nil
}

// RandomScalar returns a uniformly random valid scalar and its public point.
func (c *Curve) RandomScalar() (scalar, point []byte, err error) {
	if c.baseMult != nil {
		d, err := randomScalar(c)
		if err != nil {
			return nil, nil, err
		}
		p, err := c.baseMult(d)
		if err != nil {
			return nil, nil, err
		}
		return d, p, nil
	}
	priv, err := c.ecdh.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	return priv.Bytes(), priv.PublicKey().Bytes(), nil
}

// randomScalar draws a scalar uniformly from [1, n) by rejection sampling.
func randomScalar(c *Curve) ([]byte, error) {
	n := curveOrder(c)
	bits := n.BitLen()
	d := make([]byte, c.Size)
	for {
		if _, err := rand.Read(d); err != nil {
			return nil, err
		}
		// Clear the bits above the order's length, then reject ≥ n and 0.
		if excess := c.Size*8 - bits; excess > 0 {
			d[0] &= byte(0xff >> excess)
		}
		k := new(big.Int).SetBytes(d)
		if k.Sign() > 0 && k.Cmp(n) < 0 {
			return d, nil
		}
	}
}

func curveOrder(c *Curve) *big.Int {
	_, ec := esHash(c)
	return ec.Params().N
}

// ScalarMult returns scalar·p. The result is never the identity: a scalar
// in [1, n) times a point of prime order cannot be.
func (c *Curve) ScalarMult(p, scalar []byte) ([]byte, error) { return c.ops.mul(p, scalar) }

// Add returns a+b, or an error if the sum is the identity.
func (c *Curve) Add(a, b []byte) ([]byte, error) { return c.ops.add(a, b, false) }

// Sub returns a−b, or an error if the difference is the identity.
func (c *Curve) Sub(a, b []byte) ([]byte, error) { return c.ops.add(a, b, true) }

// X returns the x coordinate of an uncompressed point.
func (c *Curve) X(p []byte) []byte { return p[1 : 1+c.Size] }

// p521Ops is P-521 arithmetic with jose/internal/p521. It accepts only
// uncompressed points (as JWKs carry them) and reports the identity as an
// error, like nistOps.
type p521Ops struct{}

func uncompressed521(b []byte) error {
	if len(b) != 1+2*66 || b[0] != 4 || !p521.IsOnCurve(b) {
		return errors.New("ec: point is not an uncompressed P-521 point on the curve")
	}
	return nil
}

func (p521Ops) check(b []byte) error { return uncompressed521(b) }

func (p521Ops) mul(b, scalar []byte) ([]byte, error) {
	if err := uncompressed521(b); err != nil {
		return nil, err
	}
	r, err := p521.ScalarMult(b, scalar)
	if err != nil {
		return nil, err
	}
	if len(r) == 1 {
		return nil, errIdentity
	}
	return r, nil
}

func (p521Ops) add(a, b []byte, negateB bool) ([]byte, error) {
	if err := uncompressed521(a); err != nil {
		return nil, err
	}
	if err := uncompressed521(b); err != nil {
		return nil, err
	}
	op := p521.Add
	if negateB {
		op = p521.Sub
	}
	r, err := op(a, b)
	if err != nil {
		return nil, err
	}
	if len(r) == 1 {
		return nil, errIdentity
	}
	return r, nil
}

// pointOps is the arithmetic a curve needs, over uncompressed encodings.
type pointOps interface {
	check(p []byte) error
	mul(p, scalar []byte) ([]byte, error)
	add(a, b []byte, negateB bool) ([]byte, error)
}

// nistPoint is the method set shared by filippo.io/nistec's point types.
type nistPoint[P any] interface {
	SetBytes([]byte) (P, error)
	Bytes() []byte
	Add(P, P) P
	Negate(P) P
	ScalarMult(P, []byte) (P, error)
	IsInfinity() int
}

type nistOps[P nistPoint[P]] struct{ newPoint func() P }

var errIdentity = errors.New("ec: result is the point at infinity")

func (o nistOps[P]) decode(b []byte) (P, error) {
	if len(b) == 0 || b[0] != 4 {
		var zero P
		return zero, errors.New("ec: point is not in uncompressed form")
	}
	return o.newPoint().SetBytes(b)
}

func (o nistOps[P]) check(b []byte) error {
	_, err := o.decode(b)
	return err
}

func (o nistOps[P]) mul(b, scalar []byte) ([]byte, error) {
	p, err := o.decode(b)
	if err != nil {
		return nil, err
	}
	r, err := o.newPoint().ScalarMult(p, scalar)
	if err != nil {
		return nil, err
	}
	if r.IsInfinity() == 1 {
		return nil, errIdentity
	}
	return r.Bytes(), nil
}

func (o nistOps[P]) add(a, b []byte, negateB bool) ([]byte, error) {
	pa, err := o.decode(a)
	if err != nil {
		return nil, err
	}
	pb, err := o.decode(b)
	if err != nil {
		return nil, err
	}
	if negateB {
		pb = o.newPoint().Negate(pb)
	}
	r := o.newPoint().Add(pa, pb)
	if r.IsInfinity() == 1 {
		return nil, errIdentity
	}
	return r.Bytes(), nil
}
