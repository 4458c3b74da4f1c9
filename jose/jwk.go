package jose

import (
	"crypto"
	_ "crypto/sha1" // registers the hashes of thumbprintHashes
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// JWK is a JSON Web Key as Tang and Clevis use them: EC keys (public or
// private) and symmetric "oct" keys. Field order is alphabetical so that
// marshalled keys match what tangd and jose emit byte for byte.
type JWK struct {
	Alg    string   `json:"alg,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	D      string   `json:"d,omitempty"`
	K      string   `json:"k,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
	Kty    string   `json:"kty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
}

// ParseJWK parses one JWK and checks that it is well formed: a known key
// type, and for EC keys a supported curve and coordinates of the right
// length. It does not check that the point is on the curve; Curve.Point does.
func ParseJWK(data []byte) (*JWK, error) {
	var k JWK
	if err := UnmarshalJWK(data, &k); err != nil {
		return nil, fmt.Errorf("parse jwk: %w", err)
	}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return &k, nil
}

// Validate reports whether k is a well-formed EC or oct key.
func (k *JWK) Validate() error {
	switch k.Kty {
	case "EC":
		c, err := CurveByName(k.Crv)
		if err != nil {
			return err
		}
		for name, v := range map[string]string{"x": k.X, "y": k.Y} {
			b, err := decodeB64(v)
			if err != nil || len(b) != c.Size {
				return fmt.Errorf("jwk: %s coordinate is not %d bytes of base64url", name, c.Size)
			}
		}
		if k.D != "" {
			b, err := decodeB64(k.D)
			if err != nil || len(b) != c.Size {
				return fmt.Errorf("jwk: private scalar is not %d bytes of base64url", c.Size)
			}
		}
	case "oct":
		if _, err := decodeB64(k.K); err != nil || k.K == "" {
			return errors.New("jwk: oct key has no valid k")
		}
	case "":
		return errors.New("jwk: missing kty")
	default:
		return fmt.Errorf("jwk: unsupported key type %q", k.Kty)
	}
	return nil
}

// HasOp reports whether the key lists op in key_ops.
func (k *JWK) HasOp(op string) bool { return slices.Contains(k.KeyOps, op) }

// Public returns a copy of k without its private part.
func (k *JWK) Public() *JWK {
	p := *k
	p.D = ""
	p.KeyOps = slices.Clone(k.KeyOps)
	return &p
}

// Thumbprint hash names, as jose(1) and Tang name them.
var thumbprintHashes = []struct {
	name string
	hash crypto.Hash
}{
	{"S1", crypto.SHA1},
	{"S224", crypto.SHA224},
	{"S256", crypto.SHA256},
	{"S384", crypto.SHA384},
	{"S512", crypto.SHA512},
}

// ThumbprintAlgs lists the thumbprint hashes Tang accepts as key IDs.
var ThumbprintAlgs = []string{"S1", "S224", "S256", "S384", "S512"}

// Thumbprint returns the RFC 7638 thumbprint of an EC key with the named
// hash ("S256" is what clients write, "S1" is deprecated but still used).
func (k *JWK) Thumbprint(alg string) (string, error) {
	if k.Kty != "EC" {
		return "", fmt.Errorf("jwk: thumbprint of %q key not supported", k.Kty)
	}
	for _, h := range thumbprintHashes {
		if h.name == alg {
			d := h.hash.New()
			d.Write(k.thumbprintInput())
			return B64.EncodeToString(d.Sum(nil)), nil
		}
	}
	return "", fmt.Errorf("jwk: unknown thumbprint hash %q", alg)
}

// thumbprintInput is what an EC key's thumbprint hashes (RFC 7638): the
// required members only, in lexicographic order, without spaces.
func (k *JWK) thumbprintInput() []byte {
	return []byte(`{"crv":` + quote(k.Crv) + `,"kty":"EC","x":` + quote(k.X) + `,"y":` + quote(k.Y) + `}`)
}

// Thumbprints returns the key's thumbprints under every hash Tang accepts.
func (k *JWK) Thumbprints() []string {
	out := make([]string, 0, len(ThumbprintAlgs))
	for _, a := range ThumbprintAlgs {
		t, err := k.Thumbprint(a)
		if err == nil {
			out = append(out, t)
		}
	}
	return out
}

// MatchesThumbprint reports whether tp is a thumbprint of k under any of the
// hashes Tang accepts. The digests' lengths all differ, so only the hash
// whose digest has tp's length is computed.
func (k *JWK) MatchesThumbprint(tp string) bool {
	if k.Kty != "EC" {
		return false
	}
	for _, h := range thumbprintHashes {
		if B64.EncodedLen(h.hash.Size()) != len(tp) {
			continue
		}
		d := h.hash.New()
		d.Write(k.thumbprintInput())
		return B64.EncodeToString(d.Sum(nil)) == tp
	}
	return false
}

// quote is s as a JSON string, as json.Marshal writes it. Key members are
// base64url or curve names, which need no escaping, so the common case
// skips encoding/json (whose first use in a process costs tens of µs).
func quote(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return string(b)
		}
	}
	return `"` + s + `"`
}

// KeySet is a JWK Set: the payload of a Tang advertisement.
type KeySet struct {
	Keys []*JWK `json:"keys"`
}

// ParseKeySet parses and validates a JWK Set.
func ParseKeySet(data []byte) (*KeySet, error) {
	ks, ok := DecodeKeySet(data)
	if !ok {
		ks = new(KeySet)
		if err := json.Unmarshal(data, ks); err != nil {
			return nil, fmt.Errorf("parse key set: %w", err)
		}
	}
	if ks.Keys == nil {
		return nil, errors.New("parse key set: no \"keys\" array")
	}
	for i, k := range ks.Keys {
		if k == nil {
			return nil, fmt.Errorf("parse key set: key %d is null", i)
		}
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("parse key set: key %d: %w", i, err)
		}
	}
	return ks, nil
}

// WithOp returns the keys of the set that list op in key_ops, in order.
func (ks *KeySet) WithOp(op string) []*JWK {
	var out []*JWK
	for _, k := range ks.Keys {
		if k.HasOp(op) {
			out = append(out, k)
		}
	}
	return out
}
