package jose

import (
	"encoding/json"
	"testing"
)

// The bodies clevis and tether send to /rec: both must take the fast path,
// or UnmarshalJWK saves nothing where it matters.
var recBodies = []string{
	`{"alg":"ECMR","crv":"P-521","key_ops":["deriveKey"],"kty":"EC","x":"AQBeZHS4Vv8Tx2hhkyvRxu2SNVKWyrFcVxC9aVq5t9Ir5hkFnjVsXq2rOTLdyIGH2OO6AvsrDqt2jHK07qbaG_uX","y":"AQuzqmh4gmKUhrBKc_ubf_fSjL9EjnN7bpeKeZAV4LV86gbN7JyLWwI5Ps9Z3ZDoyKFBZRDPvm-1b3ptuCuixXxQ"}`,
	`{"alg":"ECMR","crv":"P-256","kty":"EC","x":"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0","y":"SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps"}`,
	" {\n  \"kty\": \"EC\",\n  \"crv\": \"P-256\"\n}\n",
	`{}`,
}

func TestUnmarshalJWKFastPath(t *testing.T) {
	for _, s := range recBodies {
		var fast, std JWK
		if !parseJWKFast([]byte(s), &fast) {
			t.Errorf("%s: not on the fast path", s)
		}
		if err := json.Unmarshal([]byte(s), &std); err != nil {
			t.Fatal(err)
		}
		if fast.Kty != std.Kty || fast.X != std.X || fast.Y != std.Y || fast.Crv != std.Crv || fast.Alg != std.Alg || len(fast.KeyOps) != len(std.KeyOps) {
			t.Errorf("%s: fast path gives %+v, encoding/json %+v", s, fast, std)
		}
	}
	for _, s := range []string{`{"kty":"E\u0043"}`, `{"kty":"EC","use":"enc"}`, `{"Kty":"EC"}`, `{"kty":"EC","kty":"EC"}`, `{"kty":null}`, `{"kty":"EC"}}`} {
		var k JWK
		if parseJWKFast([]byte(s), &k) {
			t.Errorf("%s: took the fast path, which must leave it to encoding/json", s)
		}
	}
}

func BenchmarkUnmarshalJWK(b *testing.B) {
	body := []byte(recBodies[0])
	b.Run("fast", func(b *testing.B) {
		for range b.N {
			var k JWK
			if err := UnmarshalJWK(body, &k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for range b.N {
			var k JWK
			if err := json.Unmarshal(body, &k); err != nil {
				b.Fatal(err)
			}
		}
	})
}
