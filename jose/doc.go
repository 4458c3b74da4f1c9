// Package jose implements the small part of JOSE (RFC 7515-7518, 7638) that
// Tang and Clevis use: EC JWKs and their thumbprints, the signed key-set
// advertisement (JWS, flattened and general JSON), and compact or flattened
// JWE with ECDH-ES/dir key management and A256GCM content encryption.
//
// It is deliberately narrow: every parser here reads untrusted bytes (a
// server's advertisement, a JWE from a disk header) and rejects anything it
// does not fully understand rather than guessing.
package jose

import "encoding/base64"

// B64 is the unpadded base64url encoding JOSE uses everywhere.
var B64 = base64.RawURLEncoding

// decodeB64 decodes unpadded base64url, tolerating trailing padding that
// some producers add.
func decodeB64(s string) ([]byte, error) {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	return B64.DecodeString(s)
}
