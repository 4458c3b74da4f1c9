// Package p521 implements constant-time arithmetic on the NIST P-521 curve
// in pure Go, several times faster than filippo.io/nistec (and crypto/ecdh)
// for scalar multiplication.
//
// Points travel as SEC 1 encodings, exactly as filippo.io/nistec's
// P521Point.SetBytes accepts and P521Point.Bytes produces them: 133-byte
// uncompressed points (0x04 ‖ X ‖ Y), 67-byte compressed points on input,
// and the single byte 0x00 for the point at infinity. Scalars are 66 bytes,
// big-endian; values ≥ n are reduced modulo n, which gives the same point as
// nistec's integer multiplication.
//
// Field elements use nine unsaturated 58-bit limbs; see docs/P521.md for
// the design and the constant-time argument.
package p521

import (
	"errors"
)

const (
	// ScalarSize is the length of a scalar in bytes.
	ScalarSize = 66
	// ElementSize is the length of one coordinate in bytes.
	ElementSize = 66
	// PointSize is the length of an uncompressed point.
	PointSize = 1 + 2*ElementSize
)

var (
	errScalarLength = errors.New("p521: invalid scalar length")
	errEncoding     = errors.New("p521: invalid point encoding")
	errNotOnCurve   = errors.New("p521: point not on curve")
)

var feB = mustFe([]byte{0x00, 0x51, 0x95, 0x3e, 0xb9, 0x61, 0x8e, 0x1c, 0x9a, 0x1f, 0x92, 0x9a, 0x21, 0xa0, 0xb6, 0x85, 0x40, 0xee, 0xa2, 0xda, 0x72, 0x5b, 0x99, 0xb3, 0x15, 0xf3, 0xb8, 0xb4, 0x89, 0x91, 0x8e, 0xf1, 0x09, 0xe1, 0x56, 0x19, 0x39, 0x51, 0xec, 0x7e, 0x93, 0x7b, 0x16, 0x52, 0xc0, 0xbd, 0x3b, 0xb1, 0xbf, 0x07, 0x35, 0x73, 0xdf, 0x88, 0x3d, 0x2c, 0x34, 0xf1, 0xef, 0x45, 0x1f, 0xd4, 0x6b, 0x50, 0x3f, 0x00})

var generator = affine{
	x: mustFe([]byte{0x00, 0xc6, 0x85, 0x8e, 0x06, 0xb7, 0x04, 0x04, 0xe9, 0xcd, 0x9e, 0x3e, 0xcb, 0x66, 0x23, 0x95, 0xb4, 0x42, 0x9c, 0x64, 0x81, 0x39, 0x05, 0x3f, 0xb5, 0x21, 0xf8, 0x28, 0xaf, 0x60, 0x6b, 0x4d, 0x3d, 0xba, 0xa1, 0x4b, 0x5e, 0x77, 0xef, 0xe7, 0x59, 0x28, 0xfe, 0x1d, 0xc1, 0x27, 0xa2, 0xff, 0xa8, 0xde, 0x33, 0x48, 0xb3, 0xc1, 0x85, 0x6a, 0x42, 0x9b, 0xf9, 0x7e, 0x7e, 0x31, 0xc2, 0xe5, 0xbd, 0x66}),
	y: mustFe([]byte{0x01, 0x18, 0x39, 0x29, 0x6a, 0x78, 0x9a, 0x3b, 0xc0, 0x04, 0x5c, 0x8a, 0x5f, 0xb4, 0x2c, 0x7d, 0x1b, 0xd9, 0x98, 0xf5, 0x44, 0x49, 0x57, 0x9b, 0x44, 0x68, 0x17, 0xaf, 0xbd, 0x17, 0x27, 0x3e, 0x66, 0x2c, 0x97, 0xee, 0x72, 0x99, 0x5e, 0xf4, 0x26, 0x40, 0xc5, 0x50, 0xb9, 0x01, 0x3f, 0xad, 0x07, 0x61, 0x35, 0x3c, 0x70, 0x86, 0xa2, 0x72, 0xc2, 0x40, 0x88, 0xbe, 0x94, 0x76, 0x9f, 0xd1, 0x66, 0x50}),
}

func mustFe(b []byte) fe {
	var e fe
	if err := feSetBytes(&e, b); err != nil {
		panic(err)
	}
	return e
}

// polynomial returns x³ − 3x + b.
func polynomial(x *fe) fe {
	var y2, t fe
	feSquare(&y2, x)
	feMul(&y2, &y2, x)
	feMulSmall(&t, x, 3)
	feSub(&y2, &y2, &t)
	feAdd(&y2, &y2, &feB)
	return y2
}

// decode parses a SEC 1 point. inf reports the point at infinity. Encodings
// are public, so decode may branch on them.
func decode(b []byte) (p point, inf bool, err error) {
	switch {
	case len(b) == 1 && b[0] == 0:
		p.setInfinity()
		return p, true, nil
	case len(b) == PointSize && b[0] == 4:
		var a affine
		if feSetBytes(&a.x, b[1:1+ElementSize]) != nil || feSetBytes(&a.y, b[1+ElementSize:]) != nil {
			return p, false, errEncoding
		}
		rhs := polynomial(&a.x)
		var lhs fe
		feSquare(&lhs, &a.y)
		if feEqual(&lhs, &rhs) == 0 {
			return p, false, errNotOnCurve
		}
		p.setAffine(&a)
		return p, false, nil
	case len(b) == 1+ElementSize && (b[0] == 2 || b[0] == 3):
		var a affine
		if feSetBytes(&a.x, b[1:]) != nil {
			return p, false, errEncoding
		}
		rhs := polynomial(&a.x)
		if !feSqrt(&a.y, &rhs) {
			return p, false, errNotOnCurve
		}
		var c fe
		feCanon(&c, &a.y)
		odd := c[0] & 1
		feCondNeg(&a.y, -(odd ^ uint64(b[0]&1)))
		p.setAffine(&a)
		return p, false, nil
	}
	return p, false, errEncoding
}

// encode returns the SEC 1 uncompressed encoding of p, or {0} for the
// point at infinity (whether the result is the identity is public).
func encode(p *point) []byte {
	a, inf := p.toAffine()
	if inf != 0 {
		return []byte{0}
	}
	out := make([]byte, 1, PointSize)
	out[0] = 4
	out = feBytes(out, &a.x)
	return feBytes(out, &a.y)
}

func parseScalar(b []byte) (scalar, error) {
	if len(b) != ScalarSize {
		return scalar{}, errScalarLength
	}
	s := scalarFromBytes(b)
	s.reduce()
	return s, nil
}

// lookup sets out = mag·T (T = table[0]) for mag ∈ [0, 16], negated if neg is
// all ones, scanning the whole table so that neither the memory access
// pattern nor the timing depends on the digit.
// For mag = 0 the result is (0, 0, 0), a representation of the identity.
func lookup(out *point, table *[16]point, mag uint8, neg uint64) {
	*out = point{}
	m := uint64(mag)
	for i := range table {
		mask := ctEq(m, uint64(i+1))
		feOrMasked(&out.x, &table[i].x, mask)
		feOrMasked(&out.y, &table[i].y, mask)
		feOrMasked(&out.z, &table[i].z, mask)
	}
	feCondNeg(&out.y, neg)
}

// scalarMult sets r = s·p for a reduced scalar s, in constant time.
func scalarMult(r, p *point, s *scalar) {
	var table [16]point // table[i] = (i+1)·p
	table[0] = *p
	for i := 1; i < 16; i++ {
		if i%2 == 1 {
			table[i].double(&table[i/2]) // (i+1) = 2·((i+1)/2)
		} else {
			table[i].add(&table[i-1], p, 0, 0, false) // i·p ≠ ±p for 2 ≤ i < n
		}
	}
	mag, neg := s.recode()

	var q, t point
	lookup(&q, &table, mag[windows-1], neg[windows-1])
	// q = v·p where v is the value of the digits processed so far, with
	// 0 ≤ v < n, so q is the identity exactly when all those digits are
	// zero: qInf tracks that without inspecting q.
	qInf := ctEq(uint64(mag[windows-1]), 0)
	for j := windows - 2; j >= 0; j-- {
		q.double(&q)
		q.double(&q)
		q.double(&q)
		q.double(&q)
		q.double(&q)
		lookup(&t, &table, mag[j], neg[j])
		tInf := ctEq(uint64(mag[j]), 0)
		// Only the last addition can hit the doubling case; see docs/P521.md.
		q.add(&q, &t, qInf, tInf, j == 0)
		qInf &= tInf
	}
	*r = q
}

// ScalarMult returns scalar·point. point is a SEC 1 encoding (uncompressed,
// compressed or the identity); scalar is 66 bytes, big-endian, and may be ≥ n.
// The result is the uncompressed encoding, or {0} for the identity.
func ScalarMult(pointBytes, scalarBytes []byte) ([]byte, error) {
	p, inf, err := decode(pointBytes)
	if err != nil {
		return nil, err
	}
	s, err := parseScalar(scalarBytes)
	if err != nil {
		return nil, err
	}
	if inf {
		return []byte{0}, nil
	}
	var r point
	scalarMult(&r, &p, &s)
	return encode(&r), nil
}

// computeBaseTable returns the fixed-base table: t[j][i] = (i+1)·32^j·G in
// affine coordinates with canonical limbs. It takes about 3.5 ms, so the
// table ships precomputed in basetable.bin (see basetable.go).
func computeBaseTable() *[windows][16]affine {
	t := new([windows][16]affine)
	jac := make([]point, windows*16)
	var b point
	b.setAffine(&generator)
	for j := 0; j < windows; j++ {
		row := jac[j*16 : (j+1)*16]
		row[0] = b
		for i := 1; i < 16; i++ {
			if i%2 == 1 {
				row[i].double(&row[i/2])
			} else {
				row[i].add(&row[i-1], &b, 0, 0, false)
			}
		}
		for k := 0; k < 5; k++ {
			b.double(&b)
		}
	}
	// Batch inversion of all Z coordinates (Montgomery's trick).
	prefix := make([]fe, len(jac))
	acc := feOne
	for k := range jac {
		prefix[k] = acc
		feMul(&acc, &acc, &jac[k].z)
	}
	var inv fe
	feInvert(&inv, &acc)
	for k := len(jac) - 1; k >= 0; k-- {
		var zinv, z2, z3 fe
		feMul(&zinv, &inv, &prefix[k])
		feMul(&inv, &inv, &jac[k].z)
		feSquare(&z2, &zinv)
		feMul(&z3, &z2, &zinv)
		a := &t[k/16][k%16]
		feMul(&a.x, &jac[k].x, &z2)
		feMul(&a.y, &jac[k].y, &z3)
		feCanon(&a.x, &a.x)
		feCanon(&a.y, &a.y)
	}
	return t
}

// lookupAffine sets out = mag·row[0] negated if neg is all ones, and
// returns all ones if mag is zero (out is then meaningless).
func lookupAffine(out *affine, row *[16]affine, mag uint8, neg uint64) uint64 {
	*out = affine{}
	m := uint64(mag)
	for i := range row {
		mask := ctEq(m, uint64(i+1))
		feOrMasked(&out.x, &row[i].x, mask)
		feOrMasked(&out.y, &row[i].y, mask)
	}
	feCondNeg(&out.y, neg)
	return ctEq(m, 0)
}

// scalarBaseMult sets r = s·G for a reduced scalar s, in constant time.
func scalarBaseMult(r *point, s *scalar) {
	table := baseTable()
	mag, neg := s.recode()
	var q point
	var a affine
	q.setInfinity()
	qInf := ^uint64(0)
	for j := 0; j < windows; j++ {
		zero := lookupAffine(&a, &table[j], mag[j], neg[j])
		// Windows below 103 provably never hit the doubling case; see
		// docs/P521.md.
		q.addAffine(&q, &a, qInf, zero, j >= windows-2)
		qInf &= zero
	}
	*r = q
}

// ScalarBaseMult returns scalar·G for a 66-byte big-endian scalar (which may
// be ≥ n), as an uncompressed encoding or {0} for the identity.
func ScalarBaseMult(scalarBytes []byte) ([]byte, error) {
	s, err := parseScalar(scalarBytes)
	if err != nil {
		return nil, err
	}
	var r point
	scalarBaseMult(&r, &s)
	return encode(&r), nil
}

// Add returns a + b. Both inputs are SEC 1 encodings; the result is
// uncompressed, or {0} for the identity. Add is complete and constant time.
func Add(a, b []byte) ([]byte, error) {
	p, _, err := decode(a)
	if err != nil {
		return nil, err
	}
	q, _, err := decode(b)
	if err != nil {
		return nil, err
	}
	p.add(&p, &q, p.isInfinity(), q.isInfinity(), true)
	return encode(&p), nil
}

// Sub returns a − b, like Add.
func Sub(a, b []byte) ([]byte, error) {
	p, _, err := decode(a)
	if err != nil {
		return nil, err
	}
	q, _, err := decode(b)
	if err != nil {
		return nil, err
	}
	feNeg(&q.y, &q.y)
	p.add(&p, &q, p.isInfinity(), q.isInfinity(), true)
	return encode(&p), nil
}

// Negate returns −a.
func Negate(a []byte) ([]byte, error) {
	p, _, err := decode(a)
	if err != nil {
		return nil, err
	}
	feNeg(&p.y, &p.y)
	return encode(&p), nil
}

// IsOnCurve reports whether b is a valid SEC 1 encoding of a point on P-521
// (including the identity encoding {0}).
func IsOnCurve(b []byte) bool {
	_, _, err := decode(b)
	return err == nil
}
