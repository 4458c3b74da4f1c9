package managed

import (
	"encoding/json"
	"testing"

	"github.com/tether-nbde/tether/jose"
)

// FuzzParseHeader feeds the managed pin's JWE header parser what a
// tampered disk header could hold. It must never panic, and what it
// accepts names a server, a device and an exchange key matching the kid.
func FuzzParseHeader(f *testing.F) {
	c := jose.P256
	_, p, _ := c.RandomScalar()
	key := c.JWKFromPoint(p)
	kid, _ := key.Thumbprint("S256")
	_, e, _ := c.RandomScalar()
	ch := []byte(`{"pin":"managed","managed":{"url":"https://127.0.0.1:7501","pin":"abc","device":"dev-1","key":` +
		string(mustJSON(key)) + `}}`)
	j, err := jose.Encrypt(jose.Header{Alg: "ECDH-ES", Clevis: ch, Epk: c.JWKFromPoint(e), Kid: kid}, make([]byte, 32), []byte("x"))
	if err != nil {
		f.Fatal(err)
	}
	if pj, err := jose.ParseCompact(j.Compact()); err != nil {
		f.Fatal(err)
	} else if _, err := parse(pj); err != nil {
		f.Fatalf("the seed does not parse: %v", err)
	}
	f.Add(j.Compact())
	f.Add("e30..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		j, err := jose.ParseCompact(s)
		if err != nil {
			return
		}
		h, err := parse(j)
		if err != nil {
			return
		}
		if h.URL == "" || h.Device == "" || h.Key == nil || !h.Key.MatchesThumbprint(j.Header.Kid) {
			t.Fatalf("accepted an incomplete header: %+v", h)
		}
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
