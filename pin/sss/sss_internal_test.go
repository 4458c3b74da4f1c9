package sss

import (
	"crypto/rand"
	"math/big"
	"testing"
)

func randPoly(t *testing.T, p *big.Int, degree int) []*big.Int {
	t.Helper()
	c := make([]*big.Int, degree+1)
	for i := range c {
		var err error
		if c[i], err = rand.Int(rand.Reader, p); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// subsets calls f with every k-subset of 0..n-1.
func subsets(n, k int, f func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == k {
			f(cur)
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func TestInterpolation(t *testing.T) {
	p, err := safePrime()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ t, n int }{{1, 1}, {1, 3}, {2, 3}, {3, 3}, {3, 5}, {5, 8}} {
		coeffs := randPoly(t, p, tc.t-1)
		seen := map[string]bool{}
		var xs, ys []*big.Int
		for i := 0; i < tc.n; i++ {
			x, err := distinctX(p, seen)
			if err != nil {
				t.Fatal(err)
			}
			xs, ys = append(xs, x), append(ys, eval(coeffs, x, p))
		}
		// Every t-subset gives the secret.
		subsets(tc.n, tc.t, func(idx []int) {
			var sx, sy []*big.Int
			for _, i := range idx {
				sx, sy = append(sx, xs[i]), append(sy, ys[i])
			}
			if got := interpolate(sx, sy, p, new(big.Int)); got == nil || got.Cmp(coeffs[0]) != 0 {
				t.Errorf("t=%d n=%d subset %v: wrong secret", tc.t, tc.n, idx)
			}
			if got := interpolate(sx, sy, p, xs[0]); got == nil || got.Cmp(ys[0]) != 0 {
				t.Errorf("t=%d n=%d subset %v: wrong value at the first x", tc.t, tc.n, idx)
			}
		})
		// t−1 shares do not (except with negligible probability).
		if tc.t > 1 {
			if got := interpolate(xs[:tc.t-1], ys[:tc.t-1], p, new(big.Int)); got != nil && got.Cmp(coeffs[0]) == 0 {
				t.Errorf("t=%d: %d shares revealed the secret", tc.t, tc.t-1)
			}
		}
		// A wrong share gives a wrong secret.
		if tc.t > 1 {
			bad := append([]*big.Int(nil), ys[:tc.t]...)
			bad[0] = new(big.Int).Add(bad[0], big.NewInt(1))
			if got := interpolate(xs[:tc.t], bad, p, new(big.Int)); got != nil && got.Cmp(coeffs[0]) == 0 {
				t.Errorf("t=%d: a wrong share still gave the secret", tc.t)
			}
		}
	}
	// Duplicate x: no inverse, nil rather than a wrong answer.
	x := big.NewInt(5)
	if got := interpolate([]*big.Int{x, x}, []*big.Int{big.NewInt(1), big.NewInt(2)}, p, new(big.Int)); got != nil {
		t.Errorf("duplicate x interpolated to %v", got)
	}
}

// TestEvalKnown checks Horner evaluation on a small field by hand.
func TestEvalKnown(t *testing.T) {
	p := big.NewInt(23)
	// f(x) = 3 + 2x + 5x² ; f(4) = 3 + 8 + 80 = 91 = 22 mod 23
	coeffs := []*big.Int{big.NewInt(3), big.NewInt(2), big.NewInt(5)}
	if got := eval(coeffs, big.NewInt(4), p); got.Int64() != 22 {
		t.Fatalf("f(4) = %v, want 22", got)
	}
	xs := []*big.Int{big.NewInt(1), big.NewInt(2), big.NewInt(4)}
	var ys []*big.Int
	for _, x := range xs {
		ys = append(ys, eval(coeffs, x, p))
	}
	if got := interpolate(xs, ys, p, new(big.Int)); got.Int64() != 3 {
		t.Fatalf("f(0) = %v, want 3", got)
	}
	// Anywhere else too (Rewrap's fresh points): f(7) = 3 + 14 + 245 = 262 = 9 mod 23.
	if got := interpolate(xs, ys, p, big.NewInt(7)); got.Int64() != 9 {
		t.Fatalf("f(7) = %v, want 9", got)
	}
}

func TestSafePrime(t *testing.T) {
	p, err := safePrime()
	if err != nil {
		t.Fatal(err)
	}
	q := new(big.Int).Rsh(p, 1)
	if p.BitLen() != 256 || !p.ProbablyPrime(20) || !q.ProbablyPrime(20) {
		t.Fatalf("%v is not a 256-bit safe prime", p)
	}
}
