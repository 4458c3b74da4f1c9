package jose

import (
	"encoding/json"
	"testing"
)

// FuzzQuote holds quote's shortcut to json.Marshal's output, which the
// thumbprints of existing keys were computed with.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "P-521", "AbC-_09", `a"b`, `a\b`, "<&>", "\x00\x1f", "é", "\x7f", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := quote(s); got != string(want) {
			t.Fatalf("quote(%q) = %s, json.Marshal gives %s", s, got, want)
		}
	})
}
