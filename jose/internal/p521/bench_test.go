package p521

import (
	"crypto/ecdh"
	"crypto/rand"
	"testing"

	"filippo.io/nistec"
)

func benchInputs(b *testing.B) (point, scalar []byte) {
	k, _ := ecdh.P521().GenerateKey(rand.Reader)
	s, _ := ecdh.P521().GenerateKey(rand.Reader)
	return k.PublicKey().Bytes(), s.Bytes()
}

func BenchmarkScalarMult(b *testing.B) {
	p, s := benchInputs(b)
	b.ReportAllocs()
	cpuLoop(b, func() {
		if _, err := ScalarMult(p, s); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkScalarBaseMult(b *testing.B) {
	_, s := benchInputs(b)
	ScalarBaseMult(s) // page the embedded table in outside the timing
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := ScalarBaseMult(s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkECDH is the same work as `openssl speed ecdhp521`'s derive:
// decode and check the peer point, multiply, encode.
func BenchmarkECDH(b *testing.B) {
	p, s := benchInputs(b)
	for b.Loop() {
		r, err := ScalarMult(p, s)
		if err != nil || len(r) != PointSize {
			b.Fatal(err)
		}
	}
}

func BenchmarkNistecScalarMult(b *testing.B) {
	p, s := benchInputs(b)
	q, _ := nistec.NewP521Point().SetBytes(p)
	for b.Loop() {
		r, _ := nistec.NewP521Point().ScalarMult(q, s)
		r.Bytes()
	}
}

func BenchmarkCryptoECDH(b *testing.B) {
	k, _ := ecdh.P521().GenerateKey(rand.Reader)
	s, _ := ecdh.P521().GenerateKey(rand.Reader)
	for b.Loop() {
		if _, err := s.ECDH(k.PublicKey()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFeMul(b *testing.B) {
	x := fe{1, 2, 3, 4, 5, 6, 7, 8, 9}
	y := fe{9, 8, 7, 6, 5, 4, 3, 2, 1}
	cpuLoop(b, func() { feMul(&x, &x, &y) })
}

func BenchmarkFeSquare(b *testing.B) {
	x := fe{1, 2, 3, 4, 5, 6, 7, 8, 9}
	cpuLoop(b, func() { feSquare(&x, &x) })
}

// The Go code behind feMul and feSquare, for comparison with the assembly
// where there is one.
func BenchmarkFeMulGeneric(b *testing.B) {
	x := fe{1, 2, 3, 4, 5, 6, 7, 8, 9}
	y := fe{9, 8, 7, 6, 5, 4, 3, 2, 1}
	cpuLoop(b, func() { feMulGeneric(&x, &x, &y) })
}

func BenchmarkFeSquareGeneric(b *testing.B) {
	x := fe{1, 2, 3, 4, 5, 6, 7, 8, 9}
	cpuLoop(b, func() { feSquareGeneric(&x, &x) })
}

func BenchmarkDouble(b *testing.B) {
	var p point
	p.setAffine(&generator)
	cpuLoop(b, func() { p.double(&p) })
}

func BenchmarkAdd(b *testing.B) {
	var p, q point
	p.setAffine(&generator)
	q.double(&p)
	cpuLoop(b, func() { p.add(&p, &q, 0, 0, false) })
}

func BenchmarkInvert(b *testing.B) {
	x := fe{1, 2, 3, 4, 5, 6, 7, 8, 9}
	for b.Loop() {
		feInvert(&x, &x)
	}
}
