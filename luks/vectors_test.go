package luks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/jose"
)

// The token vectors in testdata/tokens were written from docs/LUKS.md by
// hand and stored in a LUKS2 header by the real cryptsetup
// (testdata/tokens/gen.sh). Both directions: tether writes exactly those
// bytes, and reads back what cryptsetup stored.

const vectorUUID = "3c1d7e52-9a4b-4f0e-8d6c-2b5a7f913e08"

func tokenVector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "tokens", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compactVector(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "pin", path))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// vectorTxns are the txn tokens of the vectors as Go values.
var vectorTxns = map[string]txn{
	"txn-bind.json": {Type: TypeTxn, Keyslots: []string{}, Op: "bind", Slot: "3",
		Backup: "/var/lib/tether/luks/" + vectorUUID + "-20260102T030405.000000006.header"},
	"txn-regen.json": {Type: TypeTxn, Keyslots: []string{}, Op: "regen", Slot: "4", OldSlot: "1", OldToken: "0",
		Backup: "/var/lib/tether/luks/" + vectorUUID + "-20260102T030405.000000007.header"},
	"txn-unbind.json": {Type: TypeTxn, Keyslots: []string{}, Op: "unbind", Slot: "2"},
}

func TestTokenVectorsProduce(t *testing.T) {
	for _, tc := range []struct {
		file, jwe string
		slot      int
	}{
		{"tether.json", "https/testdata/https.jwe", 2},
		{"clevis.json", "tang/testdata/new.jwe", 1},
	} {
		j, err := jose.ParseCompact(compactVector(t, tc.jwe))
		if err != nil {
			t.Fatal(err)
		}
		got, err := tokenJSON(tc.slot, j)
		if err != nil {
			t.Fatal(err)
		}
		if want := tokenVector(t, tc.file); string(got) != string(want) {
			t.Errorf("token for %s:\n%s\nwant %s:\n%s", tc.jwe, got, tc.file, want)
		}
	}
	for file, x := range vectorTxns {
		got, _ := json.Marshal(x)
		if want := tokenVector(t, file); string(got) != string(want) {
			t.Errorf("txn token:\n%s\nwant %s:\n%s", got, file, want)
		}
	}
}

func TestTokenVectorsParse(t *testing.T) {
	h, err := ReadHeaderFile(filepath.Join("testdata", "tokens", "header.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if h.UUID != vectorUUID {
		t.Fatalf("UUID %s", h.UUID)
	}
	bs := Bindings(h)
	want := []struct {
		slot, token int
		typ, pin    string
		jwe         string
	}{
		{1, 0, TypeClevis, "tang", "tang/testdata/new.jwe"},
		{2, 1, TypeTether, "https", "https/testdata/https.jwe"},
	}
	if len(bs) != len(want) {
		t.Fatalf("bindings %+v", bs)
	}
	for i, w := range want {
		b := bs[i]
		if b.Err != nil || b.Slot != w.slot || b.Token != w.token || b.Type != w.typ || b.Pin() != w.pin || b.JWE.Compact() != compactVector(t, w.jwe) {
			t.Errorf("binding %d: %+v (pin %s), want %+v", i, b, b.Pin(), w)
		}
	}
	files := []string{"txn-bind.json", "txn-regen.json", "txn-unbind.json"}
	for i, file := range files {
		tok, ok := h.Token(2 + i)
		if !ok || tok.Type != TypeTxn || len(tok.Keyslots) != 0 {
			t.Fatalf("token %d: %+v", 2+i, tok)
		}
		x, backupOK, err := parseTxn(tok.Raw, DefaultStateDir, h.UUID)
		if err != nil || !backupOK {
			t.Fatalf("%s as cryptsetup stored it: %+v, backup ok %v, %v", file, x, backupOK, err)
		}
		if w := vectorTxns[file]; x.Op != w.Op || x.Slot != w.Slot || x.OldSlot != w.OldSlot || x.OldToken != w.OldToken || x.Backup != w.Backup {
			t.Errorf("%s: %+v, want %+v", file, x, w)
		}
		// A backup outside the state directory, or of another volume, is
		// never deleted.
		if x.Backup != "" {
			if _, ok, _ := parseTxn(tok.Raw, "/tmp", h.UUID); ok {
				t.Errorf("%s: backup accepted for deletion from another state directory", file)
			}
			if _, ok, _ := parseTxn(tok.Raw, DefaultStateDir, "0b9f8a5e-7e0c-4a8c-9a4e-6d2b1c3e4f50"); ok {
				t.Errorf("%s: backup accepted for deletion for another volume", file)
			}
		}
	}
	if l := Leftovers(h); len(l) != 3 || l[1].What != "token 3: unfinished regen of keyslot 4" {
		t.Errorf("leftovers %+v", l)
	}
}
