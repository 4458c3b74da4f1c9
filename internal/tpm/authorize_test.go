package tpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

func policyKey(t *testing.T) (*ecdsa.PrivateKey, tpm.PolicyKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, tpm.PolicyKey{PublicKey: &k.PublicKey}
}

// signNow signs the current values of pcrs (sha256 bank) with key.
func signNow(t *testing.T, tp *tpm.TPM, key *ecdsa.PrivateKey, pcrs ...int) tpm.PCRSignature {
	t.Helper()
	vals, err := tp.ReadPCRs("sha256", pcrs)
	if err != nil {
		t.Fatal(err)
	}
	d, err := tpm.PolicyPCRDigest("sha256", "sha256", pcrs, vals)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := tpm.SignPolicy(key, d)
	if err != nil {
		t.Fatal(err)
	}
	return tpm.PCRSignature{Bank: "sha256", PCRs: pcrs, Policy: d, KeyID: tpm.PolicyKey{PublicKey: &key.PublicKey}.ID(), Sig: sig}
}

// TestSignedPolicy: a secret sealed to a policy key unseals while a
// signature by that key allows the signed PCR's current value; after the
// PCR is extended it fails until the new value is signed, then unseals
// again without resealing. A PCR bound literally beside it still breaks
// it; a signature by another key, or an altered one, does not help.
func TestSignedPolicy(t *testing.T) {
	sw := tpmtest.Start(t)
	tp := sw.Open(t)
	key, pub := policyKey(t)
	var sigs []tpm.PCRSignature
	signed := &tpm.SignedPolicy{Key: pub, PCRs: []int{16}, Where: "the test's list",
		Signatures: func() ([]tpm.PCRSignature, error) { return sigs, nil }}
	o := tpm.SealOpts{Hash: "sha256", Key: "ecc", Bank: "sha256", Signed: signed}
	data := []byte("signed policy secret")
	pubB, privB, err := tp.Seal(data, o)
	if err != nil {
		t.Fatal(err)
	}
	withLiteral := o
	withLiteral.PCRs = []int{23}
	pubL, privL, err := tp.Seal(data, withLiteral)
	if err != nil {
		t.Fatal(err)
	}

	// No signature yet.
	_, err = tp.Unseal(pubB, privB, o)
	var ns *tpm.NoSignatureError
	if !errors.As(err, &ns) || !strings.Contains(err.Error(), "tether tpm sign-pcrs") {
		t.Fatalf("no signature: err = %v, want a NoSignatureError", err)
	}
	sigs = append(sigs, signNow(t, tp, key, 16))
	for _, c := range []struct {
		pub, priv []byte
		o         tpm.SealOpts
	}{{pubB, privB, o}, {pubL, privL, withLiteral}} {
		if got, err := tp.Unseal(c.pub, c.priv, c.o); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("signed: unseal = %q, %v", got, err)
		}
	}

	// An update: PCR 16 changes. The old signature no longer matches.
	if err := tp.ExtendPCR("sha256", 16, []byte("new kernel")); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Unseal(pubB, privB, o); !errors.As(err, &ns) {
		t.Fatalf("after the update, old signature only: err = %v, want a NoSignatureError", err)
	}
	t.Logf("after the update: %v", err)

	// A signature by another key for the new value: not ours.
	other, _ := policyKey(t)
	foreign := signNow(t, tp, other, 16)
	sigs = append(sigs, foreign)
	if _, err := tp.Unseal(pubB, privB, o); !errors.As(err, &ns) {
		t.Fatalf("signed by another key: err = %v, want a NoSignatureError", err)
	}
	// The same, claiming to be by our key: the TPM refuses the signature.
	forged := foreign
	forged.KeyID = pub.ID()
	sigs = append(sigs, forged)
	if _, err := tp.Unseal(pubB, privB, o); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("forged signature: err = %v, want a verification failure", err)
	}
	sigs = sigs[:2]

	// The owner signs the new value: it unseals again, nothing resealed.
	sigs = append(sigs, signNow(t, tp, key, 16))
	if got, err := tp.Unseal(pubB, privB, o); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("new value signed: unseal = %q, %v", got, err)
	}

	// The literal PCR 23 beside it still binds.
	if err := tp.ExtendPCR("sha256", 23, []byte("x")); err != nil {
		t.Fatal(err)
	}
	var pm *tpm.PCRMismatchError
	if _, err := tp.Unseal(pubL, privL, withLiteral); !errors.As(err, &pm) || tpm.FormatPCRs(pm.PCRs) != "23" {
		t.Fatalf("literal PCR 23 extended: err = %v, want a PCR mismatch naming 23", err)
	}
	if got, err := tp.Unseal(pubB, privB, o); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("signed only, PCR 23 extended: unseal = %q, %v", got, err)
	}
	// Failed and successful runs alike leave nothing loaded (the external
	// key, the policy session).
	for _, h := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(h), PropertyCount: 64}.Execute(tp.Transport())
		if err != nil {
			t.Fatal(err)
		}
		if hs, _ := rsp.CapabilityData.Data.Handles(); len(hs.Handle) != 0 {
			t.Errorf("handles left loaded: %x", hs.Handle)
		}
	}
}

// TestSignedPolicyWithPIN: signature, literal PCR and PIN together (the
// order systemd uses: PolicyAuthorize, PolicyPCR, PolicyAuthValue). All
// three are needed.
func TestSignedPolicyWithPIN(t *testing.T) {
	sw := tpmtest.Start(t)
	tp := sw.Open(t)
	key, pub := policyKey(t)
	var sigs []tpm.PCRSignature
	auth, err := tpm.PINAuth("sha256", []byte("1379"))
	if err != nil {
		t.Fatal(err)
	}
	o := tpm.SealOpts{Hash: "sha256", Key: "ecc", Bank: "sha256", PCRs: []int{23}, Auth: auth,
		Signed: &tpm.SignedPolicy{Key: pub, PCRs: []int{16}, Where: "the test's list",
			Signatures: func() ([]tpm.PCRSignature, error) { return sigs, nil }}}
	data := []byte("all three")
	pubB, privB, err := tp.Seal(data, o)
	if err != nil {
		t.Fatal(err)
	}
	sigs = append(sigs, signNow(t, tp, key, 16))
	if got, err := tp.Unseal(pubB, privB, o); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("signature, PCR and PIN right: unseal = %q, %v", got, err)
	}
	wrong := o
	wrong.Auth, _ = tpm.PINAuth("sha256", []byte("1378"))
	var wp *tpm.WrongPINError
	if _, err := tp.Unseal(pubB, privB, wrong); !errors.As(err, &wp) {
		t.Fatalf("wrong PIN: err = %v, want a WrongPINError", err)
	}
	if err := tp.ExtendPCR("sha256", 16, []byte("update")); err != nil {
		t.Fatal(err)
	}
	var ns *tpm.NoSignatureError
	if _, err := tp.Unseal(pubB, privB, o); !errors.As(err, &ns) {
		t.Fatalf("PCR 16 changed, PIN right: err = %v, want a NoSignatureError", err)
	}
	sigs = append(sigs, signNow(t, tp, key, 16))
	if got, err := tp.Unseal(pubB, privB, o); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("new value signed, PIN right: unseal = %q, %v", got, err)
	}
}
