package p521

import (
	"flag"
	"os"
	"testing"
	"unsafe"
)

var updateBaseTable = flag.Bool("update-basetable", false, "rewrite basetable.bin from computeBaseTable")

// TestBaseTable checks the shipped table against the one computed here, in
// both of the forms baseTable can take: the embedded bytes themselves and
// the decoded copy that big-endian or unaligned machines use. Fixed-base
// results are also compared with nistec in TestScalarBaseMult and
// FuzzScalarMult, which go through the shipped table.
func TestBaseTable(t *testing.T) {
	want := computeBaseTable()
	enc := encodeBaseTable(want)
	if len(enc) != baseTableSize {
		t.Fatalf("encoded table is %d bytes, want %d", len(enc), baseTableSize)
	}
	if *updateBaseTable {
		if err := os.WriteFile("basetable.bin", enc, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if baseTableBin != string(enc) {
		t.Fatal("basetable.bin differs from computeBaseTable: run go generate ./internal/p521")
	}
	if got := decodeBaseTable(baseTableBin); *got != *want {
		t.Fatal("decodeBaseTable(basetable.bin) differs from computeBaseTable")
	}
	got := baseTable()
	if *got != *want {
		t.Fatal("baseTable() differs from computeBaseTable")
	}
	viewed := unsafe.Pointer(got) == unsafe.Pointer(unsafe.StringData(baseTableBin))
	t.Logf("baseTable uses the embedded bytes in place: %v", viewed)
	if nativeLittleEndian() && !viewed {
		t.Error("little-endian machine, but baseTable decoded a copy: the embedded bytes are not 8-byte aligned")
	}
}
