package tpm2_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/tpm2"
)

// FuzzHeader feeds arbitrary clevis.tpm2 headers to Describe, ConfigOf and Decrypt
// (against a TPM that does not exist): they must fail cleanly, never panic.
func FuzzHeader(f *testing.F) {
	f.Add(`{"pin":"tpm2","tpm2":{"hash":"sha256","key":"ecc","jwk_pub":"AE4ACAAL","jwk_priv":"AJ4AIP","pcr_bank":"sha256","pcr_ids":"0,7"}}`)
	f.Add(`{"pin":"tpm2","tpm2":{"hash":"md5","key":"x","jwk_pub":"!","jwk_priv":"","pcr_ids":"99"}}`)
	f.Add(`{"pin":"tpm2","tpm2":[]}`)
	f.Add(`{"pin":"tpm2","tpm2":{"hash":"sha256","key":"ecc","jwk_pub":"AE4ACAAL","jwk_priv":"AJ4AIP","with_pin":true}}`)
	f.Add(`{"pin":"tpm2","tpm2":{"hash":"sha256","key":"ecc","jwk_pub":"AE4ACAAL","jwk_priv":"AJ4AIP","pcr_bank":"sha256",` +
		`"pcr_pubkey":"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE","pcr_signed_ids":"11","pcr_signatures":"/etc/tether/pcr-signatures.json"}}`)
	p := tpm2.Pin{TCTI: "device:/dev/no-such-tpm"}
	f.Fuzz(func(t *testing.T, clevis string) {
		if !json.Valid([]byte(clevis)) {
			return
		}
		j, err := jose.Encrypt(jose.Header{Alg: "dir", Clevis: json.RawMessage(clevis)}, make([]byte, 32), []byte("x"))
		if err != nil {
			return
		}
		_ = p.Describe(j)
		if cfg, err := p.ConfigOf(j); err == nil && !json.Valid(cfg) {
			t.Fatalf("ConfigOf wrote %q", cfg)
		}
		if _, err := p.Decrypt(context.Background(), j, pin.Options{}); err == nil {
			t.Fatal("decrypted without a TPM")
		}
	})
}

func FuzzConfig(f *testing.F) {
	for _, s := range []string{`{}`, `{"pcr_ids":"0,7"}`, `{"pcr_ids":[0,"7"]}`, `{"hash":"sha1","key":"rsa"}`, `null`, `[]`,
		`{"pcr_ids":"7","pcr_digest":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`, `{"pcr_ids":"7,8","pcr_digest":"AA=="}`, `{"with_pin":true,"pcr_ids":"7"}`} {
		f.Add(s)
	}
	p := tpm2.Pin{TCTI: "device:/dev/no-such-tpm"}
	f.Fuzz(func(t *testing.T, cfg string) {
		if _, err := p.Encrypt(context.Background(), json.RawMessage(cfg), []byte("x"), pin.Options{}); err == nil {
			t.Fatal("encrypted without a TPM")
		}
	})
}
