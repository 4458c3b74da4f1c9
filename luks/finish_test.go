package luks

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestFinishedEncryptionJSON: the metadata of a run killed in cryptsetup's
// final step becomes what cryptsetup writes at the end of an encryption;
// one killed while data was left to encrypt is refused.
func TestFinishedEncryptionJSON(t *testing.T) {
	final, err := os.ReadFile("testdata/encrypt-final-step.json")
	if err != nil {
		t.Fatal(err)
	}
	out, err := finishedEncryptionJSON(&Header{JSON: final})
	if err != nil {
		t.Fatal(err)
	}
	var m Metadata
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Keyslots) != 1 || m.Keyslots["0"].Type != "luks2" {
		t.Errorf("keyslots %+v", m.Keyslots)
	}
	if s := m.Segments["0"]; len(m.Segments) != 1 || s.Type != "crypt" || s.Size != "dynamic" || s.Offset != 16<<20 || len(s.Flags) != 0 {
		t.Errorf("segments %+v", m.Segments)
	}
	if d := m.Digests["0"]; len(m.Digests) != 1 || strings.Join(d.Keyslots, ",") != "0" || strings.Join(d.Segments, ",") != "0" {
		t.Errorf("digests %+v", m.Digests)
	}
	if len(m.Config.Requirements.Mandatory) != 0 || m.Config.JSONSize != 12288 {
		t.Errorf("config %+v", m.Config)
	}
	// The digest's value and the keyslot are carried over untouched.
	var in, got map[string]map[string]json.RawMessage
	json.Unmarshal(final, &in)
	json.Unmarshal(out, &got)
	if string(compact(in["keyslots"]["0"])) != string(compact(got["keyslots"]["0"])) {
		t.Error("keyslot 0 changed")
	}

	initOnly, err := os.ReadFile("testdata/encrypt-init-only.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := finishedEncryptionJSON(&Header{JSON: initOnly}); err == nil {
		t.Error("an encryption with data left to encrypt was taken as finished")
	}
	if _, err := finishedEncryptionJSON(&Header{JSON: out}); err == nil {
		t.Error("a finished header was taken as unfinished")
	}
}

func compact(b []byte) []byte {
	var v any
	json.Unmarshal(b, &v)
	out, _ := json.Marshal(v)
	return out
}

// FuzzFinishedEncryptionJSON: the metadata comes from the device. Never a
// panic; whatever is accepted becomes a header with one data segment, no
// reencryption keyslot and no reencryption requirement.
func FuzzFinishedEncryptionJSON(f *testing.F) {
	for _, p := range []string{"testdata/encrypt-final-step.json", "testdata/encrypt-init-only.json"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	if h, err := ReadHeaderFile("testdata/luks2-header.bin"); err == nil {
		f.Add(h.JSON)
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		out, err := finishedEncryptionJSON(&Header{JSON: js})
		if err != nil {
			return
		}
		var m struct {
			Keyslots map[string]struct {
				Type string `json:"type"`
			} `json:"keyslots"`
			Segments map[string]any `json:"segments"`
			Config   struct {
				Requirements struct {
					Mandatory []any `json:"mandatory"`
				} `json:"requirements"`
			} `json:"config"`
		}
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("output does not parse: %v\n%s", err, out)
		}
		if len(m.Segments) != 1 || m.Segments["0"] == nil {
			t.Fatalf("segments %v", m.Segments)
		}
		for id, k := range m.Keyslots {
			if k.Type == "reencrypt" {
				t.Fatalf("reencryption keyslot %s kept", id)
			}
		}
		for _, r := range m.Config.Requirements.Mandatory {
			if s, _ := r.(string); strings.HasPrefix(s, "online-reencrypt") {
				t.Fatalf("requirement %v kept", r)
			}
		}
	})
}
