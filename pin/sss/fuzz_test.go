package sss

import (
	"context"
	"encoding/json"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// sharePin is a child pin for fuzzing only: its "JWE" carries the share
// in the clear, so that the fuzzer's changes to a child reach the share
// combination as they are, as a hostile header's children would after
// their pins decrypted them.
type sharePin struct{}

var (
	sharesMu sync.Mutex
	shares   [][]byte // what Encrypt was given, for the seed's key
)

func (sharePin) Encrypt(_ context.Context, _ json.RawMessage, secret []byte, _ pin.Options) (*jose.JWE, error) {
	sharesMu.Lock()
	shares = append(shares, append([]byte(nil), secret...))
	sharesMu.Unlock()
	h := jose.Header{Alg: "dir", Enc: "A256GCM", Clevis: json.RawMessage(`{"pin":"sss-fuzz-share"}`)}
	b, _ := json.Marshal(map[string]any{"alg": "dir", "enc": "A256GCM", "clevis": h.Clevis})
	return &jose.JWE{Protected: jose.B64.EncodeToString(b), Header: h, IV: make([]byte, 12), Ciphertext: append([]byte(nil), secret...), Tag: make([]byte, 16)}, nil
}

func (sharePin) Decrypt(_ context.Context, j *jose.JWE, _ pin.Options) ([]byte, error) {
	return append([]byte(nil), j.Ciphertext...), nil
}

func init() { pin.Register("sss-fuzz-share", sharePin{}) }

// seedHeader makes a real sss header over sharePin children and returns
// its clevis member and the key its shares give.
func seedHeader(t testing.TB, threshold, n int) (string, []byte) {
	sharesMu.Lock()
	shares = nil
	sharesMu.Unlock()
	kids := make([]string, n)
	for i := range kids {
		kids[i] = "{}"
	}
	cfg := `{"t":` + itoa(threshold) + `,"pins":{"sss-fuzz-share":[` + strings.Join(kids, ",") + `]}}`
	j, err := Pin{}.Encrypt(context.Background(), json.RawMessage(cfg), []byte("sss fuzz secret"), pin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, p, err := parse(j)
	if err != nil {
		t.Fatal(err)
	}
	var xs, ys []*big.Int
	for _, s := range shares[:threshold] {
		xs, ys = append(xs, new(big.Int).SetBytes(s[:pointSize])), append(ys, new(big.Int).SetBytes(s[pointSize:]))
	}
	return string(j.Header.Clevis), interpolate(xs, ys, p, new(big.Int)).FillBytes(make([]byte, pointSize))
}

func itoa(i int) string { return big.NewInt(int64(i)).String() }

// FuzzHeader feeds hostile clevis.sss members — threshold, prime,
// children, the shares inside them — to Describe, ConfigOf, TangKeys and
// Decrypt. Nothing may panic, and whatever the shares, Decrypt yields the
// secret or an error: never other bytes.
func FuzzHeader(f *testing.F) {
	clevis, key := seedHeader(f, 2, 3)
	f.Add(clevis)
	f.Add(strings.Replace(clevis, `"t":2`, `"t":3`, 1))
	f.Add(strings.Replace(clevis, `"t":2`, `"t":0`, 1))
	f.Add(`{"pin":"sss","sss":{"p":"Aw","t":1,"jwe":["a.b.c.d.e"]}}`)
	// The unmodified seed must decrypt, or the target checks nothing.
	j, _ := jose.Encrypt(jose.Header{Alg: "dir", Clevis: json.RawMessage(clevis)}, key, []byte("sss fuzz secret"))
	j, _ = jose.ParseCompact(j.Compact())
	if got, err := (Pin{}).Decrypt(context.Background(), j, pin.Options{}); err != nil || string(got) != "sss fuzz secret" {
		f.Fatalf("seed: %q %v", got, err)
	}
	f.Fuzz(func(t *testing.T, clevis string) {
		if !json.Valid([]byte(clevis)) {
			return
		}
		j, err := jose.Encrypt(jose.Header{Alg: "dir", Clevis: json.RawMessage(clevis)}, key, []byte("sss fuzz secret"))
		if err != nil {
			return
		}
		if j, err = jose.ParseCompact(j.Compact()); err != nil {
			return
		}
		_ = (Pin{}).Describe(j)
		if cfg, err := (Pin{}).ConfigOf(j); err == nil && !json.Valid(cfg) {
			t.Fatalf("ConfigOf wrote %q", cfg)
		}
		_ = (Pin{}).TangKeys(j)
		got, err := (Pin{}).Decrypt(context.Background(), j, pin.Options{})
		if err == nil && string(got) != "sss fuzz secret" {
			t.Fatalf("decrypted to %q", got)
		}
	})
}

// FuzzConfig feeds hostile configurations to the parser Encrypt uses:
// every child it finds is one of "pins", with JSON of its own.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{
		`{"t":2,"pins":{"tang":[{"url":"http://a"},{"url":"http://b"}],"tpm2":{}}}`,
		`{"t":1,"pins":{"sss":{"t":1,"pins":{"tang":[{"url":"http://a"}]}}}}`,
		`{"t":1,"pins":{"tang":"x"}}`, `{"t":1,"pins":{"tang":[1,null]}}`, `{"pins":{}}`, `[]`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var cfg Config
		if json.Unmarshal([]byte(raw), &cfg) != nil {
			return
		}
		kids, err := cfg.children()
		if err != nil {
			return
		}
		for _, c := range kids {
			if _, ok := cfg.Pins[c.name]; !ok || !json.Valid(c.cfg) {
				t.Fatalf("child %q with configuration %q", c.name, c.cfg)
			}
		}
	})
}
