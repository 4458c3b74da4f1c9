package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// JWS is a parsed JSON-serialized JWS (flattened or general).
type JWS struct {
	Payload    []byte // decoded payload
	payloadB64 string
	Signatures []Signature
}

// Signature is one signature of a JWS.
type Signature struct {
	Protected    string // base64url protected header, as received
	Header       SigHeader
	signatureRaw []byte
}

// SigHeader is the part of a JWS protected header we use.
type SigHeader struct {
	Alg string `json:"alg"`
	Cty string `json:"cty,omitempty"`
}

type jwsSig struct {
	Protected string `json:"protected"`
	Signature string `json:"signature"`
}

type jwsFlat struct {
	Payload    string   `json:"payload"`
	Protected  string   `json:"protected,omitempty"`
	Signature  string   `json:"signature,omitempty"`
	Signatures []jwsSig `json:"signatures,omitempty"`
}

// SignAdvertisement signs payload with each key, the way tangd does: one
// signature per key with protected header {"alg":ES*,"cty":"jwk-set+json"};
// flattened JSON for one signer, general JSON for two or more.
func SignAdvertisement(payload []byte, keys []*JWK) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("jws: no signing keys")
	}
	out := jwsFlat{Payload: B64.EncodeToString(payload)}
	for _, k := range keys {
		c, err := CurveByName(k.Crv)
		if err != nil {
			return nil, err
		}
		hdr, _ := json.Marshal(SigHeader{Alg: c.Alg, Cty: "jwk-set+json"})
		prot := B64.EncodeToString(hdr)
		sig, err := signES(c, k, []byte(prot+"."+out.Payload))
		if err != nil {
			return nil, err
		}
		out.Signatures = append(out.Signatures, jwsSig{Protected: prot, Signature: B64.EncodeToString(sig)})
	}
	if len(out.Signatures) == 1 {
		out.Protected, out.Signature = out.Signatures[0].Protected, out.Signatures[0].Signature
		out.Signatures = nil
	}
	return json.Marshal(out)
}

// ParseJWS parses a JWS in flattened or general JSON serialization.
func ParseJWS(data []byte) (*JWS, error) {
	var f jwsFlat
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse jws: %w", err)
	}
	sigs := f.Signatures
	if f.Signature != "" || f.Protected != "" {
		if len(sigs) > 0 {
			return nil, errors.New("parse jws: both flattened and general signatures")
		}
		sigs = []jwsSig{{Protected: f.Protected, Signature: f.Signature}}
	}
	if len(sigs) == 0 {
		return nil, errors.New("parse jws: no signatures")
	}
	payload, err := decodeB64(f.Payload)
	if err != nil {
		return nil, fmt.Errorf("parse jws: payload: %w", err)
	}
	j := &JWS{Payload: payload, payloadB64: f.Payload}
	for i, s := range sigs {
		hb, err := decodeB64(s.Protected)
		if err != nil {
			return nil, fmt.Errorf("parse jws: signature %d: protected header: %w", i, err)
		}
		var h SigHeader
		if err := json.Unmarshal(hb, &h); err != nil {
			return nil, fmt.Errorf("parse jws: signature %d: protected header: %w", i, err)
		}
		raw, err := decodeB64(s.Signature)
		if err != nil {
			return nil, fmt.Errorf("parse jws: signature %d: %w", i, err)
		}
		j.Signatures = append(j.Signatures, Signature{Protected: s.Protected, Header: h, signatureRaw: raw})
	}
	return j, nil
}

// VerifiedBy reports whether some signature of j verifies under the public
// key k.
func (j *JWS) VerifiedBy(k *JWK) bool {
	c, err := CurveByName(k.Crv)
	if err != nil {
		return false
	}
	p, err := c.Point(k)
	if err != nil {
		return false
	}
	for _, s := range j.Signatures {
		if s.Header.Alg == c.Alg && verifyES(c, p, []byte(s.Protected+"."+j.payloadB64), s.signatureRaw) {
			return true
		}
	}
	return false
}

func esHash(c *Curve) (crypto.Hash, elliptic.Curve) {
	switch c.Name {
	case "P-256":
		return crypto.SHA256, elliptic.P256()
	case "P-384":
		return crypto.SHA384, elliptic.P384()
	}
	return crypto.SHA512, elliptic.P521()
}

func signES(c *Curve, k *JWK, msg []byte) ([]byte, error) {
	d, err := c.Scalar(k)
	if err != nil {
		return nil, err
	}
	h, ec := esHash(c)
	priv, err := ecdsa.ParseRawPrivateKey(ec, d)
	if err != nil {
		return nil, err
	}
	hh := h.New()
	hh.Write(msg)
	r, s, err := ecdsa.Sign(rand.Reader, priv, hh.Sum(nil))
	if err != nil {
		return nil, err
	}
	out := make([]byte, 2*c.Size)
	r.FillBytes(out[:c.Size])
	s.FillBytes(out[c.Size:])
	return out, nil
}

func verifyES(c *Curve, point, msg, sig []byte) bool {
	if len(sig) != 2*c.Size {
		return false
	}
	h, ec := esHash(c)
	pub, err := ecdsa.ParseUncompressedPublicKey(ec, point)
	if err != nil {
		return false
	}
	hh := h.New()
	hh.Write(msg)
	r := new(big.Int).SetBytes(sig[:c.Size])
	s := new(big.Int).SetBytes(sig[c.Size:])
	return ecdsa.Verify(pub, hh.Sum(nil), r, s)
}
