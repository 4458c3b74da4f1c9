package luks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/tpm2"
)

// tpm2Parts returns the tpm2 JWEs of keyslot slot's binding: the binding
// itself, or its sss children (recursively).
func tpm2Parts(t *testing.T, img string, slot int) []*jose.JWE {
	t.Helper()
	for _, b := range luks.Bindings(header(t, img)) {
		if b.Slot == slot {
			return tpm2Of(t, b.JWE)
		}
	}
	t.Fatalf("no binding for keyslot %d", slot)
	return nil
}

func tpm2Of(t *testing.T, j *jose.JWE) []*jose.JWE {
	name, err := j.Header.Pin()
	if err != nil {
		t.Fatal(err)
	}
	switch name {
	case "tpm2":
		return []*jose.JWE{j}
	case "sss":
		var ch struct {
			SSS struct {
				JWE []string `json:"jwe"`
			} `json:"sss"`
		}
		if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil {
			t.Fatal(err)
		}
		var out []*jose.JWE
		for _, c := range ch.SSS.JWE {
			cj, err := jose.ParseCompact(c)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, tpm2Of(t, cj)...)
		}
		return out
	}
	return nil
}

// unsealsNow reports whether every tpm2 part of keyslot slot's binding
// unseals with the TPM's current PCR values (and PIN), on its own: no
// network involved.
func unsealsNow(t *testing.T, sw *tpmtest.SWTPM, img string, slot int, pinText string) error {
	t.Helper()
	parts := tpm2Parts(t, img, slot)
	if len(parts) == 0 {
		t.Fatalf("keyslot %d has no tpm2 part", slot)
	}
	o := pin.Options{PIN: func(string, bool) ([]byte, error) { return []byte(pinText), nil }}
	for _, j := range parts {
		if _, err := (tpm2.Pin{TCTI: sw.TCTI}).Decrypt(context.Background(), j, o); err != nil {
			return err
		}
	}
	return nil
}

// TestRegenResealsTPM2: after a PCR the bindings were sealed to changed
// (a "kernel update"), regen seals the tpm2 parts again to the values of
// now: a top-level tpm2 binding (which needs the passphrase, its own
// decryption failing), and a tpm2 part nested in sss (the tang part
// decrypts it). Afterwards each tpm2 part unseals by itself.
func TestRegenResealsTPM2(t *testing.T) {
	g := newRig(t)
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI) // for every tether command of the test
	t.Setenv(tpm.EnvTCTI, "")
	img := g.image("20M")
	cfg := fmt.Sprintf(`{"t":1,"pins":{"tang":[{"url":%q}],"tpm2":[{"pcr_ids":"16"}]}}`, g.tang.URL)
	g.ok([]byte(testPass), "luks", "bind", "-d", img, "-k", "-", "-y", "sss", cfg)
	sssSlot := g.newestBinding(img)
	g.ok([]byte(testPass), "luks", "bind", "-d", img, "-k", "-", "tpm2", `{"pcr_ids":"16"}`)
	tpmSlot := g.newestBinding(img)
	for _, s := range []int{sssSlot, tpmSlot} {
		if err := unsealsNow(t, sw, img, s, ""); err != nil {
			t.Fatalf("keyslot %d before the update: %v", s, err)
		}
	}

	sw.Extend(t, "sha256", 16)
	var pm *tpm.PCRMismatchError
	for _, s := range []int{sssSlot, tpmSlot} {
		if err := unsealsNow(t, sw, img, s, ""); !errors.As(err, &pm) {
			t.Fatalf("keyslot %d after the update: err = %v, want a PCR mismatch", s, err)
		}
	}

	g.ok(nil, "luks", "regen", "-d", img, "-s", strconv.Itoa(sssSlot), "-y")
	newSSS := g.newestBinding(img)
	if err := unsealsNow(t, sw, img, newSSS, ""); err != nil {
		t.Fatalf("the tpm2 part nested in sss after regen: %v", err)
	}

	res := g.tether(nil, nil, "luks", "regen", "-d", img, "-s", strconv.Itoa(tpmSlot))
	if res.code == 0 || !strings.Contains(res.stderr, "sha256 PCR 16 changed") || !strings.Contains(res.stderr, "-k") {
		t.Fatalf("regen of the tpm2 binding without a passphrase: exit %d\n%s", res.code, res.stderr)
	}
	g.ok([]byte(testPass), "luks", "regen", "-d", img, "-s", strconv.Itoa(tpmSlot), "-k", "-")
	newTPM := g.newestBinding(img)
	if err := unsealsNow(t, sw, img, newTPM, ""); err != nil {
		t.Fatalf("the tpm2 binding after regen: %v", err)
	}
	if list := g.ok(nil, "luks", "list", "-d", img); strings.Count(list, `"pcr_ids":"16"`) != 2 {
		t.Errorf("list after regen:\n%s", list)
	}
	g.checkClean(img)
}

// TestRegenTPM2WithPIN: a tpm2 part made with_pin keeps its PIN through
// regen (asked once, to decrypt the old binding), at the top level and
// nested in sss; a wrong PIN stops regen before anything changes, even
// with a passphrase given.
func TestRegenTPM2WithPIN(t *testing.T) {
	g := newRig(t)
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI)
	t.Setenv(tpm.EnvTCTI, "")
	// Room for the wrong PINs below (swtpm allows 3 by default).
	if out, err := sw.Command("tpm2_dictionarylockout", "--setup-parameters", "--max-tries=10",
		"--recovery-time=600", "--lockout-recovery-time=600").CombinedOutput(); err != nil {
		t.Fatalf("tpm2_dictionarylockout: %v\n%s", err, out)
	}
	dir := t.TempDir()
	right, wrong := filepath.Join(dir, "pin"), filepath.Join(dir, "wrong")
	os.WriteFile(right, []byte("4711\n"), 0o600)
	os.WriteFile(wrong, []byte("4712\n"), 0o600)
	img := g.image("20M")
	g.ok([]byte(testPass), "luks", "bind", "-d", img, "-k", "-", "--pin-file", right, "tpm2", `{"pcr_ids":"16","with_pin":true}`)
	slot := g.newestBinding(img)
	sssCfg := fmt.Sprintf(`{"t":1,"pins":{"tang":[{"url":%q}],"tpm2":[{"pcr_ids":"16","with_pin":true}]}}`, g.tang.URL)
	g.ok([]byte(testPass), "luks", "bind", "-d", img, "-k", "-", "-y", "--pin-file", right, "sss", sssCfg)
	sssSlot := g.newestBinding(img)
	if res := g.tether(nil, nil, "luks", "unlock", "-d", img, "--test", "--pin-file", right); res.code != 0 {
		t.Fatalf("unlock --test with the PIN: %d %s", res.code, res.stderr)
	}

	// A wrong PIN: regen refuses even with the passphrase, changing nothing.
	res := g.tether([]byte(testPass), nil, "luks", "regen", "-d", img, "-s", strconv.Itoa(slot), "-k", "-", "--pin-file", wrong)
	if res.code == 0 || !strings.Contains(res.stderr, "wrong PIN") {
		t.Fatalf("regen with a wrong PIN: %d %s", res.code, res.stderr)
	}
	if len(luks.Bindings(header(t, img))) != 2 || g.newestBinding(img) != sssSlot {
		t.Fatal("regen with a wrong PIN changed the bindings")
	}

	sw.Extend(t, "sha256", 16)
	g.ok([]byte(testPass), "luks", "regen", "-d", img, "-s", strconv.Itoa(slot), "-k", "-", "--pin-file", right)
	slot = g.newestBinding(img)
	g.ok(nil, "luks", "regen", "-d", img, "-s", strconv.Itoa(sssSlot), "--pin-file", right)
	sssSlot = g.newestBinding(img)
	for _, s := range []int{slot, sssSlot} {
		if err := unsealsNow(t, sw, img, s, "4711"); err != nil {
			t.Fatalf("keyslot %d after regen, with the PIN: %v", s, err)
		}
		if err := unsealsNow(t, sw, img, s, "4712"); !errors.Is(err, pin.ErrWrongPIN) {
			t.Fatalf("keyslot %d after regen, with another PIN: err = %v, want a wrong PIN", s, err)
		}
		pass := g.tether(nil, nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(s), "--pin-file", right)
		if pass.code != 0 || !g.opens(img, s, []byte(pass.stdout)) {
			t.Fatalf("luks pass --pin-file of keyslot %d after regen: %d %s", s, pass.code, pass.stderr)
		}
	}
	if list := g.ok(nil, "luks", "list", "-d", img); strings.Count(list, `"with_pin":true`) != 2 {
		t.Errorf("list after regen:\n%s", list)
	}
}
