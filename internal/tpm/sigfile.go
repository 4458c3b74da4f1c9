package tpm

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// SignatureFileType is the "type" of a PCR signature file.
const SignatureFileType = "tether-pcr-signatures-v1"

// The file holds public data only (signatures over PCR values): it may be
// world-readable and travel with an update.
type sigFile struct {
	Type       string       `json:"type"`
	Signatures []sigFileSig `json:"signatures"`
}

type sigFileSig struct {
	Bank   string `json:"bank"`
	PCRIDs string `json:"pcr_ids"`
	Policy string `json:"policy"` // base64url, the approved policy digest
	Key    string `json:"key"`    // base64url, SHA-256 of the key's PKIX DER
	Sig    string `json:"sig"`    // base64url, ASN.1 DER ECDSA
}

var b64 = base64.RawURLEncoding

// ParseSignatures parses a PCR signature file. Entries are checked for
// form only; the TPM verifies the signatures.
func ParseSignatures(data []byte) ([]PCRSignature, error) {
	var f sigFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("PCR signature file: %v", err)
	}
	if f.Type != SignatureFileType {
		return nil, fmt.Errorf("PCR signature file: type is %q, want %q", f.Type, SignatureFileType)
	}
	out := make([]PCRSignature, 0, len(f.Signatures))
	for i, s := range f.Signatures {
		var err error
		sig := PCRSignature{Bank: s.Bank}
		if _, err = HashAlg(s.Bank); err != nil {
			return nil, fmt.Errorf("PCR signature file: entry %d: %v", i, err)
		}
		if sig.PCRs, err = ParsePCRs(s.PCRIDs); err != nil || len(sig.PCRs) == 0 {
			return nil, fmt.Errorf("PCR signature file: entry %d: bad pcr_ids %q", i, s.PCRIDs)
		}
		for _, f := range []struct {
			name string
			in   string
			out  *[]byte
			size int
		}{{"policy", s.Policy, &sig.Policy, 32}, {"key", s.Key, &sig.KeyID, 32}, {"sig", s.Sig, &sig.Sig, 0}} {
			b, err := b64.DecodeString(f.in)
			if err != nil || len(b) == 0 || (f.size > 0 && len(b) != f.size) || len(b) > 1024 {
				return nil, fmt.Errorf("PCR signature file: entry %d: bad %s", i, f.name)
			}
			*f.out = b
		}
		out = append(out, sig)
	}
	return out, nil
}

// MarshalSignatures writes a PCR signature file.
func MarshalSignatures(sigs []PCRSignature) ([]byte, error) {
	f := sigFile{Type: SignatureFileType, Signatures: []sigFileSig{}}
	for _, s := range sigs {
		if len(s.PCRs) == 0 {
			return nil, errors.New("a PCR signature without PCRs")
		}
		f.Signatures = append(f.Signatures, sigFileSig{Bank: s.Bank, PCRIDs: FormatPCRs(s.PCRs),
			Policy: b64.EncodeToString(s.Policy), Key: b64.EncodeToString(s.KeyID), Sig: b64.EncodeToString(s.Sig)})
	}
	out, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// AddSignature adds s to sigs, replacing a signature by the same key for
// the same policy.
func AddSignature(sigs []PCRSignature, s PCRSignature) []PCRSignature {
	sigs = slices.DeleteFunc(slices.Clone(sigs), func(o PCRSignature) bool {
		return string(o.Policy) == string(s.Policy) && string(o.KeyID) == string(s.KeyID)
	})
	return append(sigs, s)
}
