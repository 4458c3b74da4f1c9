package managed

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/tpm"
)

// FuzzPCRSignRequest: a device's /v1/pcr-sign body is untrusted. Whatever
// it holds, parsing returns an error or a request whose digest is the
// TPM's PolicyPCR digest of the values it names, and values that name each
// PCR once, in order.
func FuzzPCRSignRequest(f *testing.F) {
	zero := strings.Repeat("00", 32)
	for _, s := range []string{
		`{"bank":"sha256","pcr_ids":"16","values":["` + zero + `"]}`,
		`{"bank":"sha256","pcr_ids":"4,11","values":["` + zero + `","` + zero + `"]}`,
		`{"bank":"sha1","pcr_ids":"7","values":["00"]}`,
		`{"bank":"sha256","pcr_ids":"99","values":["` + zero + `"]}`,
		`{"bank":"sha256","pcr_ids":"","values":[]}`,
		`{"bank":"sha256","pcr_ids":"1,1","values":["` + zero + `","` + zero + `"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req pcrSignRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		pcrs, values, digest, err := parsePCRSign(&req)
		if err != nil {
			return
		}
		raw := make([][]byte, len(req.Values))
		for i, v := range req.Values {
			raw[i], _ = hex.DecodeString(v)
		}
		want, err := tpm.PolicyPCRDigest("sha256", "sha256", pcrs, raw)
		if err != nil || string(want) != string(digest) {
			t.Fatalf("digest %x, want %x (%v)", digest, want, err)
		}
		if n := strings.Count(values, "="); n != len(pcrs) {
			t.Fatalf("values %q for PCRs %v", values, pcrs)
		}
	})
}
