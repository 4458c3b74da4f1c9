package p521

//go:generate go run gen_fe.go

import (
	"errors"
	"math/bits"
)

// fe is an element of GF(p), p = 2^521 − 1, in nine unsaturated limbs:
// the value is Σ fe[i]·2^(58·i). Limbs 0..7 nominally hold 58 bits and
// limb 8 holds 57 bits, but every function tolerates some headroom:
//
//   - tight: limbs 0..7 < 2^58 + 2^14, limb 8 < 2^57 + 2^14. feMul,
//     feSquare, feAdd, feSub, feCarry and the other helpers return tight
//     elements.
//   - loose: every limb < 3·2^60. feMul and feSquare accept loose inputs:
//     each 128-bit column sum then stays below 17·(3·2^60)² = 153·2^120 <
//     2^128, and the pre-scaled operands 2b and 4a fit in 64 bits.
//
// The representation is redundant (an element may exceed p, and p itself
// represents zero); feCanon produces the unique canonical form, which is
// only needed for comparisons and encoding.
type fe [9]uint64

const (
	mask58 = 1<<58 - 1
	mask57 = 1<<57 - 1
)

// fourP is 4·p limb by limb (limbs 0..7 = 4·(2^58−1), limb 8 = 4·(2^57−1)),
// added before a subtraction so that no limb underflows for tight
// subtrahends.
const (
	fourP58 = 4 * mask58
	fourP57 = 4 * mask57
)

// feCarry performs one parallel carry pass. Every input limb must be
// < 2^63; the output is tight (each limb gains at most 2^5 + its own
// low bits) when inputs are below 2^63.
func feCarry(r *fe) {
	c0 := r[0] >> 58
	c1 := r[1] >> 58
	c2 := r[2] >> 58
	c3 := r[3] >> 58
	c4 := r[4] >> 58
	c5 := r[5] >> 58
	c6 := r[6] >> 58
	c7 := r[7] >> 58
	c8 := r[8] >> 57
	r[0] = r[0]&mask58 + c8
	r[1] = r[1]&mask58 + c0
	r[2] = r[2]&mask58 + c1
	r[3] = r[3]&mask58 + c2
	r[4] = r[4]&mask58 + c3
	r[5] = r[5]&mask58 + c4
	r[6] = r[6]&mask58 + c5
	r[7] = r[7]&mask58 + c6
	r[8] = r[8]&mask57 + c7
}

// feAdd sets out = a + b (tight inputs, tight output).
func feAdd(out, a, b *fe) {
	out[0] = a[0] + b[0]
	out[1] = a[1] + b[1]
	out[2] = a[2] + b[2]
	out[3] = a[3] + b[3]
	out[4] = a[4] + b[4]
	out[5] = a[5] + b[5]
	out[6] = a[6] + b[6]
	out[7] = a[7] + b[7]
	out[8] = a[8] + b[8]
	feCarry(out)
}

// feAddLoose sets out = a + b without carrying. With tight inputs the
// output is loose and may only be fed to feMul or feSquare.
func feAddLoose(out, a, b *fe) {
	out[0] = a[0] + b[0]
	out[1] = a[1] + b[1]
	out[2] = a[2] + b[2]
	out[3] = a[3] + b[3]
	out[4] = a[4] + b[4]
	out[5] = a[5] + b[5]
	out[6] = a[6] + b[6]
	out[7] = a[7] + b[7]
	out[8] = a[8] + b[8]
}

// feSub sets out = a − b (tight inputs, tight output). It computes
// a + 4p − b, which has no negative limb because every limb of a tight b is
// below the matching limb of 4p.
func feSub(out, a, b *fe) {
	out[0] = a[0] + fourP58 - b[0]
	out[1] = a[1] + fourP58 - b[1]
	out[2] = a[2] + fourP58 - b[2]
	out[3] = a[3] + fourP58 - b[3]
	out[4] = a[4] + fourP58 - b[4]
	out[5] = a[5] + fourP58 - b[5]
	out[6] = a[6] + fourP58 - b[6]
	out[7] = a[7] + fourP58 - b[7]
	out[8] = a[8] + fourP57 - b[8]
	feCarry(out)
}

// feSubLoose is feSub without the carry: the output (limbs < 2^61) may only
// be fed to feMul or feSquare.
func feSubLoose(out, a, b *fe) {
	out[0] = a[0] + fourP58 - b[0]
	out[1] = a[1] + fourP58 - b[1]
	out[2] = a[2] + fourP58 - b[2]
	out[3] = a[3] + fourP58 - b[3]
	out[4] = a[4] + fourP58 - b[4]
	out[5] = a[5] + fourP58 - b[5]
	out[6] = a[6] + fourP58 - b[6]
	out[7] = a[7] + fourP58 - b[7]
	out[8] = a[8] + fourP57 - b[8]
}

// feNeg sets out = −a (tight input, tight output).
func feNeg(out, a *fe) {
	var zero fe
	feSub(out, &zero, a)
}

// feSub2 sets out = a − b − c for tight b and c (a below 2^61), computed
// as a + 8p − b − c; the output is tight.
func feSub2(out, a, b, c *fe) {
	const e58, e57 = 8 * mask58, 8 * mask57
	out[0] = a[0] + e58 - b[0] - c[0]
	out[1] = a[1] + e58 - b[1] - c[1]
	out[2] = a[2] + e58 - b[2] - c[2]
	out[3] = a[3] + e58 - b[3] - c[3]
	out[4] = a[4] + e58 - b[4] - c[4]
	out[5] = a[5] + e58 - b[5] - c[5]
	out[6] = a[6] + e58 - b[6] - c[6]
	out[7] = a[7] + e58 - b[7] - c[7]
	out[8] = a[8] + e57 - b[8] - c[8]
	feCarry(out)
}

// feSub2Loose is feSub2 without the carry; for tight inputs the output is
// below 2^61.2 and may only be fed to feMul or feSquare.
func feSub2Loose(out, a, b, c *fe) {
	const e58, e57 = 8 * mask58, 8 * mask57
	out[0] = a[0] + e58 - b[0] - c[0]
	out[1] = a[1] + e58 - b[1] - c[1]
	out[2] = a[2] + e58 - b[2] - c[2]
	out[3] = a[3] + e58 - b[3] - c[3]
	out[4] = a[4] + e58 - b[4] - c[4]
	out[5] = a[5] + e58 - b[5] - c[5]
	out[6] = a[6] + e58 - b[6] - c[6]
	out[7] = a[7] + e58 - b[7] - c[7]
	out[8] = a[8] + e57 - b[8] - c[8]
}

// feSubMul sets out = a − k·b for a tight b, a below 2^62 and k ≤ 8,
// computed as a + 16p − k·b; the output is tight.
func feSubMul(out, a, b *fe, k uint64) {
	const e58, e57 = 16 * mask58, 16 * mask57
	out[0] = a[0] + e58 - k*b[0]
	out[1] = a[1] + e58 - k*b[1]
	out[2] = a[2] + e58 - k*b[2]
	out[3] = a[3] + e58 - k*b[3]
	out[4] = a[4] + e58 - k*b[4]
	out[5] = a[5] + e58 - k*b[5]
	out[6] = a[6] + e58 - k*b[6]
	out[7] = a[7] + e58 - k*b[7]
	out[8] = a[8] + e57 - k*b[8]
	feCarry(out)
}

// feMulSmallLoose sets out = k·a without carrying (k·limb must stay below
// the bound of the consumer).
func feMulSmallLoose(out, a *fe, k uint64) {
	out[0] = a[0] * k
	out[1] = a[1] * k
	out[2] = a[2] * k
	out[3] = a[3] * k
	out[4] = a[4] * k
	out[5] = a[5] * k
	out[6] = a[6] * k
	out[7] = a[7] * k
	out[8] = a[8] * k
}

// feOrMasked sets out |= a & mask.
func feOrMasked(out, a *fe, mask uint64) {
	out[0] |= a[0] & mask
	out[1] |= a[1] & mask
	out[2] |= a[2] & mask
	out[3] |= a[3] & mask
	out[4] |= a[4] & mask
	out[5] |= a[5] & mask
	out[6] |= a[6] & mask
	out[7] |= a[7] & mask
	out[8] |= a[8] & mask
}

// feMulSmall sets out = k·a for a tight a and k ≤ 16.
func feMulSmall(out, a *fe, k uint64) {
	for i := range out {
		out[i] = a[i] * k
	}
	feCarry(out)
}

// feCarrySeq propagates carries sequentially, leaving exact limbs (58 bits,
// 57 for the top one) and returning the carry out of the top limb, of
// weight 2^521 ≡ 1. Input limbs must be below 2^63.
func feCarrySeq(r *fe) (top uint64) {
	r[1] += r[0] >> 58
	r[0] &= mask58
	r[2] += r[1] >> 58
	r[1] &= mask58
	r[3] += r[2] >> 58
	r[2] &= mask58
	r[4] += r[3] >> 58
	r[3] &= mask58
	r[5] += r[4] >> 58
	r[4] &= mask58
	r[6] += r[5] >> 58
	r[5] &= mask58
	r[7] += r[6] >> 58
	r[6] &= mask58
	r[8] += r[7] >> 58
	r[7] &= mask58
	top = r[8] >> 57
	r[8] &= mask57
	return top
}

// feCanon sets out to the canonical form of a (limbs below 2^63): limbs
// exact (58, …, 58, 57 bits) and value in [0, p).
func feCanon(out, a *fe) {
	r := *a
	r[0] += feCarrySeq(&r)
	r[0] += feCarrySeq(&r) // r < 2^58 + 2^6 now, so this carry is 0 or 1
	feCarrySeq(&r)         // and this one is 0
	// Now r < 2^521 with exact limbs. The only non-canonical value left is
	// p = 2^521 − 1 itself (all bits set), which represents zero.
	and := r[0] & r[1] & r[2] & r[3] & r[4] & r[5] & r[6] & r[7]
	isP := ctEq(and, mask58) & ctEq(r[8], mask57)
	for i := range r {
		out[i] = r[i] &^ isP
	}
}

// ctEq returns all ones if x == y and zero otherwise, in constant time.
func ctEq(x, y uint64) uint64 {
	d := x ^ y
	// (d | −d) has its top bit set iff d ≠ 0.
	return ((d | -d) >> 63) - 1
}

// feIsZero returns all ones if a ≡ 0 (mod p) and zero otherwise; a's limbs
// must be below 2^63.
func feIsZero(a *fe) uint64 {
	r := *a
	top := feCarrySeq(&r)
	// The value is r + top with r < 2^521 exact and top < 2^7, so it is in
	// [0, 2p) and ≡ 0 iff it is 0 or p, i.e. iff r = 0 and top = 0, or
	// r = p − top (limbs 1..8 all ones and limb 0 = 2^58 − 1 − top).
	or := r[0] | r[1] | r[2] | r[3] | r[4] | r[5] | r[6] | r[7] | r[8] | top
	and := r[1] & r[2] & r[3] & r[4] & r[5] & r[6] & r[7]
	isP := ctEq(and, mask58) & ctEq(r[8], mask57) & ctEq(r[0]+top, mask58)
	return ctEq(or, 0) | isP
}

// feEqual returns all ones if a ≡ b (mod p) and zero otherwise.
func feEqual(a, b *fe) uint64 {
	var d fe
	feSub(&d, a, b)
	return feIsZero(&d)
}

// feSelect sets out = a if mask is all ones and out = b if it is zero.
func feSelect(out, a, b *fe, mask uint64) {
	for i := range out {
		out[i] = b[i] ^ (mask & (a[i] ^ b[i]))
	}
}

// feCondNeg negates a in place if mask is all ones.
func feCondNeg(a *fe, mask uint64) {
	var n fe
	feNeg(&n, a)
	feSelect(a, &n, a, mask)
}

// feSetBytes decodes a 66-byte big-endian value, which must be < p.
func feSetBytes(out *fe, b []byte) error {
	if len(b) != 66 {
		return errors.New("p521: invalid field element length")
	}
	// Little-endian 64-bit words of the 528-bit value.
	var w [9]uint64
	for i := 0; i < 66; i++ {
		w[i/8] |= uint64(b[65-i]) << (8 * (i % 8))
	}
	if w[8]>>9 != 0 { // value ≥ 2^521
		return errors.New("p521: field element out of range")
	}
	var r fe
	for i := 0; i < 9; i++ {
		q, s := (58*i)/64, uint((58*i)%64)
		v := w[q] >> s
		if s > 6 && q+1 < 9 {
			v |= w[q+1] << (64 - s)
		}
		r[i] = v & mask58
	}
	r[8] &= mask57
	and := r[0] & r[1] & r[2] & r[3] & r[4] & r[5] & r[6] & r[7]
	if and == mask58 && r[8] == mask57 { // value == p
		return errors.New("p521: field element out of range")
	}
	*out = r
	return nil
}

// feBytes appends the 66-byte big-endian canonical encoding of a to dst.
func feBytes(dst []byte, a *fe) []byte {
	var c fe
	feCanon(&c, a)
	var w [9]uint64
	for i := 0; i < 9; i++ {
		q, s := (58*i)/64, uint((58*i)%64)
		w[q] |= c[i] << s
		if s > 6 && q+1 < 9 {
			w[q+1] |= c[i] >> (64 - s)
		}
	}
	var out [66]byte
	for i := 0; i < 66; i++ {
		out[65-i] = byte(w[i/8] >> (8 * (i % 8)))
	}
	return append(dst, out[:]...)
}

// feSquareN sets out = a^(2^n).
func feSquareN(out, a *fe, n int) {
	*out = *a
	for i := 0; i < n; i++ {
		feSquare(out, out)
	}
}

// feInvert sets out = a^(p−2) = a^−1 (and 0 for a ≡ 0). p − 2 is 519 ones
// followed by 01 in binary.
func feInvert(out, a *fe) {
	var x2, x3, x4, x7, x8, x16, x32, x64, x128, x256, x512, x519, t fe
	// xk = a^(2^k − 1)
	feSquare(&t, a)
	feMul(&x2, &t, a)
	feSquare(&t, &x2)
	feMul(&x3, &t, a)
	feSquare(&t, &x3)
	feMul(&x4, &t, a)
	feSquareN(&t, &x4, 3)
	feMul(&x7, &t, &x3)
	feSquare(&t, &x7)
	feMul(&x8, &t, a)
	feSquareN(&t, &x8, 8)
	feMul(&x16, &t, &x8)
	feSquareN(&t, &x16, 16)
	feMul(&x32, &t, &x16)
	feSquareN(&t, &x32, 32)
	feMul(&x64, &t, &x32)
	feSquareN(&t, &x64, 64)
	feMul(&x128, &t, &x64)
	feSquareN(&t, &x128, 128)
	feMul(&x256, &t, &x128)
	feSquareN(&t, &x256, 256)
	feMul(&x512, &t, &x256)
	feSquareN(&t, &x512, 7)
	feMul(&x519, &t, &x7)
	feSquareN(&t, &x519, 2)
	feMul(out, &t, a)
}

// feSqrt sets out to a square root of a if one exists and reports whether
// it does. Since p ≡ 3 (mod 4), the candidate is a^((p+1)/4) = a^(2^519).
func feSqrt(out, a *fe) bool {
	var r, s fe
	feSquareN(&r, a, 519)
	feSquare(&s, &r)
	if feEqual(&s, a) != ^uint64(0) {
		return false
	}
	*out = r
	return true
}

var _ = bits.Mul64
