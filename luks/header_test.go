package luks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"testing"
)

func readVector(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadHeaderVector(t *testing.T) {
	b := readVector(t, "luks2-header.bin")
	h, err := ReadHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 2 || h.HdrSize != 16384 || h.UUID != "0b9f8a5e-7e0c-4a8c-9a4e-6d2b1c3e4f50" || h.Label != "tether-test" {
		t.Errorf("header = v%d size %d uuid %q label %q", h.Version, h.HdrSize, h.UUID, h.Label)
	}
	if len(h.Warnings) != 0 {
		t.Errorf("warnings: %v", h.Warnings)
	}
	if got := h.Slots(); len(got) != 2 || got[0] != 0 || got[1] != 2 {
		t.Fatalf("slots = %v, want [0 2]", got)
	}
	k0, _ := h.Keyslot(0)
	if k0.KDF.Type != "pbkdf2" || k0.KDF.Iterations != 1000 || k0.KDF.Hash != "sha256" || k0.KeySize != 64 {
		t.Errorf("slot 0 = %+v", k0.KDF)
	}
	k2, _ := h.Keyslot(2)
	if k2.KDF.Type != "argon2id" || k2.KDF.Time != 4 || k2.KDF.Memory != 32 {
		t.Errorf("slot 2 = %+v", k2.KDF)
	}
	if got := h.TokenIDs(); len(got) != 2 || got[0] != 0 || got[1] != 5 {
		t.Fatalf("tokens = %v, want [0 5]", got)
	}
	if tok, _ := h.Token(0); tok.Type != "clevis" || len(tok.Keyslots) != 1 || tok.Keyslots[0] != "2" {
		t.Errorf("token 0 = %+v", tok)
	}
	if got := h.TokensFor(2); len(got) != 1 || got[0] != 0 {
		t.Errorf("TokensFor(2) = %v", got)
	}
	if h.FreeSlot() != 1 || h.FreeToken() != 1 {
		t.Errorf("free slot %d token %d, want 1 1", h.FreeSlot(), h.FreeToken())
	}
	if h.VolumeHash() != "sha256" {
		t.Errorf("volume hash %q", h.VolumeHash())
	}
	seg := h.Metadata.Segments["0"]
	if seg.Offset != 16<<20 || seg.Encryption != "aes-xts-plain64" || seg.Size != "dynamic" {
		t.Errorf("segment = %+v", seg)
	}
	if h.Metadata.Config.JSONSize != 12288 || h.JSONFree() <= 0 || h.Reencrypting() {
		t.Errorf("config = %+v free %d", h.Metadata.Config, h.JSONFree())
	}
}

func TestReadHeaderDamagedCopies(t *testing.T) {
	b := readVector(t, "luks2-header.bin")
	// A flipped byte in the primary JSON area: the secondary copy is used.
	p := append([]byte(nil), b...)
	p[4096+10] ^= 1
	h, err := ReadHeader(bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Warnings) == 0 || len(h.Slots()) != 2 {
		t.Errorf("damaged primary: warnings %v slots %v", h.Warnings, h.Slots())
	}
	// Both damaged: an error, never a guess.
	p[16384+4096+10] ^= 1
	if _, err := ReadHeader(bytes.NewReader(p)); err == nil {
		t.Error("both copies damaged: no error")
	}
	// The primary magic gone: the secondary is still found.
	q := append([]byte(nil), b...)
	copy(q, "XXXX")
	if h, err := ReadHeader(bytes.NewReader(q)); err != nil || h.HdrSize != 16384 {
		t.Errorf("primary magic gone: %v", err)
	}
}

func TestReadHeaderRejects(t *testing.T) {
	if _, err := ReadHeader(bytes.NewReader(readVector(t, "luks1-header.bin"))); !errors.Is(err, ErrLUKS1) {
		t.Errorf("LUKS1: err = %v, want ErrLUKS1", err)
	}
	if _, err := ReadHeader(bytes.NewReader(make([]byte, 65536))); !errors.Is(err, ErrNotLUKS) {
		t.Errorf("zeros: err = %v, want ErrNotLUKS", err)
	}
	if _, err := ReadHeader(bytes.NewReader([]byte("LUKS"))); !errors.Is(err, ErrNotLUKS) {
		t.Errorf("short: err = %v, want ErrNotLUKS", err)
	}
	b := readVector(t, "luks2-header.bin")
	v3 := append([]byte(nil), b...)
	binary.BigEndian.PutUint16(v3[6:], 3)
	binary.BigEndian.PutUint16(v3[16384+6:], 3)
	if _, err := ReadHeader(bytes.NewReader(v3)); err == nil {
		t.Error("version 3 accepted")
	}
}

// FuzzReadHeader checks that the parser never panics or loops on hostile
// headers and that whatever it accepts is self-consistent. The seeds are
// 32 KiB, which makes minimising new inputs slow: run it with
// go test ./luks -run X -fuzz FuzzReadHeader -fuzzminimizetime 0.
func FuzzReadHeader(f *testing.F) {
	f.Add(readVector(f, "luks2-header.bin"), false)
	f.Add(readVector(f, "luks2-header.bin"), true)
	f.Add(readVector(f, "luks1-header.bin"), false)
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			// Give the primary copy a valid checksum so that the fuzzer
			// reaches the JSON parser, not just the checksum check.
			fixChecksum(b)
		}
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		if h.Version != 2 || h.HdrSize < 0x4000 || len(h.JSON) > int(h.Metadata.Config.JSONSize) {
			t.Fatalf("accepted inconsistent header: v%d size %d json %d", h.Version, h.HdrSize, len(h.JSON))
		}
		for _, id := range h.TokenIDs() {
			tok, _ := h.Token(id)
			if tok.Type == "" {
				t.Fatal("accepted token without type")
			}
		}
		_ = h.FreeSlot()
		_ = h.VolumeHash()
		_ = h.Reencrypting()
	})
}

func fixChecksum(b []byte) {
	if len(b) < binHeaderSize {
		return
	}
	size := binary.BigEndian.Uint64(b[8:16])
	if size < binHeaderSize || size > uint64(len(b)) {
		return
	}
	clear(b[csumOffset : csumOffset+csumLen])
	sum := sha256.Sum256(b[:size])
	copy(b[csumOffset:], sum[:])
}
