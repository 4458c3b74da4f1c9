package tang

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/tether-nbde/tether/jose"
)

// FuzzParseClevis holds parseClevis's fast path to encoding/json.
func FuzzParseClevis(f *testing.F) {
	adv, err := os.ReadFile("testdata/adv.jws")
	if err != nil {
		f.Fatal(err)
	}
	jws, err := jose.ParseJWS(adv)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"pin":"tang","tang":{"adv":` + string(jws.Payload) + `,"url":"http://keys.lan:7500"}}`))
	for _, s := range []string{
		`{"pin":"tang","tang":{"url":"http://a","adv":{"keys":[{"kty":"EC","crv":"P-521","x":"A","y":"B","key_ops":["deriveKey"],"alg":"ECMR"}]}}}`,
		`{"pin":"tang","tang":null}`, `{"pin":"tang","tang":{"adv":null}}`, `{"tang":{"url":"a"},"tang":{"adv":{"keys":[]}}}`,
		`{"pin":"tang","tang":{"URL":"http://a"}}`, `{"pin":"tang","tang":{"url":"http://\u0061"}}`, `{"pin":"tang","tang":[]}`,
		`{"pin":"tang","tang":{"adv":{"keys":[{}]},"url":""},"x":1}`, `{"pin":"tang"`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want clevisHeader
		werr := json.Unmarshal(data, &want)
		got, gerr := parseClevis(data)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: encoding/json says %v, parseClevis %v", data, werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(want, got) {
			t.Fatalf("%q: encoding/json gives %#v, parseClevis %#v", data, want, got)
		}
	})
}
