package p521

import (
	"bytes"
	"math/big"
	"testing"

	"filippo.io/nistec"
)

// FuzzScalarMult compares ScalarMult, ScalarBaseMult, Add and Sub with
// filippo.io/nistec. The point is derived from the input (a multiple of G,
// optionally negated) so that the fuzzer spends its time on valid points;
// raw encodings are fuzzed too, for the parser.
func FuzzScalarMult(f *testing.F) {
	f.Add(make([]byte, 66), []byte{1}, []byte{4})
	f.Add(bytes.Repeat([]byte{0xff}, 66), []byte{2}, []byte{0})
	f.Add(scalarBytes(new(big.Int).Sub(bigN, big.NewInt(18))), []byte{1}, genBytes())
	f.Add(scalarBytes(new(big.Int).Add(bigN, big.NewInt(1))), []byte{0x80, 3}, genBytes()[:67])
	f.Fuzz(func(t *testing.T, s, k, raw []byte) {
		if len(s) > 66 || len(k) > 66 {
			return
		}
		s = append(make([]byte, 66-len(s)), s...)
		// Point: [k]G, negated if the top bit of k is set, or raw.
		neg := len(k) > 0 && k[0]&0x80 != 0
		kk := append(make([]byte, 66-len(k)), k...)
		if len(k) > 0 {
			kk[66-len(k)] &^= 0x80
		}
		np, err := nistec.NewP521Point().ScalarBaseMult(kk)
		if err != nil {
			t.Fatal(err)
		}
		if neg {
			np.Negate(np)
		}
		pt := np.Bytes()

		got, err := ScalarMult(pt, s)
		if err != nil {
			t.Fatalf("ScalarMult(%x, %x): %v", pt, s, err)
		}
		want, _ := nistec.NewP521Point().ScalarMult(np, s)
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("ScalarMult(%x, %x) = %x, want %x", pt, s, got, want.Bytes())
		}
		gotB, err := ScalarBaseMult(s)
		if err != nil {
			t.Fatal(err)
		}
		wantB, _ := nistec.NewP521Point().ScalarBaseMult(s)
		if !bytes.Equal(gotB, wantB.Bytes()) {
			t.Fatalf("ScalarBaseMult(%x) = %x, want %x", s, gotB, wantB.Bytes())
		}
		gotA, err := Add(pt, gotB)
		if err != nil {
			t.Fatal(err)
		}
		if w := nistec.NewP521Point().Add(np, wantB); !bytes.Equal(gotA, w.Bytes()) {
			t.Fatalf("Add mismatch")
		}
		gotS, err := Sub(pt, got)
		if err != nil {
			t.Fatal(err)
		}
		if w := nistec.NewP521Point().Add(np, nistec.NewP521Point().Negate(want)); !bytes.Equal(gotS, w.Bytes()) {
			t.Fatalf("Sub mismatch")
		}

		// Raw encodings: accepted exactly when nistec accepts them, and
		// then with the same result.
		rp, rerr := nistec.NewP521Point().SetBytes(raw)
		rgot, err := ScalarMult(raw, s)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("ScalarMult(%x): err %v, nistec err %v", raw, err, rerr)
		}
		if err == nil {
			rw, _ := nistec.NewP521Point().ScalarMult(rp, s)
			if !bytes.Equal(rgot, rw.Bytes()) {
				t.Fatalf("ScalarMult(%x, %x) = %x, want %x", raw, s, rgot, rw.Bytes())
			}
		}
	})
}

// FuzzField checks multiplication, squaring, addition and subtraction
// against math/big on arbitrary loose limbs (masked to the input bounds).
func FuzzField(f *testing.F) {
	f.Add(bytes.Repeat([]byte{0xff}, 144))
	f.Add(make([]byte, 144))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 144 {
			return
		}
		var a, b fe
		for i := 0; i < 9; i++ {
			a[i] = le64(in[8*i:])
			b[i] = le64(in[72+8*i:])
		}
		// Loose operands for mul/square: limbs < 3·2^60.
		la, lb := a, b
		for i := range la {
			la[i] %= 3 << 60
			lb[i] %= 3 << 60
		}
		var got, gen fe
		feMul(&got, &la, &lb)
		if feMulGeneric(&gen, &la, &lb); gen != got {
			t.Fatalf("mul %x %x: %x, Go code %x", la, lb, got, gen)
		}
		feSquare(&got, &la)
		if feSquareGeneric(&gen, &la); gen != got {
			t.Fatalf("square %x: %x, Go code %x", la, got, gen)
		}
		feMul(&got, &la, &lb)
		want := new(big.Int).Mul(feToBig(&la), feToBig(&lb))
		if feToBig(&got).Cmp(want.Mod(want, bigP)) != 0 {
			t.Fatalf("mul %x %x", la, lb)
		}
		feSquare(&got, &la)
		want.Mul(feToBig(&la), feToBig(&la))
		if feToBig(&got).Cmp(want.Mod(want, bigP)) != 0 {
			t.Fatalf("square %x", la)
		}
		// Tight operands for add/sub/canon.
		ta, tb := a, b
		for i := range ta {
			bound := uint64(1<<58 + 1<<14)
			if i == 8 {
				bound = 1<<57 + 1<<14
			}
			ta[i] %= bound
			tb[i] %= bound
		}
		feSub(&got, &ta, &tb)
		want.Sub(feToBig(&ta), feToBig(&tb))
		if feToBig(&got).Cmp(want.Mod(want, bigP)) != 0 {
			t.Fatalf("sub %x %x", ta, tb)
		}
		wantZero := want.Sign() == 0
		if (feEqual(&ta, &tb) != 0) != wantZero {
			t.Fatalf("equal %x %x", ta, tb)
		}
		if (feIsZero(&la) != 0) != (feToBig(&la).Sign() == 0) {
			t.Fatalf("isZero %x", la)
		}
		var c fe
		feCanon(&c, &la)
		if feToBig(&c).Cmp(feToBig(&la)) != 0 || new(big.Int).SetBytes(feBytes(nil, &la)).Cmp(feToBig(&la)) != 0 {
			t.Fatalf("canon %x", la)
		}
	})
}

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}
