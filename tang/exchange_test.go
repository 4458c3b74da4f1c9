package tang_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

// TestExchange runs the whole McCallum-Relyea exchange: the client's bound
// Z must equal what it recovers with the server's help, on every curve.
func TestExchange(t *testing.T) {
	t.Parallel()
	for _, c := range []*jose.Curve{jose.P256, jose.P384, jose.P521} {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			S, err := c.GenerateKey("ECMR", "deriveKey")
			if err != nil {
				t.Fatal(err)
			}
			s := S.Public()
			epk, z, err := tang.Bind(s)
			if err != nil {
				t.Fatal(err)
			}
			if len(z) != c.Size || epk.D != "" || epk.Crv != c.Name {
				t.Fatalf("Bind: Z %d bytes, epk %+v", len(z), epk)
			}
			seen := map[string]bool{}
			for i := 0; i < 3; i++ {
				r, err := tang.NewRecovery(epk, s)
				if err != nil {
					t.Fatal(err)
				}
				// Each request is freshly blinded: never epk itself, never repeated.
				if r.Request.X == epk.X || seen[r.Request.X] {
					t.Fatal("recovery request is not blinded")
				}
				seen[r.Request.X] = true
				if r.Request.Alg != "ECMR" {
					t.Errorf("request alg %q", r.Request.Alg)
				}
				y, err := tang.Exchange(S, r.Request)
				if err != nil {
					t.Fatal(err)
				}
				got, err := r.Finish(y)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, z) {
					t.Fatal("recovered Z differs from bound Z")
				}
				// The same through the /rec body handler.
				body := []byte(mustJSON(r.Request))
				reply, code := tang.Recover(S, body)
				if code != http.StatusOK {
					t.Fatalf("Recover: %d", code)
				}
				y2, err := jose.ParseJWK(reply)
				if err != nil {
					t.Fatal(err)
				}
				if y2.Alg != "ECMR" || !y2.HasOp("deriveKey") || y2.D != "" {
					t.Errorf("reply %s", reply)
				}
				if got, err := r.Finish(y2); err != nil || !bytes.Equal(got, z) {
					t.Fatalf("Recover reply gives another Z: %v", err)
				}
			}
			// Another server key recovers something else.
			S2, _ := c.GenerateKey("ECMR", "deriveKey")
			r, _ := tang.NewRecovery(epk, s)
			y, _ := tang.Exchange(S2, r.Request)
			if got, err := r.Finish(y); err == nil && bytes.Equal(got, z) {
				t.Fatal("a different server key recovered the same Z")
			}
		})
	}
}

func TestExchangeRejects(t *testing.T) {
	t.Parallel()
	S, _ := jose.P256.GenerateKey("ECMR", "deriveKey")
	s := S.Public()
	epk, _, err := tang.Bind(s)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := tang.NewRecovery(epk, s)
	other, _ := jose.P384.GenerateKey("ECMR")
	for name, x := range map[string]*jose.JWK{
		"off curve":   offCurve(S),
		"other curve": other.Public(),
		"oct":         {Kty: "oct", K: "AAAA"},
	} {
		if _, err := tang.Exchange(S, x); err == nil {
			t.Errorf("Exchange accepted %s point", name)
		}
		if _, err := r.Finish(x); err == nil {
			t.Errorf("Finish accepted %s reply", name)
		}
		if _, err := tang.NewRecovery(x, s); err == nil {
			t.Errorf("NewRecovery accepted %s epk", name)
		}
		if _, _, err := tang.Bind(x); err == nil && x.Crv == s.Crv {
			t.Errorf("Bind accepted %s server key", name)
		}
	}
	// A reply that cancels the blinding (y = E·s) gives the identity.
	if _, _, err := tang.Bind(offCurve(S)); err == nil {
		t.Error("Bind accepted an off-curve server key")
	}
}
