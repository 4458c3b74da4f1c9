package tpm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

func TestIdentityKeySigns(t *testing.T) {
	sw := tpmtest.Start(t)
	tp := sw.Open(t)
	k, err := tpm.CreateIdentityKey(tp)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "identity.json")
	if err := k.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	k2, err := tpm.ReadIdentityKey(path)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public().(*ecdsa.PublicKey)
	if !pub.Equal(k2.Public()) {
		t.Fatal("public key changed through the file")
	}
	msg := []byte("device 42 checks in")
	d := sha256.Sum256(msg)
	sig, err := k2.Sign(tp, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(pub, d[:], sig) {
		t.Fatal("signature does not verify")
	}
	d384 := sha512.Sum384(msg)
	sig, err = k2.Signer(tp).Sign(nil, d384[:], crypto.SHA384)
	if err != nil || !ecdsa.VerifyASN1(pub, d384[:], sig) {
		t.Fatalf("SHA-384 signature: %v", err)
	}
	if _, err := k2.Sign(tp, d[:], crypto.SHA384); err == nil {
		t.Error("signed a digest of the wrong length")
	}
}

// TestIdentityKeyNotExportable: the TPM refuses to duplicate the key (the
// only way a TPM lets a private key leave, wrapped for another parent),
// and its stored private blob is useless on any other TPM.
func TestIdentityKeyNotExportable(t *testing.T) {
	a, b := tpmtest.Start(t), tpmtest.Start(t)
	ta := a.Open(t)
	k, err := tpm.CreateIdentityKey(ta)
	if err != nil {
		t.Fatal(err)
	}
	data, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}

	// Duplicate, authorised the only way the TPM allows (a policy session
	// with PolicyCommandCode(Duplicate)), and with password auth.
	tr := ta.Transport()
	prim, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(mustTemplate(t))}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: prim.ObjectHandle}.Execute(tr)
	pub, priv := identityBlobs(t, data)
	lr, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: prim.ObjectHandle, Name: prim.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    priv, InPublic: pub,
	}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: lr.ObjectHandle}.Execute(tr)
	sess, closeSess, err := tpm2.PolicySession(tr, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSess()
	if _, err := (tpm2.PolicyCommandCode{PolicySession: sess.Handle(), Code: tpm2.TPMCCDuplicate}).Execute(tr); err != nil {
		t.Fatal(err)
	}
	for name, auth := range map[string]tpm2.Session{"policy": sess, "password": tpm2.PasswordAuth(nil)} {
		_, err = tpm2.Duplicate{
			ObjectHandle:    tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: auth},
			NewParentHandle: tpm2.TPMRHNull,
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(tr)
		if err == nil {
			t.Fatalf("TPM2_Duplicate (%s auth) of the identity key succeeded", name)
		}
		t.Logf("TPM2_Duplicate with %s auth: %v", name, err)
	}

	// The blob on another TPM: not loadable.
	k2, err := tpm.ParseIdentityKey(data)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	_, err = k2.Sign(b.Open(t), d[:], crypto.SHA256)
	if !errors.Is(err, tpm.ErrWrongTPM) {
		t.Fatalf("sign on another TPM: err = %v, want ErrWrongTPM", err)
	}
	t.Logf("sign on another TPM: %v", err)
}

func mustTemplate(t *testing.T) tpm2.TPMTPublic {
	tmpl, err := tpm.PrimaryTemplate("sha256", "ecc")
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

func identityBlobs(t *testing.T, data []byte) (tpm2.TPM2BPublic, tpm2.TPM2BPrivate) {
	t.Helper()
	k, err := tpm.ParseIdentityKey(data)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv := k.Blobs()
	p, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pub)
	if err != nil {
		t.Fatal(err)
	}
	q, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](priv)
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := p.Contents()
	if a := pa.ObjectAttributes; !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		t.Fatalf("attributes %+v", a)
	}
	return *p, *q
}

// TestFixedParentBlocksDuplication is the control for the test above: a
// key whose policy does allow TPM2_Duplicate can be duplicated only
// without fixedtpm|fixedparent; with them (the identity key's attributes)
// the TPM refuses with TPM_RC_ATTRIBUTES even though the policy holds.
func TestFixedParentBlocksDuplication(t *testing.T) {
	sw := tpmtest.Start(t)
	tr := sw.Open(t).Transport()
	prim, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(mustTemplate(t))}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: prim.ObjectHandle}.Execute(tr)
	calc, _ := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	tpm2.PolicyCommandCode{Code: tpm2.TPMCCDuplicate}.Update(calc)
	for _, fixed := range []bool{false, true} {
		tmpl := tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgECC,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: fixed, FixedParent: fixed, SensitiveDataOrigin: true,
				UserWithAuth: true, SignEncrypt: true},
			AuthPolicy: tpm2.TPM2BDigest{Buffer: calc.Hash().Digest},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}, CurveID: tpm2.TPMECCNistP256,
				KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}
		parent := tpm2.AuthHandle{Handle: prim.ObjectHandle, Name: prim.Name, Auth: tpm2.PasswordAuth(nil)}
		cr, err := tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl)}.Execute(tr)
		if err != nil {
			t.Fatal(err)
		}
		lr, err := tpm2.Load{ParentHandle: parent, InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(tr)
		if err != nil {
			t.Fatal(err)
		}
		sess, closeSess, err := tpm2.PolicySession(tr, tpm2.TPMAlgSHA256, 16)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.PolicyCommandCode{PolicySession: sess.Handle(), Code: tpm2.TPMCCDuplicate}).Execute(tr); err != nil {
			t.Fatal(err)
		}
		_, err = tpm2.Duplicate{
			ObjectHandle:    tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: sess},
			NewParentHandle: tpm2.TPMRHNull,
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(tr)
		closeSess()
		tpm2.FlushContext{FlushHandle: lr.ObjectHandle}.Execute(tr)
		switch {
		case !fixed && err != nil:
			t.Fatalf("control key without fixedparent: duplicate failed: %v", err)
		case fixed && !errors.Is(err, tpm2.TPMRCAttributes):
			t.Fatalf("fixedtpm|fixedparent key: duplicate err = %v, want TPM_RC_ATTRIBUTES", err)
		}
		t.Logf("fixedtpm|fixedparent=%v: duplicate err = %v", fixed, err)
	}
}

// TestNoHandlesLeft: no operation, successful or failed, leaves objects or
// sessions loaded in the TPM (swtpm has no resource manager to clean up).
func TestNoHandlesLeft(t *testing.T) {
	a, b := tpmtest.Start(t), tpmtest.Start(t)
	ta, tb := a.Open(t), b.Open(t)
	o := tpm.SealOpts{Hash: "sha256", Key: "ecc", Bank: "sha256", PCRs: []int{16}}
	pub, priv, err := ta.Seal([]byte("x"), o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ta.Unseal(pub, priv, o); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Unseal(pub, priv, o); !errors.Is(err, tpm.ErrWrongTPM) {
		t.Fatalf("wrong TPM: %v", err)
	}
	none := o
	none.PCRs = nil
	p2, q2, err := ta.Seal([]byte("y"), none)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ta.Unseal(p2, q2, none); err != nil {
		t.Fatal(err)
	}
	if err := ta.ExtendPCR("sha256", 16, []byte("z")); err != nil {
		t.Fatal(err)
	}
	var pm *tpm.PCRMismatchError
	if _, err := ta.Unseal(pub, priv, o); !errors.As(err, &pm) {
		t.Fatalf("after extend: %v", err)
	}
	k, err := tpm.CreateIdentityKey(ta)
	if err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)
	if _, err := k.Sign(ta, d, crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	for name, tp := range map[string]*tpm.TPM{"a": ta, "b": tb} {
		for _, h := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} { // transient, HMAC, policy
			rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(h), PropertyCount: 64}.Execute(tp.Transport())
			if err != nil {
				t.Fatal(err)
			}
			hs, _ := rsp.CapabilityData.Data.Handles()
			if len(hs.Handle) != 0 {
				t.Errorf("TPM %s: handles left loaded: %x", name, hs.Handle)
			}
		}
	}
}
