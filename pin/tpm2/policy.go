package tpm2

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/jose"
)

// Policy is what a tpm2 JWE says about the state in which its TPM
// unseals it (for tether tpm explain): its PCRs, and the policy digest of
// its sealed object. It does not hold the PCRs' values: clevis's header
// stores none, not even for pcr_digest, and the digest is one hash over
// all of them, so it tells whether given values satisfy it, never which
// PCR differs.
type Policy struct {
	Bank       string
	PCRs       []int  // bound to the values they had at sealing (pcr_ids)
	SignedPCRs []int  // bound to values a key signs (pcr_signed_ids)
	Signatures string // where those signatures are read (pcr_signatures)
	WithPIN    bool
	// Digest is the sealed object's policy (authPolicy in jwk_pub).
	Digest []byte
	opts   tpm.SealOpts
}

// PolicyOf reads the policy of a tpm2 JWE.
func PolicyOf(j *jose.JWE) (*Policy, error) {
	h, o, err := parse(j)
	if err != nil {
		return nil, err
	}
	pub, err := decodeB64(h.JWKPub)
	if err != nil {
		return nil, errors.New("JWE header clevis.tpm2.jwk_pub is not base64url")
	}
	digest, err := tpm.ObjectPolicy(pub)
	if err != nil {
		return nil, err
	}
	if h.WithPIN {
		o.Auth = []byte{} // its policy ends in PolicyAuthValue
	}
	p := &Policy{Bank: o.Bank, PCRs: o.PCRs, WithPIN: h.WithPIN, Digest: digest, opts: o}
	if o.Signed != nil {
		p.SignedPCRs, p.Signatures = o.Signed.PCRs, o.Signed.Where
	}
	return p, nil
}

// Holds reports whether the policy's literal PCRs (p.PCRs) holding
// values, one per PCR in that order, satisfy the sealed object's policy.
func (p *Policy) Holds(values [][]byte) (bool, error) {
	d, err := tpm.PolicyDigest(p.opts, values)
	if err != nil {
		return false, err
	}
	return string(d) == string(p.Digest), nil
}

// SignatureFor reports whether the signature file holds a signature by
// the policy's key for its signed PCRs holding values (one per
// p.SignedPCRs). It does not verify the signature: the TPM does when
// unsealing.
func (p *Policy) SignatureFor(values [][]byte) (bool, error) {
	s := p.opts.Signed
	if s == nil {
		return false, errors.New("the policy has no signed PCRs")
	}
	if s.Signatures == nil {
		return false, fmt.Errorf("the %s signs values when the binding is decrypted; tether admin pcr list there shows which it approved", s.Where)
	}
	approved, err := tpm.PolicyPCRDigest("sha256", p.Bank, s.PCRs, values)
	if err != nil {
		return false, err
	}
	sigs, err := s.Signatures()
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(sigs, func(g tpm.PCRSignature) bool {
		return string(g.Policy) == string(approved) && string(g.KeyID) == string(s.Key.ID())
	}), nil
}

// Bound returns the tpm2 JWEs j depends on: j itself if it is one, or
// those among its sss children at any depth.
func Bound(j *jose.JWE) []*jose.JWE {
	name, err := j.Header.Pin()
	if err != nil {
		return nil
	}
	switch name {
	case "tpm2":
		return []*jose.JWE{j}
	case "sss":
		var ch struct {
			SSS struct {
				JWE []string `json:"jwe"`
			} `json:"sss"`
		}
		if json.Unmarshal(j.Header.Clevis, &ch) != nil {
			return nil
		}
		var out []*jose.JWE
		for _, c := range ch.SSS.JWE {
			if cj, err := jose.ParseCompact(c); err == nil {
				out = append(out, Bound(cj)...)
			}
		}
		return out
	}
	return nil
}
