// Package tpm is tether's one place that talks to a TPM 2.0: it opens the
// TPM a TCTI string names (the syntax tpm2-tools use), seals and unseals
// small secrets under the owner hierarchy exactly as clevis's tpm2 pin does
// (same primary key template, same object attributes, same PCR policy, same
// blob encoding), and keeps a non-exportable device identity key.
//
// Errors say what went wrong in the terms a person can act on: no TPM
// (NoTPMError), PCRs that changed since sealing (PCRMismatchError), a blob
// sealed on another TPM (ErrWrongTPM).
//
// Nothing here holds TPM objects between calls: every operation recreates
// the (deterministic) primary key, loads what it needs and flushes it, so a
// TPM is never left with stale transient handles and the resource manager
// of another process never sees ours.
package tpm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TPM is an open connection to a TPM. It is not safe for concurrent use;
// whoever opens it closes it.
type TPM struct {
	tr   transport.TPMCloser
	tcti TCTI
}

// Open opens the TPM named by a TCTI string (see ParseTCTI). An empty
// string means TCTIFromEnv().
func Open(ctx context.Context, tcti string) (*TPM, error) {
	if tcti == "" {
		tcti = TCTIFromEnv()
	}
	t, err := ParseTCTI(tcti)
	if err != nil {
		return nil, err
	}
	// The caller's deadline, if any, bounds the whole connection; without
	// one, only connecting is bounded, so a long-lived TPM (an identity
	// key's signer) keeps working.
	deadline, _ := ctx.Deadline()
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	tr, err := dial(dctx, t, deadline)
	if err != nil {
		return nil, err
	}
	return &TPM{tr: tr, tcti: t}, nil
}

// Close closes the connection.
func (t *TPM) Close() error { return t.tr.Close() }

// TCTI says which TPM t is.
func (t *TPM) TCTI() TCTI { return t.tcti }

// Transport exposes the raw transport, for tests and tools that need a TPM
// command this package does not wrap.
func (t *TPM) Transport() transport.TPM { return t.tr }

// ErrWrongTPM is returned when a sealed object cannot be loaded: the TPM
// that sealed it is not this one.
var ErrWrongTPM = errors.New("the secret was sealed on another TPM (or this TPM's owner hierarchy was cleared since, " +
	"or the sealed blob was altered): it cannot be unsealed here; decrypt it on the machine that sealed it, " +
	"or with another pin of an sss policy, and re-encrypt")

// PCRMismatchError is returned when the PCR policy a secret was sealed to
// does not hold: the named PCRs are not in the state they were in when
// sealing.
//
// The TPM keeps only one digest over all the policy's PCRs, so when a
// policy covers several PCRs nobody can tell which of them changed; PCRs
// lists all of them then, and Exact is false.
type PCRMismatchError struct {
	Bank  string
	PCRs  []int
	Exact bool // PCRs are exactly the ones that changed
}

func (e *PCRMismatchError) Error() string {
	ids := FormatPCRs(e.PCRs)
	var what string
	if e.Exact {
		what = fmt.Sprintf("%s PCR %s changed since the secret was sealed (or has not reached the value pcr_digest predicted; "+
			"tether tpm explain shows the boot events that made its value)", e.Bank, ids)
	} else {
		what = fmt.Sprintf("%s PCRs %s are not all in the state the secret was sealed to: at least one of them changed (or has not reached the value pcr_digest predicted) "+
			"(the TPM keeps one digest over all of them, so it cannot say which; tether tpm explain shows their values and the boot events "+
			"that made them, and names the PCR that changed when the event log shows it)",
			e.Bank, ids)
	}
	return "PCR policy not satisfied: " + what + "; if the boot chain changed on purpose (firmware, boot loader or " +
		"kernel update), decrypt with another pin and re-encrypt to the new state"
}

// Algorithm names as tpm2-tools and clevis spell them.
var hashAlgs = map[string]tpm2.TPMIAlgHash{
	"sha1":   tpm2.TPMAlgSHA1,
	"sha256": tpm2.TPMAlgSHA256,
	"sha384": tpm2.TPMAlgSHA384,
	"sha512": tpm2.TPMAlgSHA512,
}

// HashAlg returns the TPM algorithm for a hash name such as "sha256".
func HashAlg(name string) (tpm2.TPMIAlgHash, error) {
	if a, ok := hashAlgs[strings.ToLower(name)]; ok {
		return a, nil
	}
	return 0, fmt.Errorf("unsupported hash algorithm %q (want sha1, sha256, sha384 or sha512)", name)
}

func hashOf(a tpm2.TPMIAlgHash) crypto.Hash {
	h, _ := a.Hash()
	return h
}

// PrimaryTemplate returns the template "tpm2_createprimary -C o -g HASH -G
// KEY" uses (tpm2-tools 4 and 5), so that tether and clevis derive the same
// primary key and can load each other's sealed objects. KEY is "ecc" (=
// ecc256) or "rsa" (= rsa2048); both get aes128cfb as the storage cipher.
func PrimaryTemplate(hash, key string) (tpm2.TPMTPublic, error) {
	alg, err := HashAlg(hash)
	if err != nil {
		return tpm2.TPMTPublic{}, err
	}
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		Restricted:          true,
		Decrypt:             true,
	}
	sym := tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	switch strings.ToLower(key) {
	case "ecc", "ecc256":
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          alg,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: sym,
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID:   tpm2.TPMECCNistP256,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			// tpm2-tools leave the unique field empty (zero-sized x and y).
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	case "rsa", "rsa2048":
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          alg,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: sym,
				Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
				KeyBits:   2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("unsupported primary key type %q (want ecc or rsa)", key)
}

// primary is a loaded primary key.
type primary struct {
	handle tpm2.NamedHandle
	public tpm2.TPMTPublic
}

// createPrimary creates the owner primary of the given template and
// returns it with the function that flushes it.
func (t *TPM) createPrimary(hash, key string) (*primary, func(), error) {
	tmpl, err := PrimaryTemplate(hash, key)
	if err != nil {
		return nil, nil, err
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t.tr)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
			return nil, nil, fmt.Errorf("create the TPM primary key: the owner hierarchy has a password; "+
				"tether (like clevis) needs an empty owner password: %w", err)
		}
		return nil, nil, fmt.Errorf("create the TPM primary key (owner hierarchy, %s, %s): %w", hash, key, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.flush(rsp.ObjectHandle)
		return nil, nil, err
	}
	p := &primary{handle: tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, public: *pub}
	return p, func() { t.flush(rsp.ObjectHandle) }, nil
}

func (t *TPM) flush(h tpm2.TPMHandle) {
	tpm2.FlushContext{FlushHandle: h}.Execute(t.tr)
}

// encSession returns a session, salted with the primary's key, that
// encrypts the first parameter of a command (in) or response (out), so a
// secret never crosses the bus to the TPM in the clear.
func (t *TPM) encSession(p *primary, dir int) tpm2.Session {
	d := tpm2.EncryptIn
	if dir == encOut {
		d = tpm2.EncryptOut
	}
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Salted(p.handle.Handle, p.public), tpm2.AESEncryption(128, d))
}

const (
	encIn = iota
	encOut
)

// ParsePCRs parses a PCR list as clevis takes it: "0,7" (spaces allowed).
// The result is sorted and without duplicates.
func ParsePCRs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > 23 {
			return nil, fmt.Errorf("bad PCR index %q (want 0 to 23)", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// FormatPCRs formats a PCR list as "0,7".
func FormatPCRs(pcrs []int) string {
	s := make([]string, len(pcrs))
	for i, p := range pcrs {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func selection(bank tpm2.TPMIAlgHash, pcrs []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(pcrs))
	for i, p := range pcrs {
		u[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      bank,
		PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

// ReadPCRs returns the current values of PCRs in bank, in the order of
// pcrs.
func (t *TPM) ReadPCRs(bank string, pcrs []int) ([][]byte, error) {
	alg, err := HashAlg(bank)
	if err != nil {
		return nil, err
	}
	vals := map[int][]byte{}
	// The TPM returns at most 8 values per read: ask again for the rest.
	want := slices.Clone(pcrs)
	for len(want) > 0 {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: selection(alg, want)}.Execute(t.tr)
		if err != nil {
			return nil, fmt.Errorf("read %s PCRs %s: %w", bank, FormatPCRs(want), err)
		}
		var got []int
		for _, sel := range rsp.PCRSelectionOut.PCRSelections {
			if sel.Hash != alg {
				continue
			}
			for i, b := range sel.PCRSelect {
				for bit := 0; bit < 8; bit++ {
					if b&(1<<bit) != 0 {
						got = append(got, i*8+bit)
					}
				}
			}
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("the TPM returned no %s value for PCRs %s: is the %s bank active? (tpm2_getcap pcrs)",
				bank, FormatPCRs(want), bank)
		}
		for i, p := range got {
			vals[p] = rsp.PCRValues.Digests[i].Buffer
		}
		want = slices.DeleteFunc(want, func(p int) bool { return vals[p] != nil })
	}
	out := make([][]byte, len(pcrs))
	for i, p := range pcrs {
		out[i] = vals[p]
	}
	return out, nil
}

// ExtendPCR extends PCR pcr of bank with the bank's hash of data, as
// tpm2_pcrextend does. Only PCRs 16 (debug) and 23 (application) are
// meant for this outside the boot chain.
func (t *TPM) ExtendPCR(bank string, pcr int, data []byte) error {
	alg, err := HashAlg(bank)
	if err != nil {
		return err
	}
	h := hashOf(alg).New()
	h.Write(data)
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: alg, Digest: h.Sum(nil)}}},
	}.Execute(t.tr)
	if err != nil {
		return fmt.Errorf("extend %s PCR %d: %w", bank, pcr, err)
	}
	return nil
}

// PolicyPCRDigest computes the policy digest TPM2_PolicyPCR produces in a
// session of hash nameAlg over PCRs of bank holding values (in order of
// pcrs, which must be sorted): what tpm2_createpolicy --policy-pcr writes.
func PolicyPCRDigest(nameAlg, bank string, pcrs []int, values [][]byte) ([]byte, error) {
	na, err := HashAlg(nameAlg)
	if err != nil {
		return nil, err
	}
	ba, err := HashAlg(bank)
	if err != nil {
		return nil, err
	}
	h := hashOf(na).New()
	for _, v := range values {
		h.Write(v)
	}
	calc, err := tpm2.NewPolicyCalculator(na)
	if err != nil {
		return nil, err
	}
	cmd := tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}, Pcrs: selection(ba, pcrs)}
	if err := cmd.Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// PolicyDigest computes the policy a sealed object gets:
// TPM2_PolicyAuthorize by o.Signed's key (if any), TPM2_PolicyPCR over o's
// PCRs holding values (if any), then TPM2_PolicyAuthValue if the object
// has a PIN (o.Auth) — the order systemd-cryptenroll uses. With PCRs
// alone this is PolicyPCRDigest, clevis's policy.
func PolicyDigest(o SealOpts, values [][]byte) ([]byte, error) {
	na, err := HashAlg(o.Hash)
	if err != nil {
		return nil, err
	}
	calc, err := tpm2.NewPolicyCalculator(na)
	if err != nil {
		return nil, err
	}
	if o.Signed != nil {
		// First: TPM2_PolicyAuthorize replaces whatever came before it.
		name, err := o.Signed.Key.Name()
		if err != nil {
			return nil, err
		}
		if err := (tpm2.PolicyAuthorize{KeySign: name}).Update(calc); err != nil {
			return nil, err
		}
	}
	if len(o.PCRs) > 0 {
		ba, err := HashAlg(o.Bank)
		if err != nil {
			return nil, err
		}
		h := hashOf(na).New()
		for _, v := range values {
			h.Write(v)
		}
		cmd := tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}, Pcrs: selection(ba, o.PCRs)}
		if err := cmd.Update(calc); err != nil {
			return nil, err
		}
	}
	if o.Auth != nil {
		if err := (tpm2.PolicyAuthValue{}).Update(calc); err != nil {
			return nil, err
		}
	}
	return calc.Hash().Digest, nil
}

// PINAuth turns a PIN into the auth value of a sealed object whose name
// algorithm is nameAlg: the hash of the PIN, so every PIN fits the TPM's
// size limit. Trailing zero bytes are cut, as the TPM cuts them (Part 1,
// 19.6.5), so that what tether sends always equals what the TPM compares.
func PINAuth(nameAlg string, pin []byte) ([]byte, error) {
	na, err := HashAlg(nameAlg)
	if err != nil {
		return nil, err
	}
	h := hashOf(na).New()
	h.Write(pin)
	a := h.Sum(nil)
	for len(a) > 0 && a[len(a)-1] == 0 {
		a = a[:len(a)-1]
	}
	if a == nil {
		a = []byte{}
	}
	return a, nil
}

// SealOpts says how to seal: which primary key to seal under and which
// PCR policy to bind to. It is the tpm2 pin's configuration.
type SealOpts struct {
	Hash string // name algorithm of the primary and the sealed object ("sha256")
	Key  string // primary key type: "ecc" or "rsa"
	Bank string // PCR bank of the policy ("sha256"); unused without PCRs
	PCRs []int  // PCRs of the policy, sorted; none means no policy
	// PCRValues, if set, are the values the policy expects, one per PCR
	// in the order of PCRs, instead of the current ones: sealing to a
	// state the machine will be in after an update (clevis's
	// pcr_digest). See SplitPCRValues.
	PCRValues [][]byte
	// Auth, if not nil, is the object's auth value (see PINAuth): unseal
	// then needs it as well as the PCRs (TPM2_PolicyAuthValue), and wrong
	// guesses count against the TPM's dictionary-attack lockout.
	Auth []byte
	// Signed, if set, also requires the PCRs it names to hold values its
	// key has signed (TPM2_PolicyAuthorize); PCRs then lists the PCRs
	// bound to literal values, if any. Needs Hash sha256.
	Signed *SignedPolicy
}

// SplitPCRValues cuts the concatenated values of pcrs in bank — what
// "tpm2_pcrread BANK:IDS -o FILE" writes and clevis's pcr_digest holds —
// into one value per PCR, checking the length.
func SplitPCRValues(bank string, pcrs []int, concat []byte) ([][]byte, error) {
	alg, err := HashAlg(bank)
	if err != nil {
		return nil, err
	}
	size := hashOf(alg).Size()
	if len(pcrs) == 0 {
		return nil, errors.New("no PCRs to give values for")
	}
	if len(concat) != size*len(pcrs) {
		return nil, fmt.Errorf("%d bytes, want %d: the %s values (%d bytes each) of PCRs %s concatenated in index order, "+
			"as tpm2_pcrread %s:%s -o FILE writes them", len(concat), size*len(pcrs), bank, size, FormatPCRs(pcrs), bank, FormatPCRs(pcrs))
	}
	out := make([][]byte, len(pcrs))
	for i := range pcrs {
		out[i] = slices.Clone(concat[i*size : (i+1)*size])
	}
	return out, nil
}

// Seal seals data (at most 128 bytes) into a keyedhash object under the
// owner primary with clevis's attributes. It returns the TPM2B_PUBLIC and
// TPM2B_PRIVATE of the object, marshalled as tpm2_create -u/-r write them:
// only this TPM can load them again.
func (t *TPM) Seal(data []byte, o SealOpts) (pub, priv []byte, err error) {
	nameAlg, err := HashAlg(o.Hash)
	if err != nil {
		return nil, nil, err
	}
	if len(data) > 128 {
		return nil, nil, fmt.Errorf("seal: %d bytes is more than a TPM seals (128)", len(data))
	}
	attrs := tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true, AdminWithPolicy: true}
	var policy []byte
	if o.Signed != nil && nameAlg != tpm2.TPMAlgSHA256 {
		return nil, nil, errors.New(`seal: a signed PCR policy needs "hash":"sha256"`)
	}
	if len(o.PCRs) > 0 || o.Auth != nil || o.Signed != nil {
		var vals [][]byte
		if len(o.PCRs) > 0 {
			vals = o.PCRValues
			if vals == nil {
				if vals, err = t.ReadPCRs(o.Bank, o.PCRs); err != nil {
					return nil, nil, err
				}
			} else if err := checkPCRValues(o); err != nil {
				return nil, nil, err
			}
		}
		if policy, err = PolicyDigest(o, vals); err != nil {
			return nil, nil, err
		}
	} else {
		attrs.UserWithAuth = true
	}
	if o.Auth != nil {
		// Wrong PINs must count against the dictionary-attack lockout:
		// that, not the PIN's length, is what stops guessing.
		attrs.NoDA = false
		if len(o.Auth) > hashOf(nameAlg).Size() {
			return nil, nil, fmt.Errorf("seal: the auth value is longer than a %s digest", o.Hash)
		}
	}
	p, flush, err := t.createPrimary(o.Hash, o.Key)
	if err != nil {
		return nil, nil, err
	}
	defer flush()
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: p.handle.Handle, Name: p.handle.Name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: o.Auth},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: data}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgKeyedHash,
			NameAlg:          nameAlg,
			ObjectAttributes: attrs,
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{}),
		}),
	}.Execute(t.tr, t.encSession(p, encIn))
	if errors.Is(err, tpm2.TPMRCLockout) {
		// The owner primary is not exempt from lockout (LockoutError):
		// sealing waits too.
		return nil, nil, fmt.Errorf("seal: %w", &LockoutError{DA: t.daState()})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("seal: create the sealed object: %w", err)
	}
	return tpm2.Marshal(rsp.OutPublic), tpm2.Marshal(rsp.OutPrivate), nil
}

func checkPCRValues(o SealOpts) error {
	alg, err := HashAlg(o.Bank)
	if err != nil {
		return err
	}
	if len(o.PCRValues) != len(o.PCRs) {
		return fmt.Errorf("seal: %d PCR values given for %d PCRs", len(o.PCRValues), len(o.PCRs))
	}
	for i, v := range o.PCRValues {
		if len(v) != hashOf(alg).Size() {
			return fmt.Errorf("seal: the value given for %s PCR %d has %d bytes, want %d", o.Bank, o.PCRs[i], len(v), hashOf(alg).Size())
		}
	}
	return nil
}

// Unseal loads a sealed object made by Seal or by clevis and returns its
// data, satisfying the PCR policy o names. A failed policy gives a
// *PCRMismatchError, an object from another TPM ErrWrongTPM.
func (t *TPM) Unseal(pub, priv []byte, o SealOpts) ([]byte, error) {
	nameAlg, err := HashAlg(o.Hash)
	if err != nil {
		return nil, err
	}
	inPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pub)
	if err != nil {
		return nil, fmt.Errorf("sealed object: public area is malformed: %v", err)
	}
	public, err := inPub.Contents()
	if err != nil {
		return nil, fmt.Errorf("sealed object: public area is malformed: %v", err)
	}
	inPriv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](priv)
	if err != nil {
		return nil, fmt.Errorf("sealed object: private area is malformed: %v", err)
	}
	if public.Type != tpm2.TPMAlgKeyedHash {
		return nil, errors.New("sealed object: not a keyedhash (sealed data) object")
	}
	p, flush, err := t.createPrimary(o.Hash, o.Key)
	if err != nil {
		return nil, err
	}
	defer flush()
	lr, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: p.handle.Handle, Name: p.handle.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *inPriv,
		InPublic:     *inPub,
	}.Execute(t.tr)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCBinding) || errors.Is(err, tpm2.TPMRCSize) {
			return nil, fmt.Errorf("%w (TPM: %v)", ErrWrongTPM, err)
		}
		if errors.Is(err, tpm2.TPMRCLockout) {
			// The primary (tpm2-tools' template, which clevis needs)
			// is not noDA: in lockout nothing loads under it.
			return nil, &LockoutError{DA: t.daState()}
		}
		return nil, fmt.Errorf("load the sealed object: %w", err)
	}
	defer t.flush(lr.ObjectHandle)
	item := tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: tpm2.PasswordAuth(nil)}
	enc := t.encSession(p, encOut)
	if len(o.PCRs) > 0 || o.Auth != nil || o.Signed != nil {
		if public.NameAlg != nameAlg {
			return nil, fmt.Errorf("sealed object: name algorithm is %v, header says %s", public.NameAlg, o.Hash)
		}
		opts := []tpm2.AuthOption{tpm2.Salted(p.handle.Handle, p.public), tpm2.AESEncryption(128, tpm2.EncryptOut)}
		if o.Auth != nil {
			// An HMAC keyed with the auth value proves the PIN: the
			// PIN itself never crosses the bus.
			opts = append(opts, tpm2.Auth(o.Auth))
		}
		sess, closeSess, err := tpm2.PolicySession(t.tr, nameAlg, 16, opts...)
		if err != nil {
			return nil, fmt.Errorf("start a policy session: %w", err)
		}
		defer closeSess()
		if o.Signed != nil {
			bank, err := HashAlg(o.Bank)
			if err != nil {
				return nil, err
			}
			if err := t.authorize(sess, bank, o); err != nil {
				return nil, err
			}
		}
		if len(o.PCRs) > 0 {
			bank, err := HashAlg(o.Bank)
			if err != nil {
				return nil, err
			}
			if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: selection(bank, o.PCRs)}).Execute(t.tr); err != nil {
				return nil, fmt.Errorf("policy PCR %s:%s: %w", o.Bank, FormatPCRs(o.PCRs), err)
			}
		}
		if o.Auth != nil {
			if _, err := (tpm2.PolicyAuthValue{PolicySession: sess.Handle()}).Execute(t.tr); err != nil {
				return nil, fmt.Errorf("policy auth value: %w", err)
			}
		}
		item.Auth, enc = sess, nil
	}
	var rsp *tpm2.UnsealResponse
	if enc != nil {
		rsp, err = tpm2.Unseal{ItemHandle: item}.Execute(t.tr, enc)
	} else {
		rsp, err = tpm2.Unseal{ItemHandle: item}.Execute(t.tr)
	}
	if err != nil {
		switch {
		case errors.Is(err, tpm2.TPMRCPolicyFail) && len(o.PCRs) > 0:
			return nil, t.diagnose(public, o, err)
		case errors.Is(err, tpm2.TPMRCAuthFail) && o.Auth != nil:
			return nil, &WrongPINError{DA: t.daState()}
		case errors.Is(err, tpm2.TPMRCLockout):
			return nil, &LockoutError{DA: t.daState()}
		}
		return nil, fmt.Errorf("unseal: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

// diagnose explains a failed PCR policy: it recomputes the policy digest
// from the PCRs' current values and compares it with the one the object
// was sealed with.
func (t *TPM) diagnose(public *tpm2.TPMTPublic, o SealOpts, cause error) error {
	vals, err := t.ReadPCRs(o.Bank, o.PCRs)
	if err != nil {
		return fmt.Errorf("unseal: %w (and reading the PCRs to explain why failed: %v)", cause, err)
	}
	now, err := PolicyDigest(o, vals)
	if err != nil {
		return fmt.Errorf("unseal: %w", cause)
	}
	if string(now) == string(public.AuthPolicy.Buffer) {
		// The PCRs are as sealed, so the policy failed for another reason
		// (for example a PCR changed between the policy check and unseal).
		return fmt.Errorf("unseal: %w (the PCRs match the policy now: try again)", cause)
	}
	return &PCRMismatchError{Bank: o.Bank, PCRs: slices.Clone(o.PCRs), Exact: len(o.PCRs) == 1}
}

// CheckSealed tells, without unsealing, whether Unseal would succeed now:
// the object loads on this TPM (else ErrWrongTPM) and, with a PCR policy,
// the policy digest of the PCRs' current values is the one the object was
// sealed to (else a *PCRMismatchError). tether doctor asks this on every
// run, so it must not bring the secret out of the TPM. For an object
// sealed with a PIN, o.Auth must not be nil (any value: the PIN is not
// checked, only the policy's shape depends on it).
func (t *TPM) CheckSealed(pub, priv []byte, o SealOpts) error {
	inPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pub)
	if err != nil {
		return fmt.Errorf("sealed object: public area is malformed: %v", err)
	}
	public, err := inPub.Contents()
	if err != nil {
		return fmt.Errorf("sealed object: public area is malformed: %v", err)
	}
	inPriv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](priv)
	if err != nil {
		return fmt.Errorf("sealed object: private area is malformed: %v", err)
	}
	p, flush, err := t.createPrimary(o.Hash, o.Key)
	if err != nil {
		return err
	}
	defer flush()
	lr, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: p.handle.Handle, Name: p.handle.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *inPriv,
		InPublic:     *inPub,
	}.Execute(t.tr)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCBinding) || errors.Is(err, tpm2.TPMRCSize) {
			return fmt.Errorf("%w (TPM: %v)", ErrWrongTPM, err)
		}
		return fmt.Errorf("load the sealed object: %w", err)
	}
	t.flush(lr.ObjectHandle)
	if len(o.PCRs) == 0 {
		return nil
	}
	vals, err := t.ReadPCRs(o.Bank, o.PCRs)
	if err != nil {
		return err
	}
	// The whole policy, as sealed: a PIN's PolicyAuthValue and a
	// signed policy's PolicyAuthorize are in the digest too.
	now, err := PolicyDigest(o, vals)
	if err != nil {
		return err
	}
	if string(now) != string(public.AuthPolicy.Buffer) {
		return &PCRMismatchError{Bank: o.Bank, PCRs: slices.Clone(o.PCRs), Exact: len(o.PCRs) == 1}
	}
	return nil
}

// ObjectPolicy returns the policy digest (authPolicy) of a sealed object
// from its TPM2B_PUBLIC, as tpm2_create -u writes it and a tpm2 JWE's
// jwk_pub holds it: what the PCRs must reproduce for it to unseal.
func ObjectPolicy(pub []byte) ([]byte, error) {
	inPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pub)
	if err != nil {
		return nil, fmt.Errorf("sealed object: public area is malformed: %v", err)
	}
	public, err := inPub.Contents()
	if err != nil {
		return nil, fmt.Errorf("sealed object: public area is malformed: %v", err)
	}
	return public.AuthPolicy.Buffer, nil
}
