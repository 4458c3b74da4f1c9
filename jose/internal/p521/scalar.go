package p521

import "math/bits"

// scalar is a 528-bit integer in little-endian 64-bit words (the top word
// holds the 16 high bits of a 66-byte input).
type scalar [9]uint64

// orderBytes is the order n of the P-521 base point, big-endian.
var orderBytes = [66]byte{
	0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfa, 0x51, 0x86,
	0x87, 0x83, 0xbf, 0x2f, 0x96, 0x6b, 0x7f, 0xcc, 0x01, 0x48, 0xf7, 0x09,
	0xa5, 0xd0, 0x3b, 0xb5, 0xc9, 0xb8, 0x89, 0x9c, 0x47, 0xae, 0xbb, 0x6f,
	0xb7, 0x1e, 0x91, 0x38, 0x64, 0x09,
}

// orderShifted[i] = n·2^i, for the reduction of 528-bit scalars.
var orderShifted [8]scalar

func init() {
	n := scalarFromBytes(orderBytes[:])
	for i := range orderShifted {
		orderShifted[i] = n
		// n << 1
		var c uint64
		for k := range n {
			n[k], c = n[k]<<1|c, n[k]>>63
		}
	}
}

func scalarFromBytes(b []byte) scalar {
	var s scalar
	for i := 0; i < 66; i++ {
		s[i/8] |= uint64(b[65-i]) << (8 * (i % 8))
	}
	return s
}

// reduce sets s to s mod n in constant time. Any 528-bit s is below 2^8·n
// (n > 2^520), so eight conditional subtractions of n·2^7, …, n·2^0 suffice:
// before the step for 2^i, s < 2^(i+1)·n holds, and after it s < 2^i·n.
func (s *scalar) reduce() {
	for i := 7; i >= 0; i-- {
		m := &orderShifted[i]
		var t scalar
		var b uint64
		for k := range t {
			t[k], b = bits.Sub64(s[k], m[k], b)
		}
		keep := -b // all ones if s < m (borrow): keep s
		for k := range s {
			s[k] = t[k] ^ (keep & (s[k] ^ t[k]))
		}
	}
}

// windows is the number of 5-bit signed windows covering a reduced scalar
// (< n < 2^521): 105·5 = 525 bits, and the top window's digit is at most 2.
const windows = 105

// recode splits a reduced scalar into signed base-32 digits d[j] ∈ [−15, 16]
// with s = Σ d[j]·32^j, returned as magnitudes and sign masks (all ones for
// negative digits). It runs in constant time: window positions are public
// and the digit logic is branch-free arithmetic.
func (s *scalar) recode() (mag [windows]uint8, neg [windows]uint64) {
	var carry uint64
	for j := 0; j < windows; j++ {
		pos := 5 * j
		q, sh := pos/64, uint(pos%64)
		v := s[q] >> sh
		if sh > 59 && q+1 < len(s) {
			v |= s[q+1] << (64 - sh)
		}
		w := v&31 + carry      // 0..32
		carry = (16 - w) >> 63 // 1 iff w > 16
		d := w - carry<<5      // two's complement digit in [−15, 16]
		sign := -(d >> 63)     // all ones iff negative
		mag[j] = uint8((d ^ sign) - sign)
		neg[j] = sign
	}
	return
}
