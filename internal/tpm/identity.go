package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/google/go-tpm/tpm2"
	"github.com/tether-nbde/tether/internal/atomicfile"
)

// IdentityKey is a device identity key that lives in the TPM: an ECDSA
// P-256 signing key the TPM generated (sensitivedataorigin) and that it
// will not let leave (fixedtpm|fixedparent). What tether stores is the
// public area and the private area wrapped by the TPM's owner primary key:
// only the TPM that made it can load it, and then only to sign.
//
// Its parent is the owner primary tpm2_createprimary -C o -g sha256 -G ecc
// makes (the one clevis uses), recreated on demand, so nothing has to be
// persisted in the TPM's NV memory.
type IdentityKey struct {
	pub, priv []byte // TPM2B_PUBLIC and TPM2B_PRIVATE, as tpm2_create writes them
	public    *ecdsa.PublicKey
}

// identityTemplate is the signing key's template.
var identityTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		// The scheme is chosen per signature (SHA-256/384/512).
		Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

const (
	identityHash = "sha256"
	identityKey  = "ecc"
)

// CreateIdentityKey has the TPM generate a new identity key.
func CreateIdentityKey(t *TPM) (*IdentityKey, error) {
	p, flush, err := t.createPrimary(identityHash, identityKey)
	if err != nil {
		return nil, err
	}
	defer flush()
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: p.handle.Handle, Name: p.handle.Name, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.New2B(identityTemplate),
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("create the identity key in the TPM: %w", err)
	}
	return newIdentityKey(tpm2.Marshal(rsp.OutPublic), tpm2.Marshal(rsp.OutPrivate))
}

func newIdentityKey(pub, priv []byte) (*IdentityKey, error) {
	p2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pub)
	if err != nil {
		return nil, fmt.Errorf("identity key: public area is malformed: %v", err)
	}
	public, err := p2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("identity key: public area is malformed: %v", err)
	}
	a := public.ObjectAttributes
	if public.Type != tpm2.TPMAlgECC || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt {
		return nil, errors.New("identity key: not a TPM-generated, non-exportable ECC signing key")
	}
	params, err := public.Parameters.ECCDetail()
	if err != nil {
		return nil, err
	}
	point, err := public.Unique.ECC()
	if err != nil {
		return nil, err
	}
	ek, err := tpm2.ECDSAPub(params, point)
	if err != nil {
		return nil, fmt.Errorf("identity key: %v", err)
	}
	if _, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](priv); err != nil {
		return nil, fmt.Errorf("identity key: private area is malformed: %v", err)
	}
	return &IdentityKey{pub: pub, priv: priv, public: ek}, nil
}

// Public returns the key's public half (an *ecdsa.PublicKey).
func (k *IdentityKey) Public() crypto.PublicKey { return k.public }

// identityFile is the on-disk form of an identity key.
type identityFile struct {
	Type    string `json:"type"`
	Parent  string `json:"parent"`
	Public  string `json:"public"`
	Private string `json:"private"`
}

const identityType = "tether-tpm-identity-v1"

// MarshalBinary returns the key's file form: JSON holding the public area
// and the TPM-wrapped private area. The private area is useless without
// the TPM that made it.
func (k *IdentityKey) MarshalBinary() ([]byte, error) {
	return json.MarshalIndent(identityFile{
		Type:    identityType,
		Parent:  "owner primary, tpm2_createprimary -C o -g sha256 -G ecc",
		Public:  base64.StdEncoding.EncodeToString(k.pub),
		Private: base64.StdEncoding.EncodeToString(k.priv),
	}, "", "  ")
}

// ParseIdentityKey parses what MarshalBinary returns.
func ParseIdentityKey(data []byte) (*IdentityKey, error) {
	var f identityFile
	if err := json.Unmarshal(data, &f); err != nil || f.Type != identityType {
		return nil, errors.New("not a tether TPM identity key file")
	}
	pub, err1 := base64.StdEncoding.DecodeString(f.Public)
	priv, err2 := base64.StdEncoding.DecodeString(f.Private)
	if err1 != nil || err2 != nil {
		return nil, errors.New("identity key file: bad base64")
	}
	return newIdentityKey(pub, priv)
}

// WriteFile saves the key to path, readable by its owner only (root, for
// the managed-mode agent).
func (k *IdentityKey) WriteFile(path string) error {
	data, err := k.MarshalBinary()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// ReadIdentityKey reads a key saved by WriteFile.
func ReadIdentityKey(path string) (*IdentityKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseIdentityKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return k, nil
}

var signHashes = map[crypto.Hash]tpm2.TPMIAlgHash{
	crypto.SHA256: tpm2.TPMAlgSHA256,
	crypto.SHA384: tpm2.TPMAlgSHA384,
	crypto.SHA512: tpm2.TPMAlgSHA512,
}

// Sign has the TPM sign digest, a hash of type h, and returns an ASN.1 DER
// ECDSA signature (what ecdsa.VerifyASN1 and x509 expect). A key from
// another TPM gives ErrWrongTPM.
func (k *IdentityKey) Sign(t *TPM, digest []byte, h crypto.Hash) ([]byte, error) {
	alg, ok := signHashes[h]
	if !ok {
		return nil, fmt.Errorf("identity key: unsupported hash %v (want SHA-256, SHA-384 or SHA-512)", h)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("identity key: digest is %d bytes, want %d for %v", len(digest), h.Size(), h)
	}
	handle, done, err := k.load(t)
	if err != nil {
		return nil, err
	}
	defer done()
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: handle.Handle, Name: handle.Name, Auth: tpm2.PasswordAuth(nil)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: alg}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("identity key: sign: %w", err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(sig.SignatureR.Buffer))
		b.AddASN1BigInt(new(big.Int).SetBytes(sig.SignatureS.Buffer))
	})
	return b.Bytes()
}

// load loads the key under a fresh primary; done flushes both.
func (k *IdentityKey) load(t *TPM) (tpm2.NamedHandle, func(), error) {
	p, flush, err := t.createPrimary(identityHash, identityKey)
	if err != nil {
		return tpm2.NamedHandle{}, nil, err
	}
	pub, _ := tpm2.Unmarshal[tpm2.TPM2BPublic](k.pub)
	priv, _ := tpm2.Unmarshal[tpm2.TPM2BPrivate](k.priv)
	lr, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: p.handle.Handle, Name: p.handle.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv,
		InPublic:     *pub,
	}.Execute(t.tr)
	if err != nil {
		flush()
		if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCBinding) || errors.Is(err, tpm2.TPMRCSize) {
			return tpm2.NamedHandle{}, nil, fmt.Errorf("identity key: %w (TPM: %v)", errWrongTPMKey, err)
		}
		return tpm2.NamedHandle{}, nil, fmt.Errorf("identity key: load: %w", err)
	}
	return tpm2.NamedHandle{Handle: lr.ObjectHandle, Name: lr.Name}, func() { t.flush(lr.ObjectHandle); flush() }, nil
}

// errWrongTPMKey is ErrWrongTPM worded for a key.
var errWrongTPMKey = &wrongTPMError{"the key was made by another TPM (or this TPM's owner hierarchy was cleared since): " +
	"it cannot be used here; create a new identity key and enroll it again"}

type wrongTPMError struct{ msg string }

func (e *wrongTPMError) Error() string        { return e.msg }
func (e *wrongTPMError) Is(target error) bool { return target == ErrWrongTPM }

// Signer returns a crypto.Signer that signs with the key in t. The caller
// keeps t open while using it.
func (k *IdentityKey) Signer(t *TPM) crypto.Signer { return signer{k, t} }

type signer struct {
	k *IdentityKey
	t *TPM
}

func (s signer) Public() crypto.PublicKey { return s.k.public }

func (s signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(s.t, digest, opts.HashFunc())
}

// Blobs returns the key's TPM2B_PUBLIC and TPM2B_PRIVATE.
func (k *IdentityKey) Blobs() (pub, priv []byte) { return k.pub, k.priv }
