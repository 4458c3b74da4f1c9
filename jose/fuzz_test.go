package jose_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/tether-nbde/tether/jose"
)

// seeds adds every testdata file matching the patterns to the corpus.
func seeds(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		files, _ := filepath.Glob(filepath.Join("testdata", p))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

func FuzzParseJWK(f *testing.F) {
	seeds(f, "*.jwk")
	f.Add([]byte(`{"kty":"oct","k":"AAEC"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := jose.ParseJWK(data)
		if err != nil {
			return
		}
		// A valid key survives a marshal round trip and has thumbprints.
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := jose.ParseJWK(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		// "key_ops":[] and no key_ops marshal alike (omitempty).
		if len(k.KeyOps) == 0 {
			k.KeyOps = nil
		}
		if !reflect.DeepEqual(k, k2) {
			t.Fatalf("round trip changed the key: %+v != %+v", k, k2)
		}
		if k.Kty == "EC" {
			if len(k.Thumbprints()) != len(jose.ThumbprintAlgs) {
				t.Fatal("EC key without thumbprints")
			}
			c, err := jose.CurveByName(k.Crv)
			if err != nil {
				t.Fatal("valid EC key on an unknown curve")
			}
			c.Point(k) // may fail (off curve), must not panic
			if k.D != "" {
				c.Scalar(k)
			}
		}
	})
}

// FuzzUnmarshalJWK holds UnmarshalJWK's fast path to encoding/json: for any
// input, into an empty JWK and into one with members set, both must give
// the same JWK and agree on whether the input is valid.
func FuzzUnmarshalJWK(f *testing.F) {
	seeds(f, "*.jwk", "*.json")
	for _, s := range []string{
		`{"alg":"ECMR","crv":"P-521","key_ops":["deriveKey"],"kty":"EC","x":"AB","y":"CD"}`,
		`{"kty":"EC","crv":"P-256","x":"a-_b","y":"c","alg":"ECMR"}`,
		` { "kty" : "EC" , "key_ops" : [ ] } `, `{}`, `{"key_ops":[]}`, `{"key_ops":null}`,
		`{"kty":"EC","kty":"oct"}`, `{"KTY":"EC"}`, `{"kty":"E\u0043"}`, `{"kty":"EC","use":"enc"}`,
		`{"kty":"EC"} x`, `{"kty":"EC",}`, `{"kty":1}`, `{"x":"\xff"}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, start := range []jose.JWK{{}, {Alg: "A", Kty: "oct", KeyOps: []string{"sign"}, X: "old"}} {
			want, got := start, start
			want.KeyOps = slices.Clone(start.KeyOps)
			got.KeyOps = slices.Clone(start.KeyOps)
			werr := json.Unmarshal(data, &want)
			gerr := jose.UnmarshalJWK(data, &got)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("%q: encoding/json says %v, UnmarshalJWK %v", data, werr, gerr)
			}
			if werr == nil && !reflect.DeepEqual(want, got) {
				t.Fatalf("%q: encoding/json gives %#v, UnmarshalJWK %#v", data, want, got)
			}
		}
	})
}

func FuzzParseKeySet(f *testing.F) {
	seeds(f, "adv-payload*.json")
	f.Add([]byte(`{"keys":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, err := jose.ParseKeySet(data)
		if err != nil {
			return
		}
		for _, k := range ks.Keys {
			if k == nil || k.Validate() != nil {
				t.Fatal("ParseKeySet returned an invalid key")
			}
		}
		ks.WithOp("verify")
	})
}

func FuzzParseJWS(f *testing.F) {
	seeds(f, "adv-*.jws")
	keys := []*jose.JWK{}
	for _, n := range []string{"adv-sig1.jwk", "adv-sig2.jwk", "key-ES256.jwk"} {
		b, _ := os.ReadFile(filepath.Join("testdata", n))
		k, err := jose.ParseJWK(b)
		if err != nil {
			f.Fatal(err)
		}
		keys = append(keys, k.Public())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := jose.ParseJWS(data)
		if err != nil {
			return
		}
		if len(j.Signatures) == 0 {
			t.Fatal("parsed JWS without signatures")
		}
		for _, k := range keys {
			j.VerifiedBy(k)
		}
	})
}

// FuzzParseCompact checks parse → Compact → parse is the identity, and
// that Flattened round-trips the same way.
func FuzzParseCompact(f *testing.F) {
	seeds(f, "*.jwe")
	for _, p := range []string{"../pin/tang/testdata/*.jwe"} {
		files, _ := filepath.Glob(p)
		for _, file := range files {
			b, _ := os.ReadFile(file)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := jose.ParseCompact(string(data))
		if err != nil {
			return
		}
		j2, err := jose.ParseCompact(j.Compact())
		if err != nil {
			t.Fatalf("re-parse of Compact(): %v", err)
		}
		if !reflect.DeepEqual(j, j2) {
			t.Fatalf("compact round trip differs:\n%+v\n%+v", j, j2)
		}
		j3, err := jose.ParseFlattened(j.Flattened())
		if err != nil {
			t.Fatalf("parse of Flattened(): %v", err)
		}
		if !reflect.DeepEqual(j, j3) {
			t.Fatalf("flattened round trip differs:\n%+v\n%+v", j, j3)
		}
		j.Decrypt(make([]byte, 32))
	})
}

func FuzzParseFlattened(f *testing.F) {
	for _, n := range []string{"ecdh-es-P-256.jwe", "ecdh-es-P-521.jwe"} {
		b, _ := os.ReadFile(filepath.Join("testdata", n))
		j, err := jose.ParseCompact(string(b))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(j.Flattened())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := jose.ParseFlattened(data)
		if err != nil {
			return
		}
		fl := j.Flattened()
		j2, err := jose.ParseFlattened(fl)
		if err != nil {
			t.Fatalf("re-parse of Flattened(): %v", err)
		}
		if !reflect.DeepEqual(j, j2) || !bytes.Equal(fl, j2.Flattened()) {
			t.Fatalf("flattened round trip differs:\n%+v\n%+v", j, j2)
		}
		j3, err := jose.ParseCompact(j.Compact())
		if err != nil || !reflect.DeepEqual(j, j3) {
			t.Fatalf("compact of a flattened JWE: %v", err)
		}
	})
}
