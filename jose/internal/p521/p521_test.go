package p521

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"flag"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"filippo.io/nistec"
)

var long = flag.Bool("long", false, "run many more random and edge-case comparisons against nistec")

var bigN = new(big.Int).SetBytes(orderBytes[:])

func scalarBytes(v *big.Int) []byte {
	m := new(big.Int).Lsh(big.NewInt(1), 528)
	v = new(big.Int).Mod(v, m)
	return v.FillBytes(make([]byte, 66))
}

func nistMul(t testing.TB, p, s []byte) []byte {
	t.Helper()
	q, err := nistec.NewP521Point().SetBytes(p)
	if err != nil {
		t.Fatalf("nistec SetBytes: %v", err)
	}
	r, err := nistec.NewP521Point().ScalarMult(q, s)
	if err != nil {
		t.Fatalf("nistec ScalarMult: %v", err)
	}
	return r.Bytes()
}

func nistBaseMult(t testing.TB, s []byte) []byte {
	t.Helper()
	r, err := nistec.NewP521Point().ScalarBaseMult(s)
	if err != nil {
		t.Fatalf("nistec ScalarBaseMult: %v", err)
	}
	return r.Bytes()
}

func genBytes() []byte { return nistec.NewP521Point().SetGenerator().Bytes() }

// edgeScalars are the interesting scalars: small ones, values around n and
// multiples of n, values that hit the doubling case of the last addition
// (n − 18 with this recoding), and the largest 66-byte value.
func edgeScalars() [][]byte {
	var out [][]byte
	add := func(v *big.Int) { out = append(out, scalarBytes(v)) }
	for i := int64(0); i <= 33; i++ {
		add(big.NewInt(i))
	}
	for i := int64(-20); i <= 20; i++ {
		add(new(big.Int).Add(bigN, big.NewInt(i)))
	}
	for i := int64(-3); i <= 3; i++ {
		add(new(big.Int).Add(new(big.Int).Lsh(bigN, 1), big.NewInt(i)))
		add(new(big.Int).Add(new(big.Int).Lsh(bigN, 7), big.NewInt(i)))
	}
	add(new(big.Int).Sub(bigN, big.NewInt(36))) // doubling case with 2·d0
	add(new(big.Int).Sub(bigN, big.NewInt(32)))
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 528), big.NewInt(1))
	add(max)
	add(new(big.Int).Sub(max, big.NewInt(1)))
	add(new(big.Int).Lsh(big.NewInt(1), 520))
	add(new(big.Int).Lsh(big.NewInt(1), 521))
	add(new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 521), big.NewInt(1)))
	add(new(big.Int).Rsh(bigN, 1))
	add(new(big.Int).Add(new(big.Int).Rsh(bigN, 1), big.NewInt(1)))
	// Digit patterns: all windows 16 (carry chains) and all windows 17.
	var s16, s17 big.Int
	for j := 0; j < 105; j++ {
		s16.Lsh(&s16, 5).Or(&s16, big.NewInt(16))
		s17.Lsh(&s17, 5).Or(&s17, big.NewInt(17))
	}
	add(&s16)
	add(&s17)
	return out
}

// testPoints returns G, −G, small multiples of G and a few random points.
func testPoints(t testing.TB) [][]byte {
	g := genBytes()
	pts := [][]byte{g}
	neg, _ := nistec.NewP521Point().SetBytes(g)
	pts = append(pts, nistec.NewP521Point().Negate(neg).Bytes())
	for _, k := range []int64{2, 3, 5, 16, 17, 31, 32, 33} {
		pts = append(pts, nistBaseMult(t, scalarBytes(big.NewInt(k))))
	}
	pts = append(pts, nistBaseMult(t, scalarBytes(new(big.Int).Sub(bigN, big.NewInt(2)))))
	for i := 0; i < 3; i++ {
		k, _ := ecdh.P521().GenerateKey(rand.Reader)
		pts = append(pts, k.PublicKey().Bytes())
	}
	return pts
}

func TestScalarMultEdge(t *testing.T) {
	scalars := edgeScalars()
	pts := testPoints(t)
	for pi, p := range pts {
		for si, s := range scalars {
			if pi > 2 && si%8 != pi%8 && !*long {
				continue // keep the test fast: all scalars on G, −G and 2G
			}
			got, err := ScalarMult(p, s)
			if err != nil {
				t.Fatalf("point %d scalar %x: %v", pi, s, err)
			}
			if want := nistMul(t, p, s); !bytes.Equal(got, want) {
				t.Fatalf("point %d scalar %x:\n got %x\nwant %x", pi, s, got, want)
			}
		}
	}
}

func TestScalarBaseMultEdge(t *testing.T) {
	for _, s := range edgeScalars() {
		got, err := ScalarBaseMult(s)
		if err != nil {
			t.Fatal(err)
		}
		if want := nistBaseMult(t, s); !bytes.Equal(got, want) {
			t.Fatalf("scalar %x:\n got %x\nwant %x", s, got, want)
		}
	}
}

func TestScalarMultRandom(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 50
	}
	if *long {
		n = 20000
	}
	r := mrand.New(mrand.NewPCG(5, 6))
	for i := 0; i < n; i++ {
		s := make([]byte, 66)
		rand.Read(s)
		switch r.IntN(4) {
		case 0:
			s[0] &= 1 // below 2^521, usually < n
		case 1:
			s[0] = 0
		}
		k, _ := ecdh.P521().GenerateKey(rand.Reader)
		p := k.PublicKey().Bytes()
		got, err := ScalarMult(p, s)
		if err != nil {
			t.Fatal(err)
		}
		if want := nistMul(t, p, s); !bytes.Equal(got, want) {
			t.Fatalf("scalar %x point %x:\n got %x\nwant %x", s, p, got, want)
		}
		got, err = ScalarBaseMult(s)
		if err != nil {
			t.Fatal(err)
		}
		if want := nistBaseMult(t, s); !bytes.Equal(got, want) {
			t.Fatalf("base scalar %x:\n got %x\nwant %x", s, got, want)
		}
	}
}

// TestECDH checks against crypto/ecdh: the shared secret is the x
// coordinate of priv·pub, and the public key is priv·G.
func TestECDH(t *testing.T) {
	n := 100
	if *long {
		n = 5000
	}
	for i := 0; i < n; i++ {
		a, _ := ecdh.P521().GenerateKey(rand.Reader)
		b, _ := ecdh.P521().GenerateKey(rand.Reader)
		want, err := a.ECDH(b.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		got, err := ScalarMult(b.PublicKey().Bytes(), a.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[1:67], want) {
			t.Fatalf("ECDH mismatch")
		}
		pub, err := ScalarBaseMult(a.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pub, a.PublicKey().Bytes()) {
			t.Fatalf("public key mismatch")
		}
	}
}

func nistAdd(t testing.TB, a, b []byte, sub bool) []byte {
	t.Helper()
	p, err := nistec.NewP521Point().SetBytes(a)
	if err != nil {
		t.Fatal(err)
	}
	q, err := nistec.NewP521Point().SetBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if sub {
		q.Negate(q)
	}
	return nistec.NewP521Point().Add(p, q).Bytes()
}

func TestAddSubNegate(t *testing.T) {
	pts := append(testPoints(t), []byte{0})
	for _, a := range pts {
		for _, b := range pts {
			got, err := Add(a, b)
			if err != nil {
				t.Fatal(err)
			}
			if want := nistAdd(t, a, b, false); !bytes.Equal(got, want) {
				t.Fatalf("Add(%x, %x):\n got %x\nwant %x", a, b, got, want)
			}
			got, err = Sub(a, b)
			if err != nil {
				t.Fatal(err)
			}
			if want := nistAdd(t, a, b, true); !bytes.Equal(got, want) {
				t.Fatalf("Sub(%x, %x):\n got %x\nwant %x", a, b, got, want)
			}
		}
		got, err := Negate(a)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := nistec.NewP521Point().SetBytes(a)
		if want := nistec.NewP521Point().Negate(p).Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("Negate(%x):\n got %x\nwant %x", a, got, want)
		}
	}
}

func TestEncodings(t *testing.T) {
	g := genBytes()
	gp, _ := nistec.NewP521Point().SetBytes(g)
	comp := gp.BytesCompressed()
	s := scalarBytes(big.NewInt(12345))
	got, err := ScalarMult(comp, s)
	if err != nil {
		t.Fatal(err)
	}
	if want := nistMul(t, g, s); !bytes.Equal(got, want) {
		t.Fatal("compressed G mismatch")
	}
	neg := nistec.NewP521Point().Negate(gp).BytesCompressed()
	got, err = ScalarMult(neg, s)
	if err != nil {
		t.Fatal(err)
	}
	if want := nistMul(t, neg, s); !bytes.Equal(got, want) {
		t.Fatal("compressed −G mismatch")
	}
	// Identity.
	got, err = ScalarMult([]byte{0}, s)
	if err != nil || !bytes.Equal(got, []byte{0}) {
		t.Fatalf("identity: %x %v", got, err)
	}

	bad := [][]byte{
		nil, {}, {4}, {1}, {0, 0}, g[:132], append(append([]byte{}, g...), 0),
		append([]byte{5}, g[1:]...),
		append([]byte{2}, g[1:]...), // wrong length for compressed
	}
	offCurve := append([]byte{}, g...)
	offCurve[132] ^= 1
	bad = append(bad, offCurve)
	// Coordinate ≥ p.
	big1 := append([]byte{}, g...)
	copy(big1[1:67], bigP.FillBytes(make([]byte, 66)))
	bad = append(bad, big1)
	xp := append([]byte{}, g...)
	xp[1] = 0xff
	bad = append(bad, xp)
	// Compressed x with no square root: find one.
	for x := int64(1); ; x++ {
		c := append([]byte{2}, big.NewInt(x).FillBytes(make([]byte, 66))...)
		if _, err := nistec.NewP521Point().SetBytes(c); err != nil {
			bad = append(bad, c)
			break
		}
	}
	for _, b := range bad {
		if _, err := ScalarMult(b, s); err == nil {
			t.Errorf("ScalarMult accepted %x", b)
		}
		if _, err := nistec.NewP521Point().SetBytes(b); err == nil {
			t.Errorf("test bug: nistec accepts %x", b)
		}
		if IsOnCurve(b) {
			t.Errorf("IsOnCurve(%x)", b)
		}
		if _, err := Add(g, b); err == nil {
			t.Errorf("Add accepted %x", b)
		}
	}
	for _, l := range []int{0, 1, 65, 67, 132} {
		if _, err := ScalarMult(g, make([]byte, l)); err == nil {
			t.Errorf("ScalarMult accepted a %d-byte scalar", l)
		}
		if _, err := ScalarBaseMult(make([]byte, l)); err == nil {
			t.Errorf("ScalarBaseMult accepted a %d-byte scalar", l)
		}
	}
}

func TestScalarReduce(t *testing.T) {
	r := mrand.New(mrand.NewPCG(7, 8))
	for i := 0; i < 2000; i++ {
		b := make([]byte, 66)
		for k := range b {
			b[k] = byte(r.Uint32())
		}
		if i%3 == 0 {
			b[0] = 0xff
		}
		s := scalarFromBytes(b)
		s.reduce()
		want := new(big.Int).Mod(new(big.Int).SetBytes(b), bigN)
		var got big.Int
		for k := 8; k >= 0; k-- {
			got.Lsh(&got, 64).Or(&got, new(big.Int).SetUint64(s[k]))
		}
		if got.Cmp(want) != 0 {
			t.Fatalf("reduce(%x) = %x, want %x", b, &got, want)
		}
		// Recoding reproduces the value.
		mag, neg := s.recode()
		var sum big.Int
		for j := windows - 1; j >= 0; j-- {
			sum.Lsh(&sum, 5)
			d := big.NewInt(int64(mag[j]))
			if mag[j] > 16 {
				t.Fatal("digit magnitude > 16")
			}
			if neg[j] != 0 {
				d.Neg(d)
			}
			sum.Add(&sum, d)
		}
		if sum.Cmp(want) != 0 {
			t.Fatalf("recode mismatch")
		}
	}
}
