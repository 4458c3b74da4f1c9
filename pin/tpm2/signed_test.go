package tpm2_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/tpm2"
)

// TestSignedPCRPolicyCLI: the journey of a signed policy with the tether
// binary and a key made by openssl, as docs/TPM2.md tells it. A secret
// sealed to PCR 23 as it is and to PCR 16 as the key signs it: it does not
// decrypt before a signature exists; it does after "tether tpm sign-pcrs";
// after PCR 16 changes (an update) it does not, until the new value is
// signed — no reseal; a value signed ahead (--pcr-digest) works once
// reached; the literal PCR 23 still binds.
func TestSignedPCRPolicyCLI(t *testing.T) {
	testenv.RequireCmd(t, "openssl")
	sw := tpmtest.Start(t)
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	key, pub, sigs := filepath.Join(dir, "policy.pem"), filepath.Join(dir, "policy.pub.pem"), filepath.Join(dir, "sigs.json")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key},
		{"pkey", "-in", key, "-pubout", "-out", pub},
	} {
		if out, err := sw.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	cfg := `{"pcr_ids":"23","pcr_pubkey":"` + pub + `","pcr_signed_ids":"16","pcr_signatures":"` + sigs + `"}`
	jwe, stderr, ok := run(t, sw, secret, bin, "encrypt", "tpm2", cfg)
	if !ok {
		t.Fatalf("encrypt %s: %s", cfg, stderr)
	}
	j, err := jose.ParseCompact(string(jwe))
	if err != nil {
		t.Fatal(err)
	}
	if d := pin.Describe(j); d != "tpm2(sha256:23+signed sha256:16)" {
		t.Errorf("describe = %s", d)
	}
	decrypts := func(when string) {
		t.Helper()
		if got, stderr, ok := run(t, sw, jwe, bin, "decrypt"); !ok || !bytes.Equal(got, secret) {
			t.Fatalf("%s: decrypt = %q: %s", when, got, stderr)
		}
	}
	refused := func(when, want string) {
		t.Helper()
		got, stderr, ok := run(t, sw, jwe, bin, "decrypt")
		if ok || len(got) != 0 || !strings.Contains(stderr, want) {
			t.Fatalf("%s: decrypt = %q, %v: %s (want %q)", when, got, ok, stderr, want)
		}
		t.Logf("%s: %s", when, strings.TrimSpace(stderr))
	}
	sign := func(extra ...string) {
		t.Helper()
		args := append([]string{"tpm", "sign-pcrs", "--key", key, "--pcr-ids", "16", "--out", sigs}, extra...)
		if _, stderr, ok := run(t, sw, nil, bin, args...); !ok {
			t.Fatalf("tether %v: %s", args, stderr)
		}
	}

	refused("no signature file yet", "no signature in "+sigs)
	sign()
	decrypts("signed")
	if fi, err := os.Stat(sigs); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("signature file: %v, %v", fi, err)
	}

	sw.Extend(t, "sha256", 16) // the update
	refused("after the update, before the new signature", "no signature in "+sigs)
	sign()
	decrypts("new value signed, nothing resealed")

	// The key sealed by another pin (here the TPM itself, without PCRs; an
	// owner would use tang or sss): sign-pcrs decrypts it in memory.
	plainKey, _ := os.ReadFile(key)
	sealedKey, stderr, ok := run(t, sw, plainKey, bin, "encrypt", "tpm2", "{}")
	if !ok {
		t.Fatalf("seal the key: %s", stderr)
	}
	sealed := filepath.Join(dir, "policy.pem.jwe")
	os.WriteFile(sealed, sealedKey, 0o600)
	sw.Extend(t, "sha256", 16)
	refused("after another update", "no signature in "+sigs)
	if _, stderr, ok := run(t, sw, nil, bin, "tpm", "sign-pcrs", "--key", sealed, "--pcr-ids", "16", "--out", sigs); !ok {
		t.Fatalf("sign with the sealed key: %s", stderr)
	}
	decrypts("signed with the key sealed by another pin")

	// Signed ahead: the value PCR 16 will have after the next extend.
	cur := pcrsNow(t, sw, "sha256", 16)
	sign("--pcr-digest", b64url(afterExtend(cur[0], 16)))
	sw.Extend(t, "sha256", 16)
	decrypts("value signed ahead, reached")
	data, _ := os.ReadFile(sigs)
	if n := strings.Count(string(data), `"sig"`); n != 4 {
		t.Errorf("the signature file holds %d signatures, want 4:\n%s", n, data)
	}

	// A state the key never signed: refused, also by a file full of
	// signatures by another key.
	sw.Extend(t, "sha256", 16)
	refused("unsigned state", "no signature in "+sigs)
	other := filepath.Join(dir, "other.pem")
	if out, err := sw.Command("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", other).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	if _, stderr, ok := run(t, sw, nil, bin, "tpm", "sign-pcrs", "--key", other, "--pcr-ids", "16", "--out", sigs); !ok {
		t.Fatal(stderr)
	}
	refused("signed by another key", "no signature in "+sigs)
	sign()
	decrypts("signed again")

	// regen's rebuilt configuration seals to the same key and file.
	name, rcfg, err := pin.ConfigOf(j)
	if err != nil || name != "tpm2" {
		t.Fatalf("ConfigOf: %s %s %v", name, rcfg, err)
	}
	p := tpm2.Pin{TCTI: sw.TCTI}
	j2, err := p.Encrypt(context.Background(), rcfg, secret, pin.Options{})
	if err != nil {
		t.Fatalf("encrypt with the rebuilt configuration %s: %v", rcfg, err)
	}
	if got, err := p.Decrypt(context.Background(), j2, pin.Options{}); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("rebuilt configuration: decrypt = %q, %v", got, err)
	}

	// The literal PCR 23 binds as before: no signature helps.
	sw.Extend(t, "sha256", 23)
	refused("literal PCR 23 changed", "sha256 PCR 23 changed")

	// clevis does not know signed policies: its unseal fails.
	if _, err := os.Stat("/usr/bin/clevis-decrypt-tpm2"); err == nil {
		if got, _, ok := run(t, sw, jwe, "clevis", "decrypt"); ok {
			t.Errorf("clevis decrypted a signed-policy JWE: %q", got)
		}
	}
}

func TestSignedPolicyBadConfig(t *testing.T) {
	dir := t.TempDir()
	notKey := filepath.Join(dir, "x.pem")
	os.WriteFile(notKey, []byte("hello"), 0o644)
	p := tpm2.Pin{TCTI: "device:/dev/no-such-tpm"}
	for cfg, want := range map[string]string{
		`{"pcr_pubkey":"/x.pem"}`:                                      `needs "pcr_signed_ids"`,
		`{"pcr_signed_ids":"11"}`:                                      `need "pcr_pubkey"`,
		`{"pcr_pubkey":"` + notKey + `","pcr_signed_ids":"11"}`:        `not a PEM public key`,
		`{"pcr_pubkey":"/no/such.pem","pcr_signed_ids":"11"}`:          `read the policy public key`,
		`{"pcr_pubkey":"/x.pem","pcr_signed_ids":"11","hash":"sha1"}`:  `"hash":"sha256"`,
		`{"pcr_pubkey":"/x.pem","pcr_signed_ids":"11","pcr_ids":"11"}`: `in both`,
		`{"pcr_pubkey":"/x.pem","pcr_signed_ids":"x"}`:                 `"pcr_signed_ids"`,
	} {
		_, err := p.Encrypt(context.Background(), json.RawMessage(cfg), secret, pin.Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to mention %s", cfg, err, want)
		}
	}
}

// TestSignPCRsUsage: tether tpm sign-pcrs refuses what it cannot sign with,
// before touching the signature file.
func TestSignPCRsUsage(t *testing.T) {
	testenv.RequireCmd(t, "openssl")
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	rsa, ec := filepath.Join(dir, "rsa.pem"), filepath.Join(dir, "ec.pem")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa},
		{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ec},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"type":"something else"}`), 0o644)
	thirtyTwo := b64url(make([]byte, 32))
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--pcr-ids", "11"}, 2, "--key"},
		{[]string{"--key", ec}, 2, "--pcr-ids"},
		{[]string{"--key", ec, "--pcr-ids", "x"}, 2, "--pcr-ids"},
		{[]string{"--key", rsa, "--pcr-ids", "11", "--pcr-digest", thirtyTwo}, 1, "not an ECDSA P-256 key"},
		{[]string{"--key", ec, "--pcr-ids", "11,12", "--pcr-digest", thirtyTwo}, 2, "32 bytes, want 64"},
		{[]string{"--key", ec, "--pcr-ids", "11", "--pcr-digest", thirtyTwo, "--out", bad}, 1, "move it away"},
	} {
		_, stderr, code := testenv.Run(t, nil, bin, append([]string{"tpm", "sign-pcrs"}, c.args...)...)
		if code != c.code || !strings.Contains(string(stderr), c.want) {
			t.Errorf("%v: exit %d: %s (want %d, %q)", c.args, code, stderr, c.code, c.want)
		}
	}
	if data, _ := os.ReadFile(bad); string(data) != `{"type":"something else"}` {
		t.Errorf("a refused signature changed the file: %s", data)
	}
	// Values given, no TPM needed: a valid file on stdout.
	out, stderr, code := testenv.Run(t, nil, bin, "tpm", "sign-pcrs", "--key", ec, "--pcr-ids", "11", "--pcr-digest", thirtyTwo)
	if code != 0 || !strings.Contains(string(out), `"type": "tether-pcr-signatures-v1"`) {
		t.Fatalf("sign-pcrs to stdout: exit %d %s\n%s", code, stderr, out)
	}
}
