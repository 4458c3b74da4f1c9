package tpm2_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/sss"
	_ "github.com/tether-nbde/tether/pin/tang"
	"github.com/tether-nbde/tether/pin/tpm2"
)

var secret = []byte("the pwenc_secret of a NAS\n")

func encrypt(t *testing.T, p tpm2.Pin, cfg string) *jose.JWE {
	t.Helper()
	j, err := p.Encrypt(context.Background(), json.RawMessage(cfg), secret, pin.Options{})
	if err != nil {
		t.Fatalf("encrypt %s: %v", cfg, err)
	}
	return j
}

func decrypt(p tpm2.Pin, j *jose.JWE) ([]byte, error) {
	return p.Decrypt(context.Background(), j, pin.Options{})
}

func clevisHeader(t *testing.T, j *jose.JWE) map[string]any {
	t.Helper()
	var ch struct {
		Pin  string         `json:"pin"`
		TPM2 map[string]any `json:"tpm2"`
	}
	if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil || ch.Pin != "tpm2" {
		t.Fatalf("clevis header %s: %v", j.Header.Clevis, err)
	}
	return ch.TPM2
}

func TestRoundTrip(t *testing.T) {
	sw := tpmtest.Start(t)
	p := tpm2.Pin{TCTI: sw.TCTI}
	for _, cfg := range []string{`{}`, `{"pcr_ids":"0,7"}`, `{"pcr_ids":["7","16"]}`, `{"pcr_ids":[0,1,2,3,4,5,6,7,8,9,16]}`,
		`{"key":"rsa","pcr_ids":"23"}`, `{"hash":"sha1","pcr_bank":"sha256","pcr_ids":"0"}`} {
		j := encrypt(t, p, cfg)
		got, err := decrypt(p, j)
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("%s: decrypt = %q, %v", cfg, got, err)
		}
		// A compact round trip, as the JWE travels.
		j2, err := jose.ParseCompact(j.Compact())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := decrypt(p, j2); err != nil || !bytes.Equal(got, secret) {
			t.Errorf("%s: decrypt after compact = %q, %v", cfg, got, err)
		}
	}
}

func TestHeader(t *testing.T) {
	sw := tpmtest.Start(t)
	p := tpm2.Pin{TCTI: sw.TCTI}
	h := clevisHeader(t, encrypt(t, p, `{"pcr_ids":[7, 0]}`))
	want := map[string]any{"hash": "sha256", "key": "ecc", "pcr_bank": "sha256", "pcr_ids": "0,7"}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header %s = %v, want %v", k, h[k], v)
		}
	}
	if h["jwk_pub"] == nil || h["jwk_priv"] == nil {
		t.Errorf("header lacks the sealed object: %v", h)
	}
	// Without PCRs, no bank is recorded, as clevis does.
	h = clevisHeader(t, encrypt(t, p, `{"pcr_bank":"sha384"}`))
	if _, ok := h["pcr_bank"]; ok {
		t.Errorf("header has pcr_bank without pcr_ids: %v", h)
	}
}

func TestBadConfig(t *testing.T) {
	p := tpm2.Pin{TCTI: "device:/dev/no-such-tpm"}
	for cfg, want := range map[string]string{
		`{"hash":"md5"}`:          `"hash"`,
		`{"key":"ecc521"}`:        `"key"`,
		`{"pcr_bank":"sha3"}`:     `"pcr_bank"`,
		`{"pcr_ids":"24"}`:        `"pcr_ids"`,
		`{"pcr_ids":{"a":1}}`:     `"pcr_ids"`,
		`{"pcr_ids":"7,x"}`:       `"pcr_ids"`,
		`{"pcr_digest":"AAAA"}`:   `"pcr_digest"`, // without pcr_ids
		`[1]`:                     `malformed`,
		`{"pcr_ids":[true]}`:      `"pcr_ids"`,
		`{"pcr_ids":"0","x":"y"}`: `no TPM`, // unknown keys are ignored, as clevis does
	} {
		_, err := p.Encrypt(context.Background(), json.RawMessage(cfg), secret, pin.Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to mention %s", cfg, err, want)
		}
	}
}

func TestSHA1Warning(t *testing.T) {
	sw := tpmtest.Start(t)
	var w bytes.Buffer
	p := tpm2.Pin{TCTI: sw.TCTI, Warn: &w}
	encrypt(t, p, `{"pcr_ids":"7"}`)
	if w.Len() != 0 {
		t.Errorf("warning for sha256: %s", w.String())
	}
	j := encrypt(t, p, `{"pcr_bank":"sha1","pcr_ids":"7"}`)
	if !strings.Contains(w.String(), "warning") || !strings.Contains(w.String(), "sha1") {
		t.Errorf("no sha1 warning, got %q", w.String())
	}
	if got, err := decrypt(p, j); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("sha1 bank: decrypt = %q, %v", got, err)
	}
}

// TestPCRPolicy: extending a bound PCR makes unseal fail, naming the PCR;
// extending an unbound one does not matter.
func TestPCRPolicy(t *testing.T) {
	sw := tpmtest.Start(t)
	p := tpm2.Pin{TCTI: sw.TCTI}
	one := encrypt(t, p, `{"pcr_ids":"16"}`)
	two := encrypt(t, p, `{"pcr_bank":"sha256","pcr_ids":"0,16"}`)
	none := encrypt(t, p, `{}`)

	sw.Extend(t, "sha256", 23) // unbound
	sw.Extend(t, "sha1", 16)   // same index, other bank: not what sha256 policies bind
	for _, j := range []*jose.JWE{one, two, none} {
		if got, err := decrypt(p, j); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("after extending unbound PCRs: decrypt = %q, %v", got, err)
		}
	}

	sw.Extend(t, "sha256", 16)
	_, err := decrypt(p, one)
	var pm *tpm.PCRMismatchError
	if !errors.As(err, &pm) || !pm.Exact || pm.Bank != "sha256" || len(pm.PCRs) != 1 || pm.PCRs[0] != 16 {
		t.Fatalf("bound PCR 16 extended: err = %#v (%v), want a PCRMismatchError naming sha256 PCR 16", err, err)
	}
	if !strings.Contains(err.Error(), "sha256 PCR 16 changed") {
		t.Errorf("error does not name the PCR: %v", err)
	}
	// A boot path (keyd, the initramfs) stops asking: PCRs do not go back.
	if !pin.IsPermanent(err) {
		t.Errorf("a PCR mismatch is not a pin.PermanentError: %v", err)
	}
	_, err = decrypt(p, two)
	if !errors.As(err, &pm) || pm.Exact || tpm.FormatPCRs(pm.PCRs) != "0,16" {
		t.Fatalf("policy on 0,16: err = %v, want a PCRMismatchError naming 0,16", err)
	}
	t.Logf("one PCR: %v", decryptErr(p, one))
	t.Logf("two PCRs: %v", err)
	if got, err := decrypt(p, none); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("no policy: decrypt = %q, %v", got, err)
	}
}

func decryptErr(p tpm2.Pin, j *jose.JWE) error { _, err := decrypt(p, j); return err }

func TestWrongTPM(t *testing.T) {
	a, b := tpmtest.Start(t), tpmtest.Start(t)
	for _, cfg := range []string{`{}`, `{"pcr_ids":"7"}`} {
		j := encrypt(t, tpm2.Pin{TCTI: a.TCTI}, cfg)
		_, err := decrypt(tpm2.Pin{TCTI: b.TCTI}, j)
		if !errors.Is(err, tpm.ErrWrongTPM) {
			t.Fatalf("%s: decrypt on another TPM: err = %v, want ErrWrongTPM", cfg, err)
		}
		if !strings.Contains(err.Error(), "sealed on another TPM") {
			t.Errorf("error is not clear: %v", err)
		}
		// A boot stops waiting for it: this TPM will not become the other.
		if !pin.IsPermanent(err) {
			t.Errorf("%s: decrypt on another TPM is not a pin.PermanentError: %v", cfg, err)
		}
	}
}

func TestNoTPM(t *testing.T) {
	p := tpm2.Pin{TCTI: "device:/dev/no-such-tpm"}
	_, err := p.Encrypt(context.Background(), json.RawMessage(`{}`), secret, pin.Options{})
	if !errors.Is(err, tpm.ErrNoTPM) {
		t.Fatalf("encrypt: err = %v, want ErrNoTPM", err)
	}
	sw := tpmtest.Start(t)
	j := encrypt(t, tpm2.Pin{TCTI: sw.TCTI}, `{}`)
	if _, err := decrypt(p, j); !errors.Is(err, tpm.ErrNoTPM) {
		t.Fatalf("decrypt: err = %v, want ErrNoTPM", err)
	}

	// The same through the CLI: a clear message and a failure exit code.
	bin := testenv.TetherBin(t)
	cmd := sw.Command(bin, "decrypt")
	cmd.Env = append(cmd.Env, "TPM2TOOLS_TCTI=device:/dev/no-such-tpm")
	cmd.Stdin = strings.NewReader(j.Compact())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err == nil || out.Len() != 0 {
		t.Fatalf("tether decrypt without a TPM: err = %v, stdout %q", err, out.String())
	}
	if !strings.Contains(errb.String(), "no TPM at device:/dev/no-such-tpm") {
		t.Errorf("stderr = %q", errb.String())
	}
	t.Logf("tether decrypt: %s", errb.String())
}

// pcrsNow reads the current values of pcrs in bank, on a connection of its
// own that is closed before returning (swtpm serves one at a time).
func pcrsNow(t *testing.T, sw *tpmtest.SWTPM, bank string, pcrs ...int) [][]byte {
	t.Helper()
	tp, err := tpm.Open(context.Background(), sw.TCTI)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	vals, err := tp.ReadPCRs(bank, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

// afterExtend predicts the sha256 value of a PCR holding cur once
// tpmtest.SWTPM.Extend has extended it: Extend measures
// "tpmtest <pcr>", and the TPM computes H(cur || H(data)).
func afterExtend(cur []byte, pcr int) []byte {
	d := sha256.Sum256([]byte("tpmtest " + strconv.Itoa(pcr)))
	v := sha256.Sum256(append(slices.Clone(cur), d[:]...))
	return v[:]
}

func b64url(parts ...[]byte) string {
	return base64.RawURLEncoding.EncodeToString(bytes.Join(parts, nil))
}

// TestPCRDigest: with pcr_digest the secret is sealed to given PCR values
// (a state after an update), not the current ones: it does not unseal now
// and unseals once the PCRs reach those values.
func TestPCRDigest(t *testing.T) {
	sw := tpmtest.Start(t)
	p := tpm2.Pin{TCTI: sw.TCTI}
	cur := pcrsNow(t, sw, "sha256", 7, 16)
	// PCR 7 stays as it is, PCR 16 is predicted after one extend.
	future := encrypt(t, p, `{"pcr_ids":"16,7","pcr_digest":"`+b64url(cur[0], afterExtend(cur[1], 16))+`"}`)
	// The current values given explicitly: the same as sealing without
	// pcr_digest. Standard base64 with padding is taken too.
	now := encrypt(t, p, `{"pcr_ids":"7,16","pcr_digest":"`+base64.StdEncoding.EncodeToString(bytes.Join(cur, nil))+`"}`)
	if h := clevisHeader(t, future); h["pcr_ids"] != "7,16" || h["pcr_digest"] != nil {
		t.Errorf("header = %v, want pcr_ids 7,16 and no pcr_digest (clevis records none)", h)
	}

	if got, err := decrypt(p, now); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("sealed to the current values: decrypt = %q, %v", got, err)
	}
	_, err := decrypt(p, future)
	var pm *tpm.PCRMismatchError
	if !errors.As(err, &pm) {
		t.Fatalf("before the predicted state: err = %v, want a PCRMismatchError", err)
	}
	t.Logf("before the predicted state: %v", err)

	sw.Extend(t, "sha256", 16)
	if got, err := decrypt(p, future); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("in the predicted state: decrypt = %q, %v", got, err)
	}
	if _, err := decrypt(p, now); !errors.As(err, &pm) {
		t.Fatalf("sealed to the old values, after the extend: err = %v, want a PCRMismatchError", err)
	}
	// One step past the prediction: refused again.
	sw.Extend(t, "sha256", 16)
	if _, err := decrypt(p, future); !errors.As(err, &pm) {
		t.Fatalf("past the predicted state: err = %v, want a PCRMismatchError", err)
	}
}

func TestPCRDigestBadConfig(t *testing.T) {
	p := tpm2.Pin{TCTI: "device:/dev/no-such-tpm", Warn: io.Discard}
	thirtyTwo := b64url(make([]byte, 32))
	for cfg, want := range map[string]string{
		`{"pcr_digest":"` + thirtyTwo + `"}`:                                                `needs "pcr_ids"`,
		`{"pcr_ids":"7","pcr_digest":"!!!"}`:                                                `not base64url`,
		`{"pcr_ids":"7,11","pcr_digest":"` + thirtyTwo + `"}`:                               `32 bytes, want 64`,
		`{"pcr_ids":"7","pcr_bank":"sha1","pcr_digest":"` + thirtyTwo + `"}`:                `want 20`,
		`{"pcr_ids":"7","pcr_digest":"` + b64url(make([]byte, 20)) + `"}`:                   `tpm2_pcrread sha256:7 -o`,
		`{"pcr_ids":"7","pcr_bank":"sha384","pcr_digest":"` + thirtyTwo + `"}`:              `want 48`,
		`{"pcr_ids":"7","pcr_digest":"` + thirtyTwo + `"}`:                                  `no TPM`, // valid: fails only at the TPM
		`{"pcr_ids":"7,7","pcr_digest":"` + thirtyTwo + `"}`:                                `no TPM`, // one PCR, as tpm2-tools take it
		`{"pcr_ids":"7","pcr_bank":"sha1","pcr_digest":"` + b64url(make([]byte, 20)) + `"}`: `no TPM`,
	} {
		_, err := p.Encrypt(context.Background(), json.RawMessage(cfg), secret, pin.Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to mention %s", cfg, err, want)
		}
	}
}
