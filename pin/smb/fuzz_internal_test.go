package smb

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// tangJWE is a JWE made by clevis encrypt tang (pin/tang/testdata): a real
// cred_jwe's shape.
func tangJWE(t testing.TB) string {
	b, err := os.ReadFile("../tang/testdata/new.jwe")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// FuzzHeader feeds hostile clevis.smb members — the header of a disk that
// may come from anyone — to what Decrypt and Describe parse before any
// network or helper is used. What is accepted names a server, share, file
// and port, and keeps its credentials and audience through a rewrite.
func FuzzHeader(f *testing.F) {
	for _, s := range []string{
		`{"pin":"smb","smb":{"server":"nas","port":445,"share":"keys","path":"ha.key","user":"pi","salt":"c2FsdA","attempts":2,"cred":{"password":"pw"}}}`,
		`{"pin":"smb","smb":{"server":"nas","port":445,"share":"keys","path":"ha.key","salt":"c2FsdA","cred_jwe":"` + tangJWE(f) + `"}}`,
		`{"pin":"smb","smb":{"server":"nas","port":445,"share":"keys","path":"ha.key","salt":"c2FsdA","cred_jwe":"a.b.c.d.e"}}`,
		`{"pin":"smb","smb":{"server":"nas","port":0,"share":"keys","path":"ha.key","cred":[]}}`,
	} {
		f.Add(s)
	}
	// The vector's header (testdata/gen.sh, made by José).
	if vb, err := os.ReadFile("testdata/smb.jwe"); err != nil {
		f.Fatal(err)
	} else if vj, err := jose.ParseCompact(strings.TrimSpace(string(vb))); err != nil {
		f.Fatal(err)
	} else {
		f.Add(string(vj.Header.Clevis))
	}
	f.Fuzz(func(t *testing.T, clevis string) {
		h, err := parseHeader(json.RawMessage(clevis))
		if err == nil {
			if h.Server == "" || h.Share == "" || h.Path == "" || h.Port <= 0 || h.Port > 65535 {
				t.Fatalf("accepted %+v", h)
			}
			b, err := json.Marshal(clevisHeader{Pin: "smb", SMB: *h})
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
