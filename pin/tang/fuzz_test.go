package tang

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// FuzzHeader feeds hostile clevis members, in a clevis-made JWE's place,
// to everything that reads the tang pin's header: decrypt's parse,
// Describe, ConfigOf (luks list, regen) and TangKeys (luks report).
// Nothing may panic, and they agree: a header decrypt accepts rebuilds
// into a configuration for the same server, and depends on that server's
// key the kid names. (Except where the member is named twice or in
// another case, which clevis never writes: decrypt then reads it as
// encoding/json does, list and report as the clevis tools do, by its exact
// name, each as before pins owned their formats.)
func FuzzHeader(f *testing.F) {
	data, err := os.ReadFile("testdata/new.jwe")
	if err != nil {
		f.Fatal(err)
	}
	vec, err := jose.ParseCompact(strings.TrimSpace(string(data)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(vec.Header.Clevis))
	for _, s := range []string{
		`{"pin":"tang","tang":{"url":"http://a","adv":{"keys":[{"kty":"EC","crv":"P-521","x":"A","y":"B","key_ops":["deriveKey"],"alg":"ECMR"}]}}}`,
		`{"pin":"tang","tang":null}`, `{"pin":"tang","tang":{"adv":null}}`, `{"tang":{"url":"a"},"tang":{"adv":{"keys":[]}}}`,
		`{"pin":"tang","tang":{"URL":"http://a"}}`, `{"pin":"tang","tang":{"url":"http://\u0061"}}`, `{"pin":"tang","tang":[]}`,
		`{"pin":"tang","tang":{"adv":{"keys":[{}]},"url":""},"x":1}`, `{"pin":"tang"`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, clevis []byte) {
		j := *vec
		j.Header.Clevis = clevis
		_ = Pin{}.Describe(&j)
		keys := Pin{}.TangKeys(&j)
		cfg, cerr := Pin{}.ConfigOf(&j)
		h, _, err := parse(&j)
		if err != nil || !oneMember(clevis) {
			return
		}
		if cerr != nil {
			t.Fatalf("%q: decrypt accepts the header, ConfigOf says %v", clevis, cerr)
		}
		var c Config
		if err := json.Unmarshal(cfg, &c); err != nil || c.URL != h.URL {
			t.Fatalf("%q: ConfigOf gives %s for server %q", clevis, cfg, h.URL)
		}
		if want := []pin.TangKey{{URL: h.URL, Kid: j.Header.Kid}}; !reflect.DeepEqual(keys, want) {
			t.Fatalf("%q: TangKeys = %v, want %v", clevis, keys, want)
		}
	})
}

// oneMember reports whether the clevis object has one member whose name
// is tang in any case, and that one is named exactly tang.
func oneMember(clevis []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(clevis, &m) != nil {
		return false
	}
	d := json.NewDecoder(bytes.NewReader(clevis))
	d.Token() // {
	n := 0
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return false
		}
		if name, _ := k.(string); strings.EqualFold(name, "tang") {
			if n++; name != "tang" {
				return false
			}
		}
		var v json.RawMessage
		if d.Decode(&v) != nil {
			return false
		}
	}
	return n == 1
}
