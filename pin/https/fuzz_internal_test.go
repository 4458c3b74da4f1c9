package https

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// FuzzHeader feeds hostile clevis.https members to what Decrypt and
// Describe parse before anything is fetched: what is accepted is an
// https:// URL whose credentials and audience survive a rewrite.
func FuzzHeader(f *testing.F) {
	b, err := os.ReadFile("../tang/testdata/new.jwe")
	if err != nil {
		f.Fatal(err)
	}
	tangJWE := strings.TrimSpace(string(b))
	for _, s := range []string{
		`{"pin":"https","https":{"url":"https://keys.lan/k","pin_sha256":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","salt":"c2FsdA","cred":{"token":"t"}}}`,
		`{"pin":"https","https":{"url":"https://keys.lan/k","ca":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","salt":"c2FsdA","attempts":3,"cred_jwe":"` + tangJWE + `"}}`,
		`{"pin":"https","https":{"url":"http://keys.lan/k","salt":"c2FsdA"}}`,
		`{"pin":"https","https":{"url":"https://x","cred_jwe":"."}}`,
	} {
		f.Add(s)
	}
	// The vector's header (testdata/gen.sh, made by José).
	if vb, err := os.ReadFile("testdata/https.jwe"); err != nil {
		f.Fatal(err)
	} else if vj, err := jose.ParseCompact(strings.TrimSpace(string(vb))); err != nil {
		f.Fatal(err)
	} else {
		f.Add(string(vj.Header.Clevis))
	}
	f.Fuzz(func(t *testing.T, clevis string) {
		h, err := parseHeader(json.RawMessage(clevis))
		if err == nil {
			if !strings.HasPrefix(h.URL, "https://") {
				t.Fatalf("accepted URL %q", h.URL)
			}
			b, err := json.Marshal(clevisHeader{Pin: "https", HTTPS: *h})
			if err != nil {
				t.Fatal(err)
			}
			h2, err := parseHeader(b)
			if err != nil || h2.audience() != h.audience() || h2.Credentials.Describe() != h.Credentials.Describe() {
				t.Fatalf("%s does not survive a rewrite: %v", b, err)
			}
		}
		if j, err := jose.Encrypt(jose.Header{Alg: "dir", Clevis: json.RawMessage(clevis)}, make([]byte, 32), []byte("x")); err == nil {
			_ = pin.Describe(j)
		}
	})
}
