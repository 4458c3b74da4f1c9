package tang

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tether-nbde/tether/jose"
)

// benchServer returns a server on fresh keys of curve c, the URL path of
// its /rec endpoint and a valid request body.
func benchServer(b *testing.B, c *jose.Curve) (*Server, string, []byte) {
	dir := b.TempDir()
	keys, err := GenerateKeys(dir, c)
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Dir: dir}
	if err := s.Load(); err != nil {
		b.Fatal(err)
	}
	var kid string
	for _, k := range keys {
		if k.Exchange() {
			kid, _ = k.JWK.Thumbprint("S256")
		}
	}
	_, p, _ := c.RandomScalar()
	x := c.JWKFromPoint(p)
	x.Alg = "ECMR"
	body, _ := json.Marshal(x)
	return s, "/rec/" + kid, body
}

// BenchmarkRec measures the whole handler for one /rec, without the network;
// compare with BenchmarkScalarMult for the cost above the raw crypto.
func BenchmarkRec(b *testing.B) {
	for _, c := range []*jose.Curve{jose.P256, jose.P521} {
		b.Run(c.Name, func(b *testing.B) {
			s, path, body := benchServer(b, c)
			b.ResetTimer()
			for range b.N {
				w := httptest.NewRecorder()
				s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
				if w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
	}
}

func BenchmarkScalarMult(b *testing.B) {
	for _, c := range []*jose.Curve{jose.P256, jose.P521} {
		b.Run(c.Name, func(b *testing.B) {
			d, p, _ := c.RandomScalar()
			b.ResetTimer()
			for range b.N {
				if _, err := c.ScalarMult(p, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRecReplyLayout checks the hand-written reply against encoding/json.
func TestRecReplyLayout(t *testing.T) {
	for _, c := range []*jose.Curve{jose.P256, jose.P384, jose.P521} {
		_, p, _ := c.RandomScalar()
		want := c.JWKFromPoint(p)
		want.Alg, want.KeyOps = "ECMR", []string{"deriveKey"}
		wb, _ := json.Marshal(want)
		if got := recReply(c, p); string(got) != string(wb) {
			t.Fatalf("%s:\n got %s\nwant %s", c.Name, got, wb)
		}
	}
}
