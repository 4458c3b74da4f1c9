package jose_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"testing"

	"github.com/tether-nbde/tether/jose"
)

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

var curves = []struct {
	c    *jose.Curve
	ecdh ecdh.Curve
}{{jose.P256, ecdh.P256()}, {jose.P384, ecdh.P384()}, {jose.P521, ecdh.P521()}}

// TestCurveArithmetic checks the point operations against crypto/ecdh.
func TestCurveArithmetic(t *testing.T) {
	for _, tc := range curves {
		t.Run(tc.c.Name, func(t *testing.T) {
			c := tc.c
			a, ap, err := c.RandomScalar()
			if err != nil {
				t.Fatal(err)
			}
			_, bp, _ := c.RandomScalar()
			// a·(b·G) is crypto/ecdh's ECDH(a, b·G), whose output is x.
			abp, err := c.ScalarMult(bp, a)
			if err != nil {
				t.Fatal(err)
			}
			priv, _ := tc.ecdh.NewPrivateKey(a)
			pub, _ := tc.ecdh.NewPublicKey(bp)
			want, _ := priv.ECDH(pub)
			if !bytes.Equal(c.X(abp), want) {
				t.Fatal("ScalarMult disagrees with crypto/ecdh")
			}
			// (a·G + b·G) − b·G = a·G
			sum, err := c.Add(ap, bp)
			if err != nil {
				t.Fatal(err)
			}
			diff, err := c.Sub(sum, bp)
			if err != nil || !bytes.Equal(diff, ap) {
				t.Fatalf("(a+b)-b != a: %v", err)
			}
			// p − p is the identity: an error, never a point.
			if _, err := c.Sub(ap, ap); err == nil {
				t.Fatal("p - p did not fail")
			}
			// JWK round trip.
			k := c.JWKFromPoint(ap)
			if k.Validate() != nil {
				t.Fatal("JWKFromPoint made an invalid JWK")
			}
			p, err := c.Point(k)
			if err != nil || !bytes.Equal(p, ap) {
				t.Fatalf("Point(JWKFromPoint(p)) != p: %v", err)
			}
		})
	}
}

func TestPointRejects(t *testing.T) {
	for _, tc := range curves {
		c := tc.c
		k, _ := c.GenerateKey("ECMR", "deriveKey")
		if _, err := c.Scalar(k); err != nil {
			t.Fatalf("%s: Scalar of a fresh key: %v", c.Name, err)
		}
		mod := func(f func(p *jose.JWK)) *jose.JWK { p := *k.Public(); f(&p); return &p }
		flipY := func(p *jose.JWK) {
			y, _ := jose.B64.DecodeString(p.Y)
			y[len(y)-1] ^= 1
			p.Y = jose.B64.EncodeToString(y)
		}
		zeros := jose.B64.EncodeToString(make([]byte, c.Size))
		ones := jose.B64.EncodeToString(bytes.Repeat([]byte{0xff}, c.Size))
		other := jose.P256
		if c == jose.P256 {
			other = jose.P384
		}
		for name, bad := range map[string]*jose.JWK{
			"off curve":      mod(flipY),
			"zero point":     mod(func(p *jose.JWK) { p.X, p.Y = zeros, zeros }),
			"x beyond field": mod(func(p *jose.JWK) { p.X = ones }),
			"other curve":    mod(func(p *jose.JWK) { p.Crv = other.Name }),
			"oct":            {Kty: "oct", K: "AAAA"},
			"short x":        mod(func(p *jose.JWK) { p.X = p.X[4:] }),
		} {
			if _, err := c.Point(bad); err == nil {
				t.Errorf("%s: %s point accepted", c.Name, name)
			}
		}
		for name, d := range map[string]string{
			"zero":  zeros,
			"order": ones, // ≥ n for every NIST curve
			"short": "AAAA",
			"none":  "",
		} {
			bad := *k
			bad.D = d
			if _, err := c.Scalar(&bad); err == nil {
				t.Errorf("%s: %s scalar accepted", c.Name, name)
			}
		}
	}
	if _, err := jose.CurveByName("P-192"); err == nil {
		t.Error("P-192 accepted")
	}
	if _, err := jose.CurveByName(""); err == nil {
		t.Error("empty curve accepted")
	}
}
