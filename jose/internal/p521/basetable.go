package p521

//go:generate go test -run ^TestBaseTable$ -update-basetable

import (
	_ "embed"
	"encoding/binary"
	"sync"
	"unsafe"
)

// basetable.bin is computeBaseTable's result, precomputed: every limb of
// the [windows][16]affine array in memory order, little-endian, 241,920
// bytes. Shipping it means a process's first fixed-base multiplication
// costs what every other one does (about 80 µs) instead of 3.5 ms to build
// the table; a one-shot client (tether decrypt) blinds with one. go
// generate rewrites it, and TestBaseTable fails if it differs from what
// computeBaseTable gives.
//
//go:embed basetable.bin
var baseTableBin string

// baseTable returns the fixed-base table. On a little-endian machine with
// the embedded bytes 8-byte aligned (as the linker places them) it is
// those bytes themselves, read-only and loaded on demand like code; on any
// other it is a copy decoded once.
var baseTable = sync.OnceValue(func() *[windows][16]affine {
	if len(baseTableBin) != baseTableSize {
		panic("p521: basetable.bin is not a base table; run go generate ./internal/p521")
	}
	p := unsafe.Pointer(unsafe.StringData(baseTableBin))
	if nativeLittleEndian() && uintptr(p)%8 == 0 {
		return (*[windows][16]affine)(p)
	}
	return decodeBaseTable(baseTableBin)
})

const baseTableSize = int(unsafe.Sizeof([windows][16]affine{}))

func nativeLittleEndian() bool {
	return binary.NativeEndian.Uint16([]byte{1, 0}) == 1
}

// encodeBaseTable is the basetable.bin form of t.
func encodeBaseTable(t *[windows][16]affine) []byte {
	b := make([]byte, 0, baseTableSize)
	for j := range t {
		for i := range t[j] {
			for _, limb := range t[j][i].x {
				b = binary.LittleEndian.AppendUint64(b, limb)
			}
			for _, limb := range t[j][i].y {
				b = binary.LittleEndian.AppendUint64(b, limb)
			}
		}
	}
	return b
}

// decodeBaseTable reads the basetable.bin form, which must be
// baseTableSize bytes.
func decodeBaseTable(b string) *[windows][16]affine {
	t := new([windows][16]affine)
	for j := range t {
		for i := range t[j] {
			for k := range t[j][i].x {
				t[j][i].x[k] = binary.LittleEndian.Uint64([]byte(b[:8]))
				b = b[8:]
			}
			for k := range t[j][i].y {
				t[j][i].y[k] = binary.LittleEndian.Uint64([]byte(b[:8]))
				b = b[8:]
			}
		}
	}
	return t
}
