package boot_test

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/luks"
)

// jwe is a compact JWE with the given clevis header node; only the header
// matters to NeedsNetwork.
func jwe(t *testing.T, clevis any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]any{"alg": "dir", "enc": "A256GCM", "clevis": clevis})
	b := base64.RawURLEncoding
	return b.EncodeToString(h) + ".." + b.EncodeToString(make([]byte, 12)) + "." + b.EncodeToString([]byte("x")) + "." + b.EncodeToString(make([]byte, 16))
}

func TestNeedsNetwork(t *testing.T) {
	tpm := map[string]any{"pin": "tpm2", "tpm2": map[string]any{}}
	tang := map[string]any{"pin": "tang", "tang": map[string]any{"url": "http://k"}}
	sss := func(children ...any) map[string]any {
		var js []string
		for _, c := range children {
			js = append(js, jwe(t, c))
		}
		return map[string]any{"pin": "sss", "sss": map[string]any{"t": 1, "p": "AQ", "jwe": js}}
	}
	for _, c := range []struct {
		name string
		pins []any
		want bool
	}{
		{"tpm2 only", []any{tpm}, false},
		{"tang", []any{tang}, true},
		{"sss of tpm2s", []any{sss(tpm, tpm)}, false},
		{"sss with tang deep inside", []any{sss(tpm, sss(tpm, tang))}, true},
		{"tpm2 binding and a tang binding", []any{tpm, tang}, true},
		{"a pin tether does not know", []any{map[string]any{"pin": "yubikey"}}, true},
		{"managed", []any{map[string]any{"pin": "managed"}}, true},
	} {
		var bs []luks.Binding
		for _, p := range c.pins {
			j, err := jose.ParseCompact(jwe(t, p))
			if err != nil {
				t.Fatal(err)
			}
			bs = append(bs, luks.Binding{JWE: j})
		}
		if got := boot.NeedsNetwork(bs); got != c.want {
			t.Errorf("%s: NeedsNetwork = %v, want %v", c.name, got, c.want)
		}
	}
}
