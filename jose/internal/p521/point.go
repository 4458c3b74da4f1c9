package p521

// point is a point in Jacobian coordinates: (X:Y:Z) stands for the affine
// point (X/Z², Y/Z³), and any Z ≡ 0 (mod p) stands for the point at
// infinity. All coordinates are kept tight.
type point struct {
	x, y, z fe
}

// affine is a point in affine coordinates; it cannot be the identity.
type affine struct {
	x, y fe
}

var feOne = fe{1}

func (p *point) setInfinity() {
	p.x = feOne
	p.y = feOne
	p.z = fe{}
}

func (p *point) setAffine(a *affine) {
	p.x = a.x
	p.y = a.y
	p.z = feOne
}

// isInfinity returns all ones if p is the point at infinity.
func (p *point) isInfinity() uint64 { return feIsZero(&p.z) }

// pointSelect sets out = a if mask is all ones and out = b if it is zero.
func pointSelect(out, a, b *point, mask uint64) {
	feSelect(&out.x, &a.x, &b.x, mask)
	feSelect(&out.y, &a.y, &b.y, mask)
	feSelect(&out.z, &a.z, &b.z, mask)
}

// double sets r = 2p using the a = −3 formula "dbl-2001-b"
// (3M + 5S). It is complete: P-521 has no point of order two, and the
// point at infinity (Z ≡ 0) maps to Z3 ≡ 0. r may alias p.
//
// Intermediate values that only feed multiplications are left loose; the
// comments give the limb bounds (T = tight, i.e. < 2^58 + 2^14).
func (r *point) double(p *point) {
	var delta, gamma, beta, alpha, t0, t1 fe
	feSquare(&delta, &p.z)             // δ = Z²
	feSquare(&gamma, &p.y)             // γ = Y²
	feMul(&beta, &p.x, &gamma)         // β = X·γ
	feSubLoose(&t0, &p.x, &delta)      // X − δ < T + 2^60
	feAddLoose(&t1, &p.x, &delta)      // X + δ < 2T
	feMul(&alpha, &t0, &t1)            //
	feMulSmallLoose(&alpha, &alpha, 3) // α = 3(X−δ)(X+δ) < 3T

	feAddLoose(&t0, &p.y, &p.z) // < 2T
	feSquare(&t0, &t0)
	feSub2(&r.z, &t0, &gamma, &delta) // Z3 = (Y+Z)² − γ − δ

	feMulSmallLoose(&beta, &beta, 4) // 4β < 4T
	feSquare(&t0, &alpha)
	feSubMul(&r.x, &t0, &beta, 2) // X3 = α² − 8β

	feSubLoose(&t1, &beta, &r.x) // 4β − X3 < 4T + 2^60
	feMul(&t1, &alpha, &t1)
	feSquare(&t0, &gamma)
	feSubMul(&r.y, &t1, &t0, 8) // Y3 = α(4β − X3) − 8γ²
}

// add sets r = p + q using "add-2007-bl" (11M + 5S). pInf and qInf (all
// ones or zero) say whether p and q are the point at infinity, which the
// caller knows, or computes with isInfinity. If complete is false the
// caller guarantees that p ≠ q whenever neither is the identity (the
// formula would wrongly return the identity for p = q); if complete is
// true that case is detected in constant time and 2p is substituted.
// complete is a public parameter. r may alias p or q.
func (r *point) add(p, q *point, pInf, qInf uint64, complete bool) {
	var z1z1, z2z2, u1, u2, s1, s2, h, i, j, rr, v, t0, t1 fe
	var out point
	feSquare(&z1z1, &p.z)
	feSquare(&z2z2, &q.z)
	feMul(&u1, &p.x, &z2z2)
	feMul(&u2, &q.x, &z1z1)
	feMul(&s1, &p.y, &q.z)
	feMul(&s1, &s1, &z2z2)
	feMul(&s2, &q.y, &p.z)
	feMul(&s2, &s2, &z1z1)
	feSubLoose(&h, &u2, &u1) // H = U2 − U1 < T + 2^60
	feAddLoose(&t0, &h, &h)  // < 2T + 2^61 < 3·2^60
	feSquare(&i, &t0)        // I = (2H)²
	feMul(&j, &h, &i)        // J = H·I
	feSubLoose(&rr, &s2, &s1)
	feAddLoose(&rr, &rr, &rr) // r = 2(S2 − S1) < 3·2^60
	feMul(&v, &u1, &i)        // V = U1·I

	feSquare(&t0, &rr)
	feAddLoose(&t1, &v, &v)
	feSub2(&out.x, &t0, &j, &t1) // X3 = r² − J − 2V (2V < 2T)

	feSubLoose(&t0, &v, &out.x)
	feMul(&t0, &rr, &t0)
	feMul(&t1, &s1, &j)
	feSubMul(&out.y, &t0, &t1, 2) // Y3 = r(V − X3) − 2·S1·J

	feAddLoose(&t0, &p.z, &q.z)
	feSquare(&t0, &t0)
	feSub2Loose(&t0, &t0, &z1z1, &z2z2)
	feMul(&out.z, &t0, &h) // Z3 = ((Z1+Z2)² − Z1Z1 − Z2Z2)·H

	if complete {
		var d point
		d.double(p)
		same := feIsZero(&h) & feIsZero(&rr) & ^pInf & ^qInf
		pointSelect(&out, &d, &out, same)
	}
	pointSelect(&out, q, &out, pInf)
	pointSelect(&out, p, &out, qInf)
	*r = out
}

// addAffine sets r = p + q for a Jacobian p and an affine q using
// "madd-2007-bl" (7M + 4S). pInf and qInf (all ones or zero) say whether p
// and q are to be taken as the identity. complete has the same meaning as
// for add. r may alias p.
func (r *point) addAffine(p *point, q *affine, pInf, qInf uint64, complete bool) {
	var z1z1, u2, s2, h, hh, i, j, rr, v, t0, t1 fe
	var out point
	feSquare(&z1z1, &p.z)
	feMul(&u2, &q.x, &z1z1)
	feMul(&s2, &q.y, &p.z)
	feMul(&s2, &s2, &z1z1)
	feSubLoose(&h, &u2, &p.x) // H = U2 − X1
	feSquare(&hh, &h)
	feMulSmallLoose(&i, &hh, 4) // I = 4·HH < 4T
	feMul(&j, &h, &i)           // J = H·I
	feSubLoose(&rr, &s2, &p.y)
	feAddLoose(&rr, &rr, &rr) // r = 2(S2 − Y1)
	feMul(&v, &p.x, &i)       // V = X1·I

	feSquare(&t0, &rr)
	feAddLoose(&t1, &v, &v)
	feSub2(&out.x, &t0, &j, &t1) // X3 = r² − J − 2V

	feSubLoose(&t0, &v, &out.x)
	feMul(&t0, &rr, &t0)
	feMul(&t1, &p.y, &j)
	feSubMul(&out.y, &t0, &t1, 2) // Y3 = r(V − X3) − 2·Y1·J

	feAddLoose(&t0, &p.z, &h)
	feSquare(&t0, &t0)
	feSub2(&out.z, &t0, &z1z1, &hh) // Z3 = (Z1 + H)² − Z1Z1 − HH

	if complete {
		var d point
		d.double(p)
		same := feIsZero(&h) & feIsZero(&rr) & ^pInf & ^qInf
		pointSelect(&out, &d, &out, same)
	}
	var qj point
	qj.setAffine(q)
	pointSelect(&out, &qj, &out, pInf)
	pointSelect(&out, p, &out, qInf)
	*r = out
}

// toAffine returns the affine coordinates of p and all ones in inf if p is
// the identity (in which case x and y are zero).
func (p *point) toAffine() (a affine, inf uint64) {
	var zinv, zinv2, zinv3 fe
	feInvert(&zinv, &p.z)
	feSquare(&zinv2, &zinv)
	feMul(&zinv3, &zinv2, &zinv)
	feMul(&a.x, &p.x, &zinv2)
	feMul(&a.y, &p.y, &zinv3)
	return a, p.isInfinity()
}
