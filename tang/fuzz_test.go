package tang_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

// fuzzKey is a fixed P-256 exchange key: cheap enough to fuzz with.
const fuzzKey = `{"alg":"ECMR","crv":"P-256","d":"-uIxhsHmWCVt-OjnHWQdxxk6qhcXViGMtA-qV9Zcmh4","key_ops":["deriveKey"],"kty":"EC",` +
	`"x":"ZB6fjAbWBdvqOaj0Oilgk7KvVpTvdktgISPaNHLvSno","y":"imYr0-q9pkJyNChUvFjG-ik1GFZPOby1WspipAQOFTM"}`

// FuzzRecover feeds arbitrary /rec bodies to the server's exchange: it must
// never panic, must answer 200, 400 or 403, and a 200 must be a valid point
// on the key's curve.
func FuzzRecover(f *testing.F) {
	S, err := jose.ParseJWK([]byte(fuzzKey))
	if err != nil {
		f.Fatal(err)
	}
	c, _ := jose.CurveByName(S.Crv)
	for i := 0; i < 3; i++ {
		epk, _, err := tang.Bind(S.Public())
		if err != nil {
			f.Fatal(err)
		}
		r, _ := tang.NewRecovery(epk, S.Public())
		b, _ := json.Marshal(r.Request)
		f.Add(b)
	}
	f.Add([]byte(`{"alg":"ECMR","crv":"P-256","kty":"EC","x":"","y":""}`))
	f.Add([]byte(mustJSON(offCurve(S))))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","key_ops":["sign"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		reply, code := tang.Recover(S, body)
		switch code {
		case http.StatusOK:
			y, err := jose.ParseJWK(reply)
			if err != nil {
				t.Fatalf("200 with an invalid JWK: %v", err)
			}
			if _, err := c.Point(y); err != nil {
				t.Fatalf("200 with a point not on the curve: %v", err)
			}
			if y.D != "" {
				t.Fatal("reply contains a private scalar")
			}
		case http.StatusBadRequest, http.StatusForbidden:
			if reply != nil {
				t.Fatal("error with a body")
			}
		default:
			t.Fatalf("status %d", code)
		}
	})
}

// FuzzVerifyAdvertisement: arbitrary advertisements must never panic, and
// an accepted one must be signed by every verify key it lists.
func FuzzVerifyAdvertisement(f *testing.F) {
	for _, p := range []string{"../jose/testdata/adv-*.jws", "../pin/tang/testdata/adv*.jws"} {
		files, _ := filepath.Glob(p)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, ver, err := tang.VerifyAdvertisement(data)
		if err != nil {
			return
		}
		if len(ver) == 0 {
			t.Fatal("accepted an advertisement without verify keys")
		}
		jws, err := jose.ParseJWS(data)
		if err != nil {
			t.Fatal("accepted an advertisement that does not parse")
		}
		for _, k := range ks.WithOp("verify") {
			if !jws.VerifiedBy(k) {
				t.Fatal("accepted an advertisement with an unsigned verify key")
			}
		}
	})
}

// FuzzClientReply feeds the client's unblinding what a server (or anyone
// on the path: Tang is plain HTTP) may answer to /rec. It must never
// panic; a reply the client accepts is a point on the key's curve; and
// the true reply gives the key the binding made.
func FuzzClientReply(f *testing.F) {
	S, err := jose.ParseJWK([]byte(fuzzKey))
	if err != nil {
		f.Fatal(err)
	}
	c, _ := jose.CurveByName(S.Crv)
	epk, z, err := tang.Bind(S.Public())
	if err != nil {
		f.Fatal(err)
	}
	r, err := tang.NewRecovery(epk, S.Public())
	if err != nil {
		f.Fatal(err)
	}
	body, _ := json.Marshal(r.Request)
	good, code := tang.Recover(S, body)
	if code != http.StatusOK {
		f.Fatalf("seed reply: %d", code)
	}
	if got, err := r.Finish(mustParseJWK(f, good)); err != nil || string(got) != string(z) {
		f.Fatalf("the true reply does not give the bound key: %v", err)
	}
	f.Add(good)
	f.Add([]byte(mustJSON(offCurve(S))))
	f.Add([]byte(`{"alg":"ECMR","crv":"P-521","kty":"EC","x":"AA","y":"AA"}`))
	f.Add([]byte(mustJSON(S.Public()))) // the server's own public key
	f.Fuzz(func(t *testing.T, reply []byte) {
		var y jose.JWK
		if jose.UnmarshalJWK(reply, &y) != nil {
			return
		}
		r, err := tang.NewRecovery(epk, S.Public())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Finish(&y); err != nil {
			return
		}
		if _, err := c.Point(&y); err != nil {
			t.Fatalf("accepted a reply off the curve: %s", reply)
		}
	})
}

func mustParseJWK(t testing.TB, b []byte) *jose.JWK {
	k, err := jose.ParseJWK(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
