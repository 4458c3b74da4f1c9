package managed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/jose"
	tangproto "github.com/tether-nbde/tether/tang"
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
	// The vector made by José (testdata/gen.sh).
	if vb, err := os.ReadFile("testdata/managed.jwe"); err != nil {
		f.Fatal(err)
	} else {
		f.Add(strings.TrimSpace(string(vb)))
	}
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

// replyTransport answers every request with one status and body, as a
// hostile or broken server would, and stops answering after a few
// requests (Rec asks again while the server says to wait).
type replyTransport struct {
	status int
	body   []byte
	calls  int
}

func (rt *replyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if rt.calls++; rt.calls > 3 {
		return nil, errors.New("no more answers")
	}
	return &http.Response{StatusCode: rt.status, Body: io.NopCloser(bytes.NewReader(rt.body)), Header: http.Header{}, Request: req}, nil
}

// FuzzClientReply feeds the managed client what a server may answer to
// /v1/rec and /v1/device — the reply JSON, errors, approvals — and the
// unblinding what it accepts. Nothing may panic; an accepted y is a key,
// and one the unblinding takes is a point on the curve.
func FuzzClientReply(f *testing.F) {
	c := jose.P256
	S, err := c.GenerateKey("ECMR", "deriveKey")
	if err != nil {
		f.Fatal(err)
	}
	epk, _, err := tangproto.Bind(S.Public())
	if err != nil {
		f.Fatal(err)
	}
	r, _ := tangproto.NewRecovery(epk, S.Public())
	y, err := tangproto.Exchange(S, r.Request)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(200, mustJSON(map[string]any{"y": y}))
	f.Add(202, []byte(`{"approval":"ap-1","deadline":"2026-12-03T15:00:00Z"}`))
	f.Add(410, []byte(`{"error":"device D was revoked"}`))
	f.Add(403, []byte("not json"))
	f.Add(200, mustJSON(DeviceInfo{Device: "dev-1", Name: "pi", State: "enabled", Key: S.Public()}))
	f.Add(200, []byte(`{"y":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}}`))
	f.Add(200, []byte(`{"state":"approved","policy":"00","key":"AA","sig":"MEUCIQ"}`))
	f.Add(202, []byte(`{"state":"pending","policy":"00","reason":"wait"}`))
	f.Add(200, []byte(`{"key":"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		cl := &Client{Base: "https://manager.test", http: &http.Client{Transport: &replyTransport{status: status, body: body}}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if y, err := cl.Rec(ctx, "kid", r.Request, nil); err == nil {
			if y == nil {
				t.Fatal("Rec accepted a reply without a key")
			}
			rec, _ := tangproto.NewRecovery(epk, S.Public())
			if _, err := rec.Finish(y); err == nil {
				if _, err := c.Point(y); err != nil {
					t.Fatalf("unblinded a reply off the curve: %s", body)
				}
			}
		}
		cl.http.Transport = &replyTransport{status: status, body: body}
		_, _ = cl.Device(ctx)
		// /v1/pcr-key and /v1/pcr-sign: a key taken is not empty; a
		// signature taken was answered 200 and carries one.
		cl.http.Transport = &replyTransport{status: status, body: body}
		if k, err := cl.PCRKey(ctx); err == nil && len(k) == 0 {
			t.Fatal("PCRKey took an empty key")
		}
		cl.http.Transport = &replyTransport{status: status, body: body}
		if sig, err := cl.SignPCRs(ctx, "sha256", []int{16}, [][]byte{make([]byte, 32)}); err == nil && (sig.Sig == "" || status != 200) {
			t.Fatalf("SignPCRs took status %d, body %s", status, body)
		}
	})
}
