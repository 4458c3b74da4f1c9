// Package tpm2 is the "tpm2" pin: a secret encrypted with a key that the
// TPM of this machine keeps sealed, optionally to a PCR policy, so it can
// only be decrypted on this machine and, with PCRs, only while the boot
// chain is in the state it was in when sealing.
//
// The format is clevis's: clevis decrypts what tether seals and tether
// decrypts what clevis seals, on the same TPM. The one deliberate
// difference is the default PCR bank: sha256, where clevis uses sha1 (see
// docs/TPM2.md). The TPM is chosen as tpm2-tools choose it
// ($TPM2TOOLS_TCTI), or by $TETHER_TPM_TCTI for tether alone.
package tpm2

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

func init() { pin.Register("tpm2", Pin{}) }

// Pin implements pin.Pin. The zero value uses the TPM of TCTIFromEnv and
// warns on os.Stderr.
type Pin struct {
	// TCTI names the TPM; empty means tpm.TCTIFromEnv().
	TCTI string
	// Warn receives warnings (sha1 PCR bank); nil means os.Stderr.
	Warn io.Writer
}

// Config is the pin's configuration, as clevis takes it:
// {"hash":"sha256","key":"ecc","pcr_bank":"sha256","pcr_ids":"0,7"}.
// pcr_ids may also be an array: ["0","7"] or [0,7].
type Config struct {
	Hash      string          `json:"hash"`
	Key       string          `json:"key"`
	PCRBank   string          `json:"pcr_bank"`
	PCRIDs    json.RawMessage `json:"pcr_ids"`
	PCRDigest string          `json:"pcr_digest"`
	// WithPIN seals so that unsealing also needs a PIN
	// (TPM2_PolicyAuthValue), as systemd-cryptenroll --tpm2-with-pin.
	// A tether extension: clevis cannot decrypt such JWEs.
	WithPIN bool `json:"with_pin"`
	// PCRPubkey, PCRSignedIDs and PCRSignatures make a signed PCR policy
	// (TPM2_PolicyAuthorize): PCRSignedIDs may hold any values signed by
	// the key PCRPubkey (a PEM file, or base64url PKIX DER), the
	// signatures being read from PCRSignatures when decrypting. A tether
	// extension, like WithPIN.
	PCRPubkey     string          `json:"pcr_pubkey"`
	PCRSignedIDs  json.RawMessage `json:"pcr_signed_ids"`
	PCRSignatures string          `json:"pcr_signatures"`
	// PCRSigner "managed": the managed server this machine is enrolled
	// with holds the policy key and signs the values of PCRSignedIDs it
	// approves, asked at every decryption (instead of PCRPubkey and a
	// signature file).
	PCRSigner string `json:"pcr_signer"`
}

// DefaultSignatures is where a signed PCR policy looks for its signatures
// unless "pcr_signatures" names another file.
const DefaultSignatures = "/etc/tether/pcr-signatures.json"

// header is clevis.tpm2 in the JWE protected header (keys in clevis's
// order, which is sorted).
type header struct {
	Hash    string `json:"hash"`
	JWKPriv string `json:"jwk_priv"`
	JWKPub  string `json:"jwk_pub"`
	Key     string `json:"key"`
	PCRBank string `json:"pcr_bank,omitempty"`
	PCRIDs  string `json:"pcr_ids,omitempty"`
	WithPIN bool   `json:"with_pin,omitempty"`
	// Signed PCR policy: the key (base64url PKIX DER), its PCRs and the
	// signature file.
	PCRPubkey     string `json:"pcr_pubkey,omitempty"`
	PCRSignedIDs  string `json:"pcr_signed_ids,omitempty"`
	PCRSignatures string `json:"pcr_signatures,omitempty"`
	// PCRSigner, instead of PCRSignatures: who signs ("managed"), and
	// PCRSignerRef which of them (the managed server and device).
	PCRSigner    string          `json:"pcr_signer,omitempty"`
	PCRSignerRef json.RawMessage `json:"pcr_signer_ref,omitempty"`
}

type clevisHeader struct {
	Pin  string `json:"pin"`
	TPM2 header `json:"tpm2"`
}

// Defaults. DefaultBank differs from clevis (sha1) on purpose.
const (
	DefaultHash = "sha256"
	DefaultKey  = "ecc"
	DefaultBank = "sha256"
)

// tpmMu serialises this process's use of the TPM: sss may run several
// tpm2 children at once, and swtpm serves one connection at a time.
var tpmMu sync.Mutex

// parseConfig checks a configuration and turns it into seal options,
// and says whether it asks for a PIN. With "pcr_signer":"managed" the
// signed PCRs are in o.Signed without a key: Encrypt asks the server.
func parseConfig(raw json.RawMessage) (tpm.SealOpts, bool, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return tpm.SealOpts{}, false, fmt.Errorf("configuration is malformed: %v", err)
	}
	o := tpm.SealOpts{Hash: strings.ToLower(cfg.Hash), Key: strings.ToLower(cfg.Key), Bank: strings.ToLower(cfg.PCRBank)}
	if o.Hash == "" {
		o.Hash = DefaultHash
	}
	if o.Key == "" {
		o.Key = DefaultKey
	}
	if o.Bank == "" {
		o.Bank = DefaultBank
	}
	if _, err := tpm.HashAlg(o.Hash); err != nil {
		return tpm.SealOpts{}, false, fmt.Errorf(`configuration "hash": %v`, err)
	}
	if _, err := tpm.PrimaryTemplate(o.Hash, o.Key); err != nil {
		return tpm.SealOpts{}, false, fmt.Errorf(`configuration "key": %v`, err)
	}
	if _, err := tpm.HashAlg(o.Bank); err != nil {
		return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_bank": %v`, err)
	}
	ids, err := pcrIDs(cfg.PCRIDs)
	if err != nil {
		return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_ids": %v`, err)
	}
	if o.PCRs, err = tpm.ParsePCRs(ids); err != nil {
		return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_ids": %v`, err)
	}
	signedIDs, err := pcrIDs(cfg.PCRSignedIDs)
	if err != nil {
		return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_signed_ids": %v`, err)
	}
	signed, err := tpm.ParsePCRs(signedIDs)
	if err != nil {
		return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_signed_ids": %v`, err)
	}
	switch {
	case cfg.PCRSigner != "" && cfg.PCRSigner != signerName:
		return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_signer": %q is not a signer (the one there is: "managed", the server this machine is enrolled with)`, cfg.PCRSigner)
	case cfg.PCRSigner != "" && (cfg.PCRPubkey != "" || cfg.PCRSignatures != ""):
		return tpm.SealOpts{}, false, errors.New(`configuration "pcr_signer" holds the key and gives the signatures: leave out "pcr_pubkey" and "pcr_signatures"`)
	case cfg.PCRSigner != "" && len(signed) == 0:
		return tpm.SealOpts{}, false, errors.New(`configuration "pcr_signer" needs "pcr_signed_ids": the PCRs whose values the server signs`)
	case cfg.PCRSigner != "":
		if err := checkSigned(o, signed, "pcr_signer"); err != nil {
			return tpm.SealOpts{}, false, err
		}
		o.Signed = &tpm.SignedPolicy{PCRs: signed}
	case cfg.PCRPubkey != "" && len(signed) == 0:
		return tpm.SealOpts{}, false, errors.New(`configuration "pcr_pubkey" needs "pcr_signed_ids": the PCRs whose values the key signs`)
	case cfg.PCRPubkey == "" && (len(signed) > 0 || cfg.PCRSignatures != ""):
		return tpm.SealOpts{}, false, errors.New(`configuration "pcr_signed_ids" and "pcr_signatures" need "pcr_pubkey": the public key that signs PCR values`)
	case cfg.PCRPubkey != "":
		if err := checkSigned(o, signed, "pcr_pubkey"); err != nil {
			return tpm.SealOpts{}, false, err
		}
		key, err := readPolicyKey(cfg.PCRPubkey)
		if err != nil {
			return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_pubkey": %v`, err)
		}
		where := cfg.PCRSignatures
		if where == "" {
			where = DefaultSignatures
		}
		if !filepath.IsAbs(where) {
			return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_signatures": %q is not an absolute path (it is read at every decryption, from wherever that runs)`, where)
		}
		o.Signed = signedPolicy(key, signed, where)
	}
	if cfg.PCRDigest != "" {
		if len(o.PCRs) == 0 {
			return tpm.SealOpts{}, false, errors.New(`configuration "pcr_digest" needs "pcr_ids": the PCRs whose values it holds`)
		}
		raw, err := decodeAnyB64(cfg.PCRDigest)
		if err != nil {
			return tpm.SealOpts{}, false, errors.New(`configuration "pcr_digest" is not base64url (encode the file tpm2_pcrread -o writes ` +
				`with: basenc --base64url -w0 FILE | tr -d =)`)
		}
		if o.PCRValues, err = tpm.SplitPCRValues(o.Bank, o.PCRs, raw); err != nil {
			return tpm.SealOpts{}, false, fmt.Errorf(`configuration "pcr_digest": %v`, err)
		}
	}
	return o, cfg.WithPIN, nil
}

// checkSigned checks what a signed PCR policy (made by "pcr_pubkey" or
// "pcr_signer", named by what) needs of the rest of the configuration.
func checkSigned(o tpm.SealOpts, signed []int, what string) error {
	if o.Hash != "sha256" {
		return fmt.Errorf(`configuration: a signed PCR policy (%q) needs "hash":"sha256"`, what)
	}
	for _, p := range signed {
		if slices.Contains(o.PCRs, p) {
			return fmt.Errorf(`configuration: PCR %d is in both "pcr_ids" (its value now) and "pcr_signed_ids" (any signed value): choose one`, p)
		}
	}
	return nil
}

// readPolicyKey reads the public key of a signed PCR policy: base64url
// PKIX DER (as the JWE header holds it, so that regen can pass it on), or
// the name of a PEM file.
func readPolicyKey(v string) (tpm.PolicyKey, error) {
	if der, err := jose.B64.DecodeString(v); err == nil {
		if k, err := tpm.ParsePolicyKey(der); err == nil {
			return k, nil
		}
	}
	data, err := os.ReadFile(v)
	if err != nil {
		return tpm.PolicyKey{}, fmt.Errorf("read the policy public key: %v", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PUBLIC KEY" {
		return tpm.PolicyKey{}, fmt.Errorf("%s is not a PEM public key (openssl pkey -in KEY.pem -pubout -out %s)", v, v)
	}
	return tpm.ParsePolicyKey(b.Bytes)
}

// signedPolicy is the signed part of a policy, its signatures read from
// the file where when unsealing. A missing file holds no signature.
func signedPolicy(key tpm.PolicyKey, pcrs []int, where string) *tpm.SignedPolicy {
	return &tpm.SignedPolicy{Key: key, PCRs: pcrs, Where: where, Signatures: func() ([]tpm.PCRSignature, error) {
		data, err := os.ReadFile(where)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read the PCR signatures: %w", err)
		}
		sigs, err := tpm.ParseSignatures(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return sigs, nil
	}}
}

// pcrIDs accepts "0,7", ["0","7"] and [0,7], as clevis does.
func pcrIDs(raw json.RawMessage) (string, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return "", nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err == nil {
		return str, nil
	}
	var arr []any
	if err := json.Unmarshal(raw, &arr); err != nil {
		return "", errors.New(`want a string such as "0,7" or an array such as ["0","7"]`)
	}
	var parts []string
	for _, v := range arr {
		switch v := v.(type) {
		case string:
			parts = append(parts, v)
		case float64:
			parts = append(parts, strconv.FormatFloat(v, 'f', -1, 64))
		default:
			return "", fmt.Errorf("array element %v is not a PCR index", v)
		}
	}
	return strings.Join(parts, ","), nil
}

func (p Pin) open(ctx context.Context) (*tpm.TPM, error) {
	return tpm.Open(ctx, p.TCTI)
}

func (p Pin) warn(format string, args ...any) {
	w := p.Warn
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, "tether: warning: "+format+"\n", args...)
}

// jwk is the sealed data: an oct A256GCM JWK, as "jose jwk gen -i
// '{"alg":"A256GCM"}'" makes it for clevis.
type jwk struct {
	Alg    string   `json:"alg"`
	K      string   `json:"k"`
	KeyOps []string `json:"key_ops"`
	Kty    string   `json:"kty"`
}

// Encrypt implements pin.Pin.
func (p Pin) Encrypt(ctx context.Context, raw json.RawMessage, secret []byte, po pin.Options) (*jose.JWE, error) {
	o, withPIN, err := parseConfig(raw)
	if err != nil {
		return nil, err
	}
	var (
		signer    pin.PCRSigner
		signerRef json.RawMessage
	)
	if o.Signed != nil && o.Signed.Key.PublicKey == nil {
		// "pcr_signer": the signer's key.
		var der []byte
		if signer, err = pin.LookupPCRSigner(signerName); err != nil {
			return nil, fmt.Errorf(`configuration "pcr_signer": %w`, err)
		}
		if signerRef, der, err = signer.Enrolled(ctx); err != nil {
			return nil, fmt.Errorf(`configuration "pcr_signer": %w`, err)
		}
		if o.Signed.Key, err = tpm.ParsePolicyKey(der); err != nil {
			return nil, fmt.Errorf("the PCR signer's policy key: %w", err)
		}
		o.Signed.Where = signerWhere(signerName, signerRef)
	}
	if withPIN {
		if o.Auth, err = askPIN(po, o.Hash, "New PIN for the TPM-sealed secret", true); err != nil {
			return nil, err
		}
		defer clear(o.Auth)
	}
	if (len(o.PCRs) > 0 || o.Signed != nil) && o.Bank == "sha1" {
		all := slices.Clone(o.PCRs)
		if o.Signed != nil {
			all = append(all, o.Signed.PCRs...)
			slices.Sort(all)
		}
		p.warn("tpm2: the sha1 PCR bank is weak (SHA-1 collisions are practical) and is measured independently of "+
			"the sha256 bank: a policy on sha1 PCRs %s ignores changes recorded only in sha256; prefer \"pcr_bank\":\"sha256\"",
			tpm.FormatPCRs(all))
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	defer clear(key)
	data, _ := json.Marshal(jwk{Alg: "A256GCM", K: jose.B64.EncodeToString(key), KeyOps: []string{"encrypt", "decrypt"}, Kty: "oct"})
	defer clear(data)

	tpmMu.Lock()
	t, err := p.open(ctx)
	if err != nil {
		tpmMu.Unlock()
		return nil, err
	}
	pub, priv, err := t.Seal(data, o)
	var now [][]byte
	if err == nil && signer != nil {
		now, err = t.ReadPCRs(o.Bank, o.Signed.PCRs)
	}
	t.Close()
	tpmMu.Unlock()
	if err != nil {
		return nil, err
	}
	if signer != nil {
		// The values of now become the device's first approved values
		// (the server trusts them as a reseal would), and the binding is
		// proved to unseal in this state.
		if _, _, err := signer.Sign(ctx, signerRef, o.Bank, o.Signed.PCRs, now); err != nil {
			return nil, fmt.Errorf("the server did not sign the current PCR values: %w", err)
		}
	}
	h := header{Hash: o.Hash, Key: o.Key, JWKPub: jose.B64.EncodeToString(pub), JWKPriv: jose.B64.EncodeToString(priv)}
	if len(o.PCRs) > 0 {
		h.PCRBank, h.PCRIDs = o.Bank, tpm.FormatPCRs(o.PCRs)
	}
	if o.Signed != nil {
		h.PCRBank = o.Bank
		h.PCRPubkey = jose.B64.EncodeToString(o.Signed.Key.DER())
		h.PCRSignedIDs = tpm.FormatPCRs(o.Signed.PCRs)
		if signer != nil {
			h.PCRSigner, h.PCRSignerRef = signerName, signerRef
		} else {
			h.PCRSignatures = o.Signed.Where
		}
	}
	h.WithPIN = withPIN
	ch, _ := json.Marshal(clevisHeader{Pin: "tpm2", TPM2: h})
	return jose.Encrypt(jose.Header{Alg: "dir", Clevis: ch}, key, secret)
}

// parse checks a tpm2 JWE's header and returns it with the unseal options.
func parse(j *jose.JWE) (*header, tpm.SealOpts, error) {
	if j.Header.Alg != "dir" {
		return nil, tpm.SealOpts{}, fmt.Errorf("JWE alg is %q, want dir", j.Header.Alg)
	}
	var ch clevisHeader
	if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil {
		return nil, tpm.SealOpts{}, fmt.Errorf("JWE header clevis.tpm2 is malformed: %v", err)
	}
	h := &ch.TPM2
	for name, v := range map[string]string{"hash": h.Hash, "key": h.Key, "jwk_pub": h.JWKPub, "jwk_priv": h.JWKPriv} {
		if v == "" {
			return nil, tpm.SealOpts{}, fmt.Errorf("JWE header clevis.tpm2 is missing %q", name)
		}
	}
	o := tpm.SealOpts{Hash: h.Hash, Key: h.Key, Bank: h.PCRBank}
	var err error
	if o.PCRs, err = tpm.ParsePCRs(h.PCRIDs); err != nil {
		return nil, tpm.SealOpts{}, fmt.Errorf("JWE header clevis.tpm2.pcr_ids: %v", err)
	}
	if len(o.PCRs) > 0 && o.Bank == "" {
		return nil, tpm.SealOpts{}, errors.New("JWE header clevis.tpm2 has pcr_ids but no pcr_bank")
	}
	if h.PCRPubkey != "" {
		der, err := decodeB64(h.PCRPubkey)
		if err != nil {
			return nil, tpm.SealOpts{}, errors.New("JWE header clevis.tpm2.pcr_pubkey is not base64url")
		}
		key, err := tpm.ParsePolicyKey(der)
		if err != nil {
			return nil, tpm.SealOpts{}, fmt.Errorf("JWE header clevis.tpm2.pcr_pubkey: %v", err)
		}
		signed, err := tpm.ParsePCRs(h.PCRSignedIDs)
		if err != nil || len(signed) == 0 {
			return nil, tpm.SealOpts{}, errors.New("JWE header clevis.tpm2 has pcr_pubkey but no valid pcr_signed_ids")
		}
		switch {
		case o.Bank == "":
			return nil, tpm.SealOpts{}, errors.New("JWE header clevis.tpm2 has pcr_pubkey but no pcr_bank")
		case h.PCRSigner != "":
			if len(h.PCRSignerRef) == 0 {
				return nil, tpm.SealOpts{}, errors.New("JWE header clevis.tpm2 has pcr_signer but no pcr_signer_ref")
			}
			// The signature is asked for when decrypting (askSigner).
			o.Signed = &tpm.SignedPolicy{Key: key, PCRs: signed, Where: signerWhere(h.PCRSigner, h.PCRSignerRef)}
		case !filepath.IsAbs(h.PCRSignatures):
			return nil, tpm.SealOpts{}, errors.New("JWE header clevis.tpm2 has pcr_pubkey but no absolute pcr_signatures")
		default:
			o.Signed = signedPolicy(key, signed, h.PCRSignatures)
		}
	}
	return h, o, nil
}

// decodeAnyB64 takes base64url, as clevis's pcr_digest is, and also
// standard base64 with or without padding, which people paste from
// base64(1).
func decodeAnyB64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if b, err := jose.B64.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func decodeB64(s string) ([]byte, error) {
	return jose.B64.DecodeString(strings.TrimRight(strings.TrimSpace(s), "="))
}

// askPIN asks for the PIN and returns the auth value it makes.
func askPIN(po pin.Options, nameAlg, prompt string, confirm bool) ([]byte, error) {
	if po.PIN == nil {
		return nil, pin.ErrNoPIN
	}
	p, err := po.PIN(prompt, confirm)
	if err != nil {
		return nil, err
	}
	defer clear(p)
	if len(p) == 0 {
		return nil, errors.New("the PIN is empty: a TPM PIN needs at least one character")
	}
	return tpm.PINAuth(nameAlg, p)
}

// NeedsPIN reports whether decrypting j asks for a PIN: it is, or has
// among its sss children, a tpm2 JWE sealed "with_pin". Callers that bound
// decryption by a deadline ask before the clock starts.
func NeedsPIN(j *jose.JWE) bool {
	for _, b := range Bound(j) {
		if h, _, err := parse(b); err == nil && h.WithPIN {
			return true
		}
	}
	return false
}

// Decrypt implements pin.Pin.
func (p Pin) Decrypt(ctx context.Context, j *jose.JWE, po pin.Options) ([]byte, error) {
	h, o, err := parse(j)
	if err != nil {
		return nil, err
	}
	if h.WithPIN {
		if o.Auth, err = askPIN(po, o.Hash, "PIN of the TPM-sealed secret", false); err != nil {
			if errors.Is(err, pin.ErrNoPIN) {
				return nil, pin.Permanent(err)
			}
			return nil, err
		}
		defer clear(o.Auth)
	}
	pub, err := decodeB64(h.JWKPub)
	if err != nil {
		return nil, errors.New("JWE header clevis.tpm2.jwk_pub is not base64url")
	}
	priv, err := decodeB64(h.JWKPriv)
	if err != nil {
		return nil, errors.New("JWE header clevis.tpm2.jwk_priv is not base64url")
	}
	if h.PCRSigner != "" {
		if err := p.askSigner(ctx, h, o); err != nil {
			return nil, err
		}
	}
	tpmMu.Lock()
	t, err := p.open(ctx)
	if err != nil {
		tpmMu.Unlock()
		return nil, err
	}
	data, err := t.Unseal(pub, priv, o)
	t.Close()
	tpmMu.Unlock()
	var (
		pm *tpm.PCRMismatchError
		wp *tpm.WrongPINError
		lo *tpm.LockoutError
	)
	if h.WithPIN && (errors.As(err, &wp) || errors.As(err, &lo)) {
		return nil, pinError{err}
	}
	if errors.As(err, &pm) || errors.Is(err, tpm.ErrWrongTPM) {
		// PCRs only move forward until the next reboot: during this boot
		// the policy can never hold again. Nor does another machine's
		// TPM (or one cleared since) become the one that sealed it, so
		// a boot shows the prompt at once instead of waiting out its
		// deadline.
		return nil, pin.Permanent(err)
	}
	if err != nil {
		return nil, err
	}
	defer clear(data)
	key, err := parseJWK(data)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return j.Decrypt(key)
}

// askSigner asks the PCR signer h names for a signature of the current
// values of o's signed PCRs and makes it o's only signature. The TPM
// verifies it when unsealing; nothing is stored, so a device the signer no
// longer serves gets none.
func (p Pin) askSigner(ctx context.Context, h *header, o tpm.SealOpts) error {
	s, err := pin.LookupPCRSigner(h.PCRSigner)
	if err != nil {
		return pin.Permanent(err)
	}
	values, err := p.PCRValues(ctx, o.Bank, o.Signed.PCRs)
	if err != nil {
		return err
	}
	policy, sig, err := s.Sign(ctx, h.PCRSignerRef, o.Bank, o.Signed.PCRs, values)
	if err != nil {
		return fmt.Errorf("signed PCR policy: %w", err)
	}
	one := []tpm.PCRSignature{{Bank: o.Bank, PCRs: o.Signed.PCRs, Policy: policy, KeyID: o.Signed.Key.ID(), Sig: sig}}
	o.Signed.Signatures = func() ([]tpm.PCRSignature, error) { return one, nil }
	return nil
}

// signerName is the PCR signer there is ("pcr_signer":"managed").
const signerName = "managed"

// signerWhere names a PCR signer in messages: "managed server URL".
func signerWhere(name string, ref json.RawMessage) string {
	var r struct {
		URL string `json:"url"`
	}
	json.Unmarshal(ref, &r)
	return strings.TrimSpace(name + " server " + r.URL)
}

// pinError marks the TPM's refusal of a PIN as pin.ErrWrongPIN.
type pinError struct{ err error }

func (e pinError) Error() string        { return e.err.Error() }
func (e pinError) Unwrap() error        { return e.err }
func (e pinError) Is(target error) bool { return target == pin.ErrWrongPIN }

// parseJWK extracts the A256GCM key from the unsealed JWK. clevis seals it
// with a trailing newline.
func parseJWK(data []byte) ([]byte, error) {
	var k jwk
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, errors.New("the unsealed data is not a JWK")
	}
	if k.Kty != "oct" {
		return nil, fmt.Errorf("the unsealed JWK has kty %q, want oct", k.Kty)
	}
	key, err := decodeB64(k.K)
	if err != nil || len(key) != 32 {
		return nil, errors.New("the unsealed JWK does not hold a 256-bit key")
	}
	return key, nil
}

// Describe implements pin.Describer: "tpm2" or "tpm2(sha256:0,7)".
func (Pin) Describe(j *jose.JWE) string {
	h, _, err := parse(j)
	if err != nil {
		return "tpm2(?)"
	}
	var what []string
	if h.PCRIDs != "" {
		what = append(what, h.PCRBank+":"+h.PCRIDs)
	}
	if h.PCRSignedIDs != "" {
		what = append(what, "signed "+h.PCRBank+":"+h.PCRSignedIDs)
	}
	if h.WithPIN {
		what = append(what, "PIN")
	}
	if len(what) == 0 {
		return "tpm2"
	}
	return "tpm2(" + strings.Join(what, "+") + ")"
}

// Check tells whether this machine's TPM could decrypt j now, without
// unsealing anything: the sealed object loads (tpm.ErrWrongTPM if not)
// and its PCR policy holds (*tpm.PCRMismatchError if not). A missing TPM
// is a tpm.NoTPMError.
func (p Pin) Check(ctx context.Context, j *jose.JWE) error {
	h, o, err := parse(j)
	if err != nil {
		return err
	}
	if h.WithPIN {
		// Its policy ends in PolicyAuthValue; the PIN itself is not
		// needed to check the PCRs.
		o.Auth = []byte{}
	}
	pub, err := decodeB64(h.JWKPub)
	if err != nil {
		return errors.New("JWE header clevis.tpm2.jwk_pub is not base64url")
	}
	priv, err := decodeB64(h.JWKPriv)
	if err != nil {
		return errors.New("JWE header clevis.tpm2.jwk_priv is not base64url")
	}
	tpmMu.Lock()
	defer tpmMu.Unlock()
	t, err := p.open(ctx)
	if err != nil {
		return err
	}
	defer t.Close()
	return t.CheckSealed(pub, priv, o)
}

// PCRValues reads the current values of pcrs in bank from this machine's
// TPM.
func (p Pin) PCRValues(ctx context.Context, bank string, pcrs []int) ([][]byte, error) {
	tpmMu.Lock()
	defer tpmMu.Unlock()
	t, err := p.open(ctx)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	return t.ReadPCRs(bank, pcrs)
}

// ConfigOf implements pin.Configurer: the PCR policy and PIN use of the
// sealed object. A signed policy's key travels as base64url DER, which
// the configuration takes as well as a file.
func (Pin) ConfigOf(j *jose.JWE) (json.RawMessage, error) {
	var ch map[string]json.RawMessage
	json.Unmarshal(j.Header.Clevis, &ch)
	var t struct {
		Hash          string `json:"hash"`
		Key           string `json:"key"`
		PCRBank       string `json:"pcr_bank,omitempty"`
		PCRIDs        string `json:"pcr_ids,omitempty"`
		WithPIN       bool   `json:"with_pin,omitempty"`
		PCRPubkey     string `json:"pcr_pubkey,omitempty"`
		PCRSignedIDs  string `json:"pcr_signed_ids,omitempty"`
		PCRSignatures string `json:"pcr_signatures,omitempty"`
		PCRSigner     string `json:"pcr_signer,omitempty"`
	}
	if err := json.Unmarshal(ch["tpm2"], &t); err != nil {
		return nil, fmt.Errorf("tpm2 JWE: %w", err)
	}
	if t.PCRSigner != "" {
		// Encrypt asks the signer for its key again.
		t.PCRPubkey = ""
	}
	out, _ := json.Marshal(t)
	return out, nil
}
