package p521

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

var bigP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 521), big.NewInt(1))

func feToBig(a *fe) *big.Int {
	v := new(big.Int)
	for i := 8; i >= 0; i-- {
		v.Lsh(v, 58)
		v.Add(v, new(big.Int).SetUint64(a[i]))
	}
	return v.Mod(v, bigP)
}

// randLimbs returns an element whose limbs are random below 2^bits, with
// some extreme values mixed in.
func randLimbs(r *rand.Rand, bits uint) fe {
	var a fe
	for i := range a {
		switch r.IntN(8) {
		case 0:
			a[i] = 1<<bits - 1
			if bits == 61 {
				a[i] = 3<<60 - 1 // the loose bound
			}
		case 1:
			a[i] = 0
		default:
			a[i] = r.Uint64() >> (64 - bits)
		}
	}
	return a
}

func checkTight(t *testing.T, what string, a *fe) {
	t.Helper()
	for i := 0; i < 8; i++ {
		if a[i] >= 1<<58+1<<14 {
			t.Fatalf("%s: limb %d = %#x not tight", what, i, a[i])
		}
	}
	if a[8] >= 1<<57+1<<14 {
		t.Fatalf("%s: limb 8 = %#x not tight", what, a[8])
	}
}

func tightLimbs(r *rand.Rand) fe {
	a := randLimbs(r, 58)
	switch r.IntN(3) {
	case 0: // maximal tight limbs
		for i := 0; i < 8; i++ {
			a[i] = 1<<58 + 1<<14 - 1
		}
		a[8] = 1<<57 + 1<<14 - 1
	case 1:
		a[8] &= mask57
	}
	return a
}

func TestFieldArithmetic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 3000; n++ {
		a, b := randLimbs(r, 61), randLimbs(r, 61) // up to the loose bound
		var got fe
		feMul(&got, &a, &b)
		checkTight(t, "mul", &got)
		want := new(big.Int).Mul(feToBig(&a), feToBig(&b))
		want.Mod(want, bigP)
		if feToBig(&got).Cmp(want) != 0 {
			t.Fatalf("mul mismatch: %x · %x", a, b)
		}
		feSquare(&got, &a)
		checkTight(t, "square", &got)
		want.Mul(feToBig(&a), feToBig(&a)).Mod(want, bigP)
		if feToBig(&got).Cmp(want) != 0 {
			t.Fatalf("square mismatch: %x", a)
		}

		x, y := tightLimbs(r), tightLimbs(r)
		feAdd(&got, &x, &y)
		checkTight(t, "add", &got)
		want.Add(feToBig(&x), feToBig(&y)).Mod(want, bigP)
		if feToBig(&got).Cmp(want) != 0 {
			t.Fatalf("add mismatch")
		}
		feSub(&got, &x, &y)
		checkTight(t, "sub", &got)
		want.Sub(feToBig(&x), feToBig(&y)).Mod(want, bigP)
		if feToBig(&got).Cmp(want) != 0 {
			t.Fatalf("sub mismatch")
		}
		feMulSmall(&got, &x, 16)
		checkTight(t, "mulsmall", &got)
		want.Mul(feToBig(&x), big.NewInt(16)).Mod(want, bigP)
		if feToBig(&got).Cmp(want) != 0 {
			t.Fatalf("mulsmall mismatch")
		}
		var loose fe
		feSubLoose(&loose, &x, &y)
		feAddLoose(&got, &x, &y)
		feMul(&got, &got, &loose)
		want.Mul(new(big.Int).Add(feToBig(&x), feToBig(&y)), new(big.Int).Sub(feToBig(&x), feToBig(&y))).Mod(want, bigP)
		if feToBig(&got).Cmp(want) != 0 {
			t.Fatalf("loose mul mismatch")
		}

		// Canonical form and byte encoding.
		var c fe
		feCanon(&c, &x)
		if feToBig(&c).Cmp(feToBig(&x)) != 0 {
			t.Fatal("canon changed the value")
		}
		enc := feBytes(nil, &x)
		if new(big.Int).SetBytes(enc).Cmp(feToBig(&x)) != 0 {
			t.Fatal("feBytes mismatch")
		}
		var back fe
		if err := feSetBytes(&back, enc); err != nil || back != c {
			t.Fatalf("feSetBytes round trip: %v", err)
		}
	}
}

// TestFieldMulImplementations holds the assembly (where there is one) to
// the generated Go code: the same limbs out for the same limbs in, up to
// the loose bound, and with the output aliasing an input.
func TestFieldMulImplementations(t *testing.T) {
	if !hasMULX {
		t.Log("no MULX here: feMul is the Go code itself")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 20000; n++ {
		a, b := randLimbs(r, 61), randLimbs(r, 61)
		var got, want fe
		feMul(&got, &a, &b)
		feMulGeneric(&want, &a, &b)
		if got != want {
			t.Fatalf("mul %x · %x: %x, Go code %x", a, b, got, want)
		}
		feSquare(&got, &a)
		feSquareGeneric(&want, &a)
		if got != want {
			t.Fatalf("square %x: %x, Go code %x", a, got, want)
		}
		// Aliasing: out = a, out = b, a = b.
		x, y := a, b
		feMul(&x, &x, &b)
		feMulGeneric(&want, &a, &b)
		if x != want {
			t.Fatalf("mul with out = a: %x, want %x", x, want)
		}
		feMul(&y, &a, &y)
		if y != want {
			t.Fatalf("mul with out = b: %x, want %x", y, want)
		}
		x = a
		feSquare(&x, &x)
		feSquareGeneric(&want, &a)
		if x != want {
			t.Fatalf("square in place: %x, want %x", x, want)
		}
		feMul(&got, &a, &a)
		if got != want {
			t.Fatalf("mul a·a %x, square %x", got, want)
		}
	}
}

func TestFieldEdge(t *testing.T) {
	// p itself and 2p, 4p in various non-canonical forms are zero.
	var p fe
	for i := 0; i < 8; i++ {
		p[i] = mask58
	}
	p[8] = mask57
	if feIsZero(&p) == 0 {
		t.Fatal("p is not zero")
	}
	var twoP fe
	feAddLoose(&twoP, &p, &p)
	if feIsZero(&twoP) == 0 {
		t.Fatal("2p is not zero")
	}
	one := feOne
	if feIsZero(&one) != 0 {
		t.Fatal("1 is zero")
	}
	if err := feSetBytes(&one, feBytes(nil, &fe{})[:]); err != nil {
		t.Fatal(err)
	}
	pb := bigP.FillBytes(make([]byte, 66))
	var e fe
	if feSetBytes(&e, pb) == nil {
		t.Fatal("accepted p")
	}
	pm1 := new(big.Int).Sub(bigP, big.NewInt(1)).FillBytes(make([]byte, 66))
	if feSetBytes(&e, pm1) != nil {
		t.Fatal("rejected p−1")
	}
	big2 := new(big.Int).Lsh(big.NewInt(1), 521).FillBytes(make([]byte, 66))
	if feSetBytes(&e, big2) == nil {
		t.Fatal("accepted 2^521")
	}
	// Inversion.
	r := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 20; n++ {
		a := tightLimbs(r)
		var inv, prod fe
		feInvert(&inv, &a)
		feMul(&prod, &inv, &a)
		if feEqual(&prod, &feOne) == 0 {
			t.Fatal("inverse wrong")
		}
	}
	var z, zi fe
	feInvert(&zi, &z)
	if feIsZero(&zi) == 0 {
		t.Fatal("inverse of zero is not zero")
	}
}
