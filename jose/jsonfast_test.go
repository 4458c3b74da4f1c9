package jose

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The fuzz tests below hold each fast path to encoding/json: on any input,
// both must agree on whether it decodes and on the result.

// headerSeeds are protected headers of real JWEs (testdata/*.jwe, from
// clevis and tether) and edge cases for the fast path's fallbacks.
func headerSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.jwe")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		if hb, err := B64.DecodeString(strings.SplitN(strings.TrimSpace(string(data)), ".", 2)[0]); err == nil {
			f.Add(hb)
		}
	}
	for _, s := range []string{
		`{"alg":"ECDH-ES","clevis":{"pin":"tang","tang":{"url":"http://a"}},"enc":"A256GCM","epk":{"kty":"EC","crv":"P-521","x":"AB","y":"CD"},"kid":"k"}`,
		`{"alg":"dir","clevis":{"pin":"sss","sss":{"t":1,"p":"AA","jwe":["a.b.c.d.e"]}},"enc":"A256GCM"}`,
		` { "alg" : "dir" , "clevis" : null , "enc" : "A256GCM" } `, `{"clevis":[1,{"a":"}"},"\"]"]}`,
		`{"ALG":"dir"}`, `{"alg":"dir","alg":"x"}`, `{"alg":"d\u0069r"}`, `{"alg":null}`, `{"epk":null}`,
		`{"epk":{"kty":"EC","use":"enc"}}`, `{"other":{"x":[true,false,null,-1.5e3]},"kid":"k"}`,
		`{"kid":"k"} x`, `{"kid":"k",}`, `{"kid":1}`, `{"kid":"\xff"}`, `[]`, `null`, ``, `{`, `{"a":tru}`,
		`{"pin":"tang"}`, `{"pin":"tang","PIN":"sss"}`, `{"Pin":"tang"}`, `{"pin":"tang","pin":"sss"}`,
		`{"keys":[]}`, `{"keys":null}`, `{"keys":[null]}`, `{"keys":[{"kty":"EC"},{"kty":"EC","crv":"P-256"}]}`,
		`{"keys":[{"kty":"EC"}],"keys":[]}`, `{"kEys":[]}`, `{"keys":[{"kty":"EC"} ,{"kty":"oct"} ]}`,
	} {
		f.Add([]byte(s))
	}
}

func FuzzParseHeader(f *testing.F) {
	headerSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var want Header
		werr := json.Unmarshal(data, &want)
		got, gerr := parseHeader(data)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: encoding/json says %v, parseHeader %v", data, werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(want, got) {
			t.Fatalf("%q: encoding/json gives %#v, parseHeader %#v", data, want, got)
		}
	})
}

// FuzzPin compares Header.Pin with what it was before its fast path: the
// pin member as encoding/json decodes it, empty or invalid being an error.
func FuzzPin(f *testing.F) {
	headerSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c ClevisHeader
		want := ""
		if json.Unmarshal(data, &c) == nil {
			want = c.Pin
		}
		h := Header{Clevis: data}
		got, err := h.Pin()
		if (err == nil) != (want != "") || got != want {
			t.Fatalf("%q: Pin() = %q, %v; encoding/json gives %q", data, got, err, want)
		}
	})
}

func FuzzDecodeKeySet(f *testing.F) {
	headerSeeds(f)
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var want KeySet
		werr := json.Unmarshal(data, &want)
		got, ok := DecodeKeySet(data)
		if ok && werr != nil {
			t.Fatalf("%q: DecodeKeySet accepts what encoding/json rejects: %v", data, werr)
		}
		if ok && !reflect.DeepEqual(&want, got) {
			t.Fatalf("%q: encoding/json gives %#v, DecodeKeySet %#v", data, want, got)
		}
	})
}

// seeds adds the advertisement payloads of testdata.
func seeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/adv-payload*.json")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
}
