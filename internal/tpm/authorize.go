package tpm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Signed PCR policies (TPM2_PolicyAuthorize): the sealed object's policy
// names a public key instead of PCR values. Any PCR values that key has
// signed satisfy it, so a new boot chain (a kernel or firmware update) is
// allowed by issuing a signature, not by resealing every secret.
//
// What is signed is the "approved policy": the TPM2_PolicyPCR digest, in a
// SHA-256 session, over the signed PCRs holding the allowed values
// (PolicyPCRDigest). The signature is ECDSA P-256 with SHA-256 over
// H(approvedPolicy || policyRef), policyRef being empty, as the TPM checks
// it in TPM2_VerifySignature.

// PolicyKey is the public key of a signed PCR policy.
type PolicyKey struct {
	*ecdsa.PublicKey
}

// ParsePolicyKey parses a PKIX (SubjectPublicKeyInfo) DER public key: an
// ECDSA P-256 key is what tether signs and verifies with.
func ParsePolicyKey(der []byte) (PolicyKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return PolicyKey{}, fmt.Errorf("policy public key: %v", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return PolicyKey{}, errors.New("policy public key: want an ECDSA P-256 key " +
			"(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)")
	}
	return PolicyKey{ek}, nil
}

// DER returns the key as PKIX DER.
func (k PolicyKey) DER() []byte {
	der, _ := x509.MarshalPKIXPublicKey(k.PublicKey)
	return der
}

// ID is the SHA-256 of the key's DER: signatures name their key by it.
func (k PolicyKey) ID() []byte {
	s := sha256.Sum256(k.DER())
	return s[:]
}

// public is the TPM public area tether loads the key as (TPM2_LoadExternal,
// public part only). Its name goes into the sealed object's policy, so it
// must never change: SHA-256 name, sign only, scheme null, coordinates
// padded to 32 bytes.
func (k PolicyKey) public() tpm2.TPMTPublic {
	x, y := make([]byte, 32), make([]byte, 32)
	k.X.FillBytes(x)
	k.Y.FillBytes(y)
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   tpm2.TPMECCNistP256,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x},
			Y: tpm2.TPM2BECCParameter{Buffer: y},
		}),
	}
}

// Name is the key's TPM name, as TPM2_LoadExternal reports it.
func (k PolicyKey) Name() (tpm2.TPM2BName, error) {
	pub := k.public()
	n, err := tpm2.ObjectName(&pub)
	if err != nil {
		return tpm2.TPM2BName{}, err
	}
	return *n, nil
}

// SignPolicy signs an approved policy digest with key, as the TPM verifies
// it for TPM2_PolicyAuthorize; the signature is ASN.1 DER.
func SignPolicy(key *ecdsa.PrivateKey, approved []byte) ([]byte, error) {
	if key.Curve != elliptic.P256() {
		return nil, errors.New("sign the policy: want an ECDSA P-256 key")
	}
	aHash := sha256.Sum256(approved) // || policyRef, which is empty
	return ecdsa.SignASN1(rand.Reader, key, aHash[:])
}

// PCRSignature is a signature allowing one set of values of the signed
// PCRs: Policy is their approved policy digest (PolicyPCRDigest with name
// algorithm sha256), Sig the ASN.1 DER ECDSA signature of KeyID's key.
type PCRSignature struct {
	Bank   string
	PCRs   []int
	Policy []byte
	KeyID  []byte
	Sig    []byte
}

// SignedPolicy says which PCRs a key signs for and where the signatures
// are: SealOpts.Signed.
type SignedPolicy struct {
	Key  PolicyKey
	PCRs []int // sorted; in SealOpts.Bank
	// Signatures returns the signatures available now (from a file the
	// pin names); called only when unsealing.
	Signatures func() ([]PCRSignature, error)
	// Where names the signatures' place in errors (a file name).
	Where string
}

// NoSignatureError is returned when no signature allows the signed PCRs'
// current values: they changed (an update) and nobody has signed the new
// values yet, or the signatures are not where the JWE says.
type NoSignatureError struct {
	Bank   string
	PCRs   []int
	Policy []byte // approved policy digest of the current values
	Where  string // where the signatures were looked for
}

func (e *NoSignatureError) Error() string {
	return fmt.Sprintf("signed PCR policy not satisfied: no signature in %s allows the current values of %s PCRs %s "+
		"(approved policy %x): they changed since the last signature (an update?); the owner of the policy key signs them "+
		"with: tether tpm sign-pcrs --key KEY.pem --pcr-ids %s --out %s (on this machine, in this state), "+
		"or decrypt with another pin", e.Where, e.Bank, FormatPCRs(e.PCRs), e.Policy, FormatPCRs(e.PCRs), e.Where)
}

// authorize runs the signed part of a policy in session sess: PolicyPCR
// over the signed PCRs, then, with the signature that approves the
// resulting digest, TPM2_PolicyAuthorize.
func (t *TPM) authorize(sess tpm2.Session, bank tpm2.TPMIAlgHash, o SealOpts) error {
	s := o.Signed
	where := s.Where
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: selection(bank, s.PCRs)}).Execute(t.tr); err != nil {
		return fmt.Errorf("policy PCR %s:%s: %w", o.Bank, FormatPCRs(s.PCRs), err)
	}
	gd, err := (tpm2.PolicyGetDigest{PolicySession: sess.Handle()}).Execute(t.tr)
	if err != nil {
		return fmt.Errorf("read the policy digest: %w", err)
	}
	approved := gd.PolicyDigest.Buffer
	var sigs []PCRSignature
	if s.Signatures != nil {
		if sigs, err = s.Signatures(); err != nil {
			return err
		}
	}
	var sig *PCRSignature
	for i := range sigs {
		if string(sigs[i].Policy) == string(approved) && string(sigs[i].KeyID) == string(s.Key.ID()) {
			sig = &sigs[i]
			break
		}
	}
	if sig == nil {
		return &NoSignatureError{Bank: o.Bank, PCRs: s.PCRs, Policy: approved, Where: where}
	}
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(sig.Sig, &rs); err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil {
		return fmt.Errorf("the signature in %s for policy %x is not an ASN.1 ECDSA signature", where, approved)
	}
	pub := s.Key.public()
	le, err := tpm2.LoadExternal{InPublic: tpm2.New2B(pub), Hierarchy: tpm2.TPMRHOwner}.Execute(t.tr)
	if err != nil {
		return fmt.Errorf("load the policy public key: %w", err)
	}
	defer t.flush(le.ObjectHandle)
	aHash := sha256.Sum256(approved)
	vr, err := tpm2.VerifySignature{
		KeyHandle: tpm2.NamedHandle{Handle: le.ObjectHandle, Name: le.Name},
		Digest:    tpm2.TPM2BDigest{Buffer: aHash[:]},
		Signature: tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       tpm2.TPMAlgSHA256,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: rs.R.Bytes()},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: rs.S.Bytes()},
			}),
		},
	}.Execute(t.tr)
	if err != nil {
		return fmt.Errorf("the signature in %s for the current values of %s PCRs %s does not verify with the policy key "+
			"(altered, or made with another key): %w", where, o.Bank, FormatPCRs(s.PCRs), err)
	}
	if _, err := (tpm2.PolicyAuthorize{
		PolicySession:  sess.Handle(),
		ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approved},
		KeySign:        le.Name,
		CheckTicket:    vr.Validation,
	}).Execute(t.tr); err != nil {
		return fmt.Errorf("policy authorize: %w", err)
	}
	return nil
}
