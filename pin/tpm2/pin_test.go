package tpm2_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/tpm2"
)

// withPIN returns options whose PIN callback answers p and counts calls.
func withPIN(p string, calls *int) pin.Options {
	return pin.Options{PIN: func(string, bool) ([]byte, error) {
		if calls != nil {
			*calls++
		}
		return []byte(p), nil
	}}
}

func encryptPIN(t *testing.T, p tpm2.Pin, cfg, pinText string) *jose.JWE {
	t.Helper()
	j, err := p.Encrypt(context.Background(), json.RawMessage(cfg), secret, withPIN(pinText, nil))
	if err != nil {
		t.Fatalf("encrypt %s: %v", cfg, err)
	}
	return j
}

// setDA sets the TPM's dictionary-attack parameters with tpm2-tools (a
// fresh swtpm has an empty lockout password).
func setDA(t *testing.T, sw *tpmtest.SWTPM, maxTries, interval int) {
	t.Helper()
	testenv.RequireCmd(t, "tpm2_dictionarylockout")
	out, err := sw.Command("tpm2_dictionarylockout", "--setup-parameters",
		fmt.Sprintf("--max-tries=%d", maxTries), fmt.Sprintf("--recovery-time=%d", interval),
		fmt.Sprintf("--lockout-recovery-time=%d", interval)).CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_dictionarylockout: %v\n%s", err, out)
	}
}

// TestPIN: a secret sealed with_pin unseals with the PIN only; a wrong PIN
// says so and how many tries are left; nobody to ask is ErrNoPIN.
func TestPIN(t *testing.T) {
	sw := tpmtest.Start(t)
	setDA(t, sw, 5, 600)
	p := tpm2.Pin{TCTI: sw.TCTI}
	ctx := context.Background()
	for _, cfg := range []string{`{"with_pin":true}`, `{"with_pin":true,"pcr_ids":"16"}`} {
		j := encryptPIN(t, p, cfg, "2468")
		if h := clevisHeader(t, j); h["with_pin"] != true {
			t.Errorf("%s: header %v lacks with_pin", cfg, h)
		}
		calls := 0
		if got, err := p.Decrypt(ctx, j, withPIN("2468", &calls)); err != nil || !bytes.Equal(got, secret) || calls != 1 {
			t.Fatalf("%s: right PIN: decrypt = %q, %v (asked %d times)", cfg, got, err, calls)
		}
		_, err := p.Decrypt(ctx, j, withPIN("1357", nil))
		var wp *tpm.WrongPINError
		if !errors.As(err, &wp) || !errors.Is(err, pin.ErrWrongPIN) {
			t.Fatalf("%s: wrong PIN: err = %v, want a WrongPINError", cfg, err)
		}
		if !strings.Contains(err.Error(), "wrong PIN") || !strings.Contains(err.Error(), "more wrong PIN") {
			t.Errorf("%s: wrong PIN: %v", cfg, err)
		}
		t.Logf("%s: wrong PIN: %v", cfg, err)
		if _, err := p.Decrypt(ctx, j, pin.Options{}); !errors.Is(err, pin.ErrNoPIN) || !pin.IsPermanent(err) {
			t.Errorf("%s: nobody to ask: err = %v, want a permanent ErrNoPIN", cfg, err)
		}
		// A correct PIN resets nothing, but works again.
		if got, err := p.Decrypt(ctx, j, withPIN("2468", nil)); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("%s: right PIN after a wrong one: decrypt = %q, %v", cfg, got, err)
		}
	}
	if _, err := p.Encrypt(ctx, json.RawMessage(`{"with_pin":true}`), secret, pin.Options{}); !errors.Is(err, pin.ErrNoPIN) {
		t.Errorf("encrypt with nobody to ask: err = %v, want ErrNoPIN", err)
	}
	if _, err := p.Encrypt(ctx, json.RawMessage(`{"with_pin":true}`), secret, withPIN("", nil)); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("encrypt with an empty PIN: err = %v", err)
	}

	// PIN and PCRs: the right PIN does not help once the PCR changed.
	j := encryptPIN(t, p, `{"with_pin":true,"pcr_ids":"23"}`, "2468")
	if d := pin.Describe(j); d != "tpm2(sha256:23+PIN)" {
		t.Errorf("describe = %s", d)
	}
	sw.Extend(t, "sha256", 23)
	_, err := p.Decrypt(ctx, j, withPIN("2468", nil))
	var pm *tpm.PCRMismatchError
	if !errors.As(err, &pm) || !pm.Exact {
		t.Fatalf("PIN right, PCR 23 changed: err = %v, want a PCRMismatchError naming 23", err)
	}
	// A wrong PIN then: the TPM checks the policy first, so this is a PCR
	// mismatch too and costs no try.
	tp := sw.Open(t)
	before, err := tp.DA()
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()
	_, err = p.Decrypt(ctx, j, withPIN("1111", nil))
	tp = sw.Open(t)
	after, _ := tp.DA()
	tp.Close()
	if !errors.As(err, &pm) || after.Failures != before.Failures {
		t.Fatalf("wrong PIN, PCR changed: err = %v, failures %d -> %d; want a PCR mismatch that costs no try",
			err, before.Failures, after.Failures)
	}
}

// TestPINLockout: wrong PINs count down to the TPM's lockout; the messages
// say how many tries are left and, in lockout, how long to wait (read from
// the TPM); after that wait the right PIN works.
func TestPINLockout(t *testing.T) {
	sw := tpmtest.Start(t)
	setDA(t, sw, 3, 2)
	p := tpm2.Pin{TCTI: sw.TCTI}
	ctx := context.Background()
	j := encryptPIN(t, p, `{"with_pin":true,"pcr_ids":"7"}`, "correct")
	plain := encrypt(t, p, `{"pcr_ids":"7"}`)

	wants := []string{"allows 2 more wrong PIN", "allows 1 more wrong PIN", "that was the last try"}
	for i, want := range wants {
		_, err := p.Decrypt(ctx, j, withPIN("wrong", nil))
		if !errors.Is(err, pin.ErrWrongPIN) || !strings.Contains(err.Error(), want) {
			t.Fatalf("wrong PIN %d: err = %v, want it to say %q", i+1, err, want)
		}
		t.Logf("wrong PIN %d: %v", i+1, err)
	}
	start := time.Now()
	_, err := p.Decrypt(ctx, j, withPIN("correct", nil))
	var lo *tpm.LockoutError
	if !errors.As(err, &lo) || !errors.Is(err, pin.ErrWrongPIN) {
		t.Fatalf("right PIN in lockout: err = %v, want a LockoutError", err)
	}
	if !strings.Contains(err.Error(), "lockout after 3 wrong PINs") || !strings.Contains(err.Error(), "wait 2s") ||
		!strings.Contains(err.Error(), "tpm2_dictionarylockout --clear-lockout") {
		t.Errorf("lockout message: %v", err)
	}
	t.Logf("in lockout: %v", err)
	// The owner primary (tpm2-tools' template, as clevis needs it) is not
	// exempt from the lockout: a secret without a PIN waits too, and is
	// told why.
	if _, err := decrypt(p, plain); !errors.As(err, &lo) || errors.Is(err, pin.ErrWrongPIN) {
		t.Fatalf("a secret without PIN during the lockout: err = %v, want a LockoutError", err)
	}
	// Sealing a new one waits too (a first boot's bind, after power cuts
	// had counted as failures), and is told why, not TPM_RC_LOCKOUT alone.
	if _, err := p.Encrypt(ctx, json.RawMessage(`{"pcr_ids":"7"}`), secret, pin.Options{}); !errors.As(err, &lo) || !strings.Contains(err.Error(), "wait 2s") {
		t.Fatalf("sealing during the lockout: err = %v, want a LockoutError", err)
	}

	// The TPM forgets one failure per interval: after it, one try again.
	time.Sleep(2*time.Second + 500*time.Millisecond - time.Since(start))
	var got []byte
	for deadline := time.Now().Add(5 * time.Second); ; {
		if got, err = p.Decrypt(ctx, j, withPIN("correct", nil)); err == nil || !errors.As(err, &lo) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("right PIN after the wait: decrypt = %q, %v", got, err)
	}
	if got, err := decrypt(p, plain); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("a secret without PIN after the lockout: decrypt = %q, %v", got, err)
	}
	t.Logf("unsealed %s after the lockout began", time.Since(start).Round(100*time.Millisecond))
}

// TestPINCLI: the tether binary reads the PIN from --pin-file (never argv),
// refuses a wrong one with the TPM's count, and without a terminal or a
// file says how to give it. clevis cannot decrypt a with_pin JWE.
func TestPINCLI(t *testing.T) {
	sw := tpmtest.Start(t)
	setDA(t, sw, 5, 600)
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	right, wrong := filepath.Join(dir, "pin"), filepath.Join(dir, "wrong")
	os.WriteFile(right, []byte("8642\n"), 0o600)
	os.WriteFile(wrong, []byte("8643\n"), 0o600)

	jwe, stderr, ok := runNoTTY(t, sw, secret, bin, "encrypt", "tpm2", `{"with_pin":true,"pcr_ids":"7"}`, "--pin-file", right)
	if !ok {
		t.Fatalf("tether encrypt with_pin: %s", stderr)
	}
	if got, stderr, ok := runNoTTY(t, sw, jwe, bin, "decrypt", "--pin-file", right); !ok || !bytes.Equal(got, secret) {
		t.Fatalf("tether decrypt --pin-file right = %q: %s", got, stderr)
	}
	got, stderr, ok := runNoTTY(t, sw, jwe, bin, "decrypt", "--pin-file", wrong)
	if ok || len(got) != 0 || !strings.Contains(stderr, "wrong PIN for the TPM-sealed secret") || !strings.Contains(stderr, "allows 4 more") {
		t.Fatalf("tether decrypt --pin-file wrong = %q, %v: %s", got, ok, stderr)
	}
	t.Logf("wrong PIN: %s", stderr)
	got, stderr, ok = runNoTTY(t, sw, jwe, bin, "decrypt")
	if ok || len(got) != 0 || !strings.Contains(stderr, "no terminal") || !strings.Contains(stderr, "--pin-file") {
		t.Fatalf("tether decrypt without terminal or --pin-file = %q, %v: %s", got, ok, stderr)
	}
	if _, err := exec.LookPath("clevis-decrypt-tpm2"); err == nil {
		if got, _, ok := run(t, sw, jwe, "clevis", "decrypt"); ok {
			t.Errorf("clevis decrypted a with_pin JWE: %q", got)
		}
	}
}

// runNoTTY is run with no controlling terminal (setsid), as under a
// service manager or in CI.
func runNoTTY(t *testing.T, sw *tpmtest.SWTPM, stdin []byte, name string, args ...string) ([]byte, string, bool) {
	t.Helper()
	return run(t, sw, stdin, "setsid", append([]string{"-w", name}, args...)...)
}

// TestCheckWholePolicy: Check (tether doctor's question) compares the
// PCRs with the whole policy the object was sealed to: a PIN's
// PolicyAuthValue and a signed policy's PolicyAuthorize are part of it,
// so such a binding is not reported as a changed PCR while its PCRs hold.
func TestCheckWholePolicy(t *testing.T) {
	sw := tpmtest.Start(t)
	p := tpm2.Pin{TCTI: sw.TCTI}
	ctx := context.Background()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pub := filepath.Join(t.TempDir(), "policy.pub.pem")
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	jwes := []*jose.JWE{
		encryptPIN(t, p, `{"with_pin":true,"pcr_ids":"23"}`, "2468"),
		encrypt(t, p, `{"pcr_ids":"23","pcr_pubkey":"`+pub+`","pcr_signed_ids":"16","pcr_signatures":"/nonexistent.json"}`),
	}
	for _, j := range jwes {
		if err := p.Check(ctx, j); err != nil {
			t.Errorf("%s: PCR 23 unchanged: Check = %v", pin.Describe(j), err)
		}
	}
	sw.Extend(t, "sha256", 23)
	for _, j := range jwes {
		var pm *tpm.PCRMismatchError
		if err := p.Check(ctx, j); !errors.As(err, &pm) || !pm.Exact {
			t.Errorf("%s: PCR 23 extended: Check = %v, want a PCRMismatchError naming 23", pin.Describe(j), err)
		}
	}
}
