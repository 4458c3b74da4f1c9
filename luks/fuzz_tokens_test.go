package luks

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	// The pins whose headers list and regen read (pin.ConfigOf), so that
	// FuzzTokens reaches their parsers.
	_ "github.com/tether-nbde/tether/pin/sss"
	_ "github.com/tether-nbde/tether/pin/tang"
	_ "github.com/tether-nbde/tether/pin/tpm2"
)

// The tokens of a LUKS2 header come from the disk, which may come from
// anyone; luks list, unlock and repair act on them. These targets feed
// them hostile JSON.

const fuzzStateDir = "/var/lib/tether/luks"

// metadataSeeds are the JSON area of the cryptsetup-made vector, and the
// same with tokens as tether writes them: a binding holding a real clevis
// JWE (pin/tang/testdata/new.jwe, from clevis encrypt tang) and a txn.
func metadataSeeds(t testing.TB) [][]byte {
	h, err := ReadHeader(bytes.NewReader(readVector(t, "luks2-header.bin")))
	if err != nil {
		t.Fatal(err)
	}
	compact, err := os.ReadFile(filepath.Join("..", "pin", "tang", "testdata", "new.jwe"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := jose.ParseCompact(strings.TrimSpace(string(compact)))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenJSON(2, j)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := json.Marshal(txn{Type: TypeTxn, Keyslots: []string{}, Op: "regen", Slot: "3", OldSlot: "2", OldToken: "0",
		Backup: filepath.Join(fuzzStateDir, h.UUID+"-20260101T000000.000000000.header")})
	var m map[string]json.RawMessage
	if err := json.Unmarshal(h.JSON, &m); err != nil {
		t.Fatal(err)
	}
	m["tokens"] = json.RawMessage(`{"0":` + string(tok) + `,"1":` + string(x) + `,"5":{"type":"example-foreign","keyslots":[]}}`)
	withTokens, _ := json.Marshal(m)
	// The token vectors as cryptsetup stored them (testdata/tokens).
	vh, err := ReadHeaderFile(filepath.Join("testdata", "tokens", "header.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{h.JSON, withTokens, vh.JSON}
}

// FuzzTokens parses hostile metadata as the header reader does, then runs
// what list, unlock and repair run on its tokens: none may panic, and
// what they accept must be what a binding is.
func FuzzTokens(f *testing.F) {
	for _, s := range metadataSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h := &Header{HdrSize: 0x4000, JSON: b}
		if json.Unmarshal(b, &h.Metadata) != nil || h.Metadata.check(h.HdrSize) != nil {
			return
		}
		for _, bd := range Bindings(h) {
			if _, ok := h.Keyslot(bd.Slot); !ok {
				t.Fatalf("binding for inactive keyslot %d", bd.Slot)
			}
			if bd.Err != nil {
				continue
			}
			_ = bd.Pin()
			_ = pin.Describe(bd.JWE)
			pin.ConfigOf(bd.JWE)
			_ = pin.TangKeys(bd.JWE)
			// A binding written back is the same binding.
			tok, err := tokenJSON(bd.Slot, bd.JWE)
			if err != nil {
				continue
			}
			var bt bindingToken
			if err := json.Unmarshal(tok, &bt); err != nil {
				t.Fatalf("tokenJSON wrote %q: %v", tok, err)
			}
			j2, err := jose.ParseFlattened(bt.JWE)
			if err != nil || j2.Compact() != bd.JWE.Compact() {
				t.Fatalf("binding of keyslot %d does not survive a rewrite: %v", bd.Slot, err)
			}
		}
		_ = Leftovers(h)
		for _, id := range h.TokenIDs() {
			if tk, _ := h.Token(id); tk.Type == TypeTxn {
				checkTxn(t, tk.Raw, h.UUID)
			}
		}
	})
}

// FuzzParseTxn feeds parseTxn hostile txn tokens: what it accepts names
// keyslot ids, and a backup it agrees to delete is one tether made.
func FuzzParseTxn(f *testing.F) {
	const uuid = "0b9f8a5e-7e0c-4a8c-9a4e-6d2b1c3e4f50"
	for _, x := range []txn{
		{Type: TypeTxn, Keyslots: []string{}, Op: "bind", Slot: "1", Backup: filepath.Join(fuzzStateDir, uuid+"-20260101T000000.000000000.header")},
		{Type: TypeTxn, Keyslots: []string{}, Op: "regen", Slot: "4", OldSlot: "1", OldToken: "0"},
		{Type: TypeTxn, Keyslots: []string{}, Op: "unbind", Slot: "31", Backup: "/etc/shadow"},
		{Type: TypeTxn, Keyslots: []string{}, Op: "bind", Slot: "2", Backup: fuzzStateDir + "/../" + uuid + "-x.header"},
	} {
		b, _ := json.Marshal(x)
		f.Add(b, uuid)
	}
	f.Fuzz(func(t *testing.T, b []byte, uuid string) {
		checkTxn(t, b, uuid)
	})
}

func checkTxn(t *testing.T, raw []byte, uuid string) {
	x, backupOK, err := parseTxn(raw, fuzzStateDir, uuid)
	if err != nil {
		return
	}
	if _, err := slotID(x.Slot); err != nil {
		t.Fatalf("accepted slot %q", x.Slot)
	}
	if x.Op == "regen" {
		if _, err := slotID(x.OldSlot); err != nil {
			t.Fatalf("accepted old slot %q", x.OldSlot)
		}
	}
	if backupOK && x.Backup != "" {
		rel, err := filepath.Rel(fuzzStateDir, x.Backup)
		if err != nil || strings.Contains(rel, "/") || strings.HasPrefix(rel, "..") || filepath.Join(fuzzStateDir, rel) != x.Backup ||
			uuid == "" || !strings.HasPrefix(rel, uuid+"-") {
			t.Fatalf("would delete %q (uuid %q)", x.Backup, uuid)
		}
	}
}

// TestTokenSeeds: the seeds reach what FuzzTokens checks — a parsed
// binding and a txn token — or the fuzzer starts from nothing.
func TestTokenSeeds(t *testing.T) {
	seeds := metadataSeeds(t)
	h := &Header{HdrSize: 0x4000, JSON: seeds[1]}
	if err := json.Unmarshal(seeds[1], &h.Metadata); err != nil {
		t.Fatal(err)
	}
	if err := h.Metadata.check(h.HdrSize); err != nil {
		t.Fatal(err)
	}
	bs := Bindings(h)
	if len(bs) != 1 || bs[0].Err != nil || bs[0].Pin() != "tang" || len(Leftovers(h)) != 1 {
		t.Fatalf("bindings %+v, leftovers %+v", bs, Leftovers(h))
	}
}
