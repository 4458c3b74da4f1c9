package tpm2_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// run runs a command pointed at sw and returns stdout, stderr and whether
// it succeeded.
func run(t *testing.T, sw *tpmtest.SWTPM, stdin []byte, name string, args ...string) ([]byte, string, bool) {
	t.Helper()
	cmd := sw.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if name == "clevis" {
		// clevis encrypt leaves a session loaded (tpm2-tools expect a
		// resource manager, and swtpm has none): free it, as the kernel's
		// /dev/tpmrm0 would.
		sw.Command("tpm2_flushcontext", "-l").Run()
	}
	return out.Bytes(), errb.String(), err == nil
}

func requireClevisTPM2(t *testing.T) {
	t.Helper()
	testenv.RequireCmd(t, "clevis")
	testenv.RequireCmd(t, "clevis-decrypt-tpm2")
	testenv.RequireCmd(t, "tpm2_unseal")
}

// TestTetherToClevis: what tether encrypts (CLI and pin), clevis decrypts
// on the same TPM.
func TestTetherToClevis(t *testing.T) {
	requireClevisTPM2(t)
	sw := tpmtest.Start(t)
	bin := testenv.TetherBin(t)
	for _, cfg := range []string{`{"pcr_bank":"sha256","pcr_ids":"16"}`, `{}`, `{"pcr_ids":"0,7,16"}`} {
		jwe, stderr, ok := run(t, sw, secret, bin, "encrypt", "tpm2", cfg)
		if !ok {
			t.Fatalf("tether encrypt tpm2 %s: %s", cfg, stderr)
		}
		got, stderr, ok := run(t, sw, jwe, "clevis", "decrypt")
		if !ok || !bytes.Equal(got, secret) {
			t.Fatalf("%s: clevis decrypt of tether's JWE = %q: %s", cfg, got, stderr)
		}
	}
	// After extending the bound PCR, clevis refuses too.
	jwe, stderr, ok := run(t, sw, secret, bin, "encrypt", "tpm2", `{"pcr_ids":"23"}`)
	if !ok {
		t.Fatal(stderr)
	}
	sw.Extend(t, "sha256", 23)
	if got, _, ok := run(t, sw, jwe, "clevis", "decrypt"); ok {
		t.Fatalf("clevis decrypted after PCR 23 changed: %q", got)
	}
}

// TestClevisToTether: what clevis encrypts, tether decrypts (the CLI, with
// TPM2TOOLS_TCTI), and tether names the PCR when it changed.
func TestClevisToTether(t *testing.T) {
	requireClevisTPM2(t)
	sw := tpmtest.Start(t)
	bin := testenv.TetherBin(t)
	jwes := map[string][]byte{}
	for _, cfg := range []string{`{"pcr_bank":"sha256","pcr_ids":"16"}`, `{}`, `{"pcr_bank":"sha256","pcr_ids":["7","16"]}`} {
		jwe, stderr, ok := run(t, sw, secret, "clevis", "encrypt", "tpm2", cfg)
		if !ok {
			t.Fatalf("clevis encrypt tpm2 %s: %s", cfg, stderr)
		}
		jwes[cfg] = jwe
		got, stderr, ok := run(t, sw, jwe, bin, "decrypt")
		if !ok || !bytes.Equal(got, secret) {
			t.Fatalf("%s: tether decrypt of clevis's JWE = %q: %s", cfg, got, stderr)
		}
	}
	// clevis's own default bank is sha1: tether honours what the JWE says.
	jwe, stderr, ok := run(t, sw, secret, "clevis", "encrypt", "tpm2", `{"pcr_ids":"16"}`)
	if !ok {
		t.Fatal(stderr)
	}
	j, err := jose.ParseCompact(string(jwe))
	if err != nil {
		t.Fatal(err)
	}
	if h := clevisHeader(t, j); h["pcr_bank"] != "sha1" {
		t.Logf("note: clevis's default bank here is %v", h["pcr_bank"])
	}
	if got, stderr, ok := run(t, sw, jwe, bin, "decrypt"); !ok || !bytes.Equal(got, secret) {
		t.Fatalf("tether decrypt of clevis's sha1 JWE = %q: %s", got, stderr)
	}

	sw.Extend(t, "sha256", 16)
	got, stderr, ok := run(t, sw, jwes[`{"pcr_bank":"sha256","pcr_ids":"16"}`], bin, "decrypt")
	if ok || len(got) != 0 {
		t.Fatalf("tether decrypted after sha256 PCR 16 changed: %q", got)
	}
	if !strings.Contains(stderr, "sha256 PCR 16 changed") {
		t.Errorf("stderr does not name the PCR: %s", stderr)
	}
	t.Logf("tether decrypt after extending PCR 16: %s", stderr)
	if got, stderr, ok := run(t, sw, jwes[`{}`], bin, "decrypt"); !ok || !bytes.Equal(got, secret) {
		t.Fatalf("no-policy JWE after PCR change = %q: %s", got, stderr)
	}
}

// TestSSSWithTang: sss {t:2, tpm2 + tang} decrypts only when the TPM is in
// its sealed state AND the server is reachable.
func TestSSSWithTang(t *testing.T) {
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI) // nested pins use the registered tpm2 pin
	t.Setenv(tpm.EnvTCTI, "")
	srv := testenv.StartServer(t, "")
	ctx := context.Background()
	o := pin.Options{Trust: true, Timeout: 2e9}
	cfg := `{"t":2,"pins":{"tpm2":{"pcr_ids":"16"},"tang":{"url":"` + srv.URL + `"}}}`
	j, err := pin.Encrypt(ctx, "sss", json.RawMessage(cfg), secret, o)
	if err != nil {
		t.Fatal(err)
	}
	if d := pin.Describe(j); !strings.Contains(d, "tpm2(sha256:16)") || !strings.Contains(d, "tang(") {
		t.Errorf("describe = %s", d)
	}
	if got, err := pin.Decrypt(ctx, j, o); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("both available: decrypt = %q, %v", got, err)
	}

	// Server down: the TPM alone is not enough.
	srv.Cmd.Process.Kill()
	srv.Cmd.Wait()
	if got, err := pin.Decrypt(ctx, j, o); err == nil {
		t.Fatalf("server down: decrypted %q", got)
	} else {
		t.Logf("server down: %v", err)
	}

	// Server back (same keys), PCR changed: the server alone is not enough.
	srv2 := testenv.StartServer(t, srv.Data)
	j2, err := pin.Encrypt(ctx, "sss", json.RawMessage(`{"t":2,"pins":{"tpm2":{"pcr_ids":"16"},"tang":{"url":"`+srv2.URL+`"}}}`), secret, o)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pin.Decrypt(ctx, j2, o); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("both available again: decrypt = %q, %v", got, err)
	}
	sw.Extend(t, "sha256", 16)
	_, err = pin.Decrypt(ctx, j2, o)
	if err == nil || !strings.Contains(err.Error(), "PCR 16 changed") {
		t.Fatalf("PCR changed: err = %v, want a PCR mismatch naming 16", err)
	}
	t.Logf("PCR changed: %v", err)

	// t=1 (TPM OR network): either one is enough.
	j3, err := pin.Encrypt(ctx, "sss", json.RawMessage(`{"t":1,"pins":{"tpm2":{"pcr_ids":"23"},"tang":{"url":"`+srv2.URL+`"}}}`), secret, o)
	if err != nil {
		t.Fatal(err)
	}
	srv2.Cmd.Process.Kill()
	srv2.Cmd.Wait()
	if got, err := pin.Decrypt(ctx, j3, o); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("t=1 with the server down: decrypt = %q, %v", got, err)
	}
}

// TestPCRDigestInterop: a secret sealed with pcr_digest to a predicted
// state, by tether and by clevis, is refused by both before that state and
// decrypted by both in it.
func TestPCRDigestInterop(t *testing.T) {
	requireClevisTPM2(t)
	sw := tpmtest.Start(t)
	bin := testenv.TetherBin(t)
	cur := pcrsNow(t, sw, "sha256", 7, 16)
	cfg := `{"pcr_bank":"sha256","pcr_ids":"7,16","pcr_digest":"` + b64url(cur[0], afterExtend(cur[1], 16)) + `"}`
	byTether, stderr, ok := run(t, sw, secret, bin, "encrypt", "tpm2", cfg)
	if !ok {
		t.Fatalf("tether encrypt tpm2 %s: %s", cfg, stderr)
	}
	byClevis, stderr, ok := run(t, sw, secret, "clevis", "encrypt", "tpm2", cfg)
	if !ok {
		t.Fatalf("clevis encrypt tpm2 %s: %s", cfg, stderr)
	}
	for _, c := range []struct {
		who string
		jwe []byte
	}{{"tether's", byTether}, {"clevis's", byClevis}} {
		if got, _, ok := run(t, sw, c.jwe, "clevis", "decrypt"); ok {
			t.Fatalf("clevis decrypted %s JWE before the predicted state: %q", c.who, got)
		}
		if got, stderr, ok := run(t, sw, c.jwe, bin, "decrypt"); ok {
			t.Fatalf("tether decrypted %s JWE before the predicted state: %q", c.who, got)
		} else if !strings.Contains(stderr, "PCRs 7,16 are not all in the state") {
			t.Errorf("tether decrypt of %s JWE before the predicted state: %s", c.who, stderr)
		}
	}
	sw.Extend(t, "sha256", 16)
	for _, c := range []struct {
		who string
		jwe []byte
	}{{"tether's", byTether}, {"clevis's", byClevis}} {
		if got, stderr, ok := run(t, sw, c.jwe, "clevis", "decrypt"); !ok || !bytes.Equal(got, secret) {
			t.Fatalf("clevis decrypt of %s JWE in the predicted state = %q: %s", c.who, got, stderr)
		}
		if got, stderr, ok := run(t, sw, c.jwe, bin, "decrypt"); !ok || !bytes.Equal(got, secret) {
			t.Fatalf("tether decrypt of %s JWE in the predicted state = %q: %s", c.who, got, stderr)
		}
	}
}
