package interop

import (
	"crypto/rand"
	"encoding/json"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// These tests bind LUKS2 images with the pins beyond tang and sss — smb,
// tpm2 — through the real tether binary and cryptsetup, and check that the
// binding unlocks, that the keyslot accepts what the binding yields, and
// that taking the pin's source away locks the volume again.

const oldPass = "old passphrase"

// luksImage formats a small LUKS2 image with one PBKDF2 keyslot (fast)
// opened by oldPass.
func luksImage(t *testing.T) string {
	t.Helper()
	cs := testenv.RequireCmd(t, "cryptsetup")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 20<<20); err != nil {
		t.Fatal(err)
	}
	_, e, code := testenv.Run(t, []byte(oldPass), cs, "luksFormat", "--batch-mode", "--type", "luks2",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	if code != 0 {
		t.Fatalf("luksFormat: %s", e)
	}
	return img
}

// luksEnv keeps tether's LUKS state (header backups, journals) per test.
func luksEnv(t *testing.T) []string {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	return []string{"TETHER_LUKS_STATE_DIR=" + dir}
}

func runEnv(t *testing.T, env []string, stdin []byte, args ...string) ([]byte, []byte, int) {
	t.Helper()
	cmd := exec.Command(testenv.TetherBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(string(stdin))
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return []byte(o.String()), []byte(e.String()), code
}

func mustEnv(t *testing.T, env []string, stdin []byte, args ...string) []byte {
	t.Helper()
	o, e, code := runEnv(t, env, stdin, args...)
	if code != 0 {
		t.Fatalf("tether %s: exit %d\n%s", strings.Join(args, " "), code, e)
	}
	return o
}

var slotLine = regexp.MustCompile(`(?m)^(\d+): (\w+)\b`)

// boundSlot returns the keyslot and pin of the only binding.
func boundSlot(t *testing.T, env []string, img string) (string, string) {
	t.Helper()
	out := mustEnv(t, env, nil, "luks", "list", "-d", img)
	m := slotLine.FindAllStringSubmatch(string(out), -1)
	if len(m) != 1 {
		t.Fatalf("luks list: want one binding:\n%s", out)
	}
	return m[0][1], m[0][2]
}

// checkSlot verifies with cryptsetup that pass opens keyslot slot.
func checkSlot(t *testing.T, img, slot string, pass []byte) {
	t.Helper()
	_, e, code := testenv.Run(t, pass, testenv.RequireCmd(t, "cryptsetup"), "open", "--test-passphrase",
		"--key-slot", slot, "--key-file", "-", img)
	if code != 0 {
		t.Fatalf("keyslot %s does not accept the binding's passphrase: %s", slot, e)
	}
}

func TestLUKSBindSMB(t *testing.T) {
	s := testenv.StartSMBD(t)
	material := make([]byte, 64)
	rand.Read(material)
	s.WriteKey(t, "ha.key", material)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(s.Password), 0o600)
	cfg := map[string]any{"server": "127.0.0.1", "port": s.Port, "share": s.Share,
		"path": "ha.key", "user": s.User, "password_file": pw, "attempts": 1}

	img := luksImage(t)
	env := luksEnv(t)
	before := luksDump(t, img)
	// The password in the clear is refused, the header is left as it was,
	// and the hint names the bind command with the password protected.
	plain, _ := json.Marshal(cfg)
	_, e, code := runEnv(t, env, []byte(oldPass+"\n"), "luks", "bind", "-d", img, "-k", "-", "smb", string(plain))
	if code != 1 || !strings.Contains(string(e), "the share password would be stored in the clear") ||
		!strings.Contains(string(e), "tether luks bind -d "+img+" -k - smb '") {
		t.Fatalf("bind with the password in the clear: exit %d\n%s", code, e)
	}
	if after := luksDump(t, img); after != before {
		t.Fatalf("a refused bind changed the header:\n%s", after)
	}

	// Protected by a stock tangd: the header holds no password.
	td := testenv.StartTangd(t)
	cfg["protect"] = map[string]any{"pin": "tang", "config": map[string]any{"url": td.URL}}
	protected, _ := json.Marshal(cfg)
	mustEnv(t, env, []byte(oldPass+"\n"), "luks", "bind", "-d", img, "-k", "-", "-y", "smb", string(protected))
	slot, pinName := boundSlot(t, env, img)
	if pinName != "smb" {
		t.Fatalf("luks list shows pin %q", pinName)
	}
	if dump := luksDump(t, img); strings.Contains(dump, s.Password) {
		t.Fatal("the share password is in the LUKS header")
	}
	// The list says where the key lives and what guards the password,
	// and never the password.
	list := string(mustEnv(t, env, nil, "luks", "list", "-d", img))
	if !strings.Contains(list, `smb(\\127.0.0.1\`+s.Share+`\ha.key, credentials protected by tang(`+td.URL+`))`) || strings.Contains(list, s.Password) {
		t.Fatalf("luks list of an smb binding:\n%s", list)
	}
	pass := mustEnv(t, env, nil, "luks", "pass", "-d", img, "-s", slot)
	checkSlot(t, img, slot, pass)
	mustEnv(t, env, nil, "luks", "unlock", "-d", img, "--test")

	// Deleting the key file on the share revokes: the volume stays locked,
	// and the old passphrase still opens it.
	os.Remove(filepath.Join(s.Dir, "ha.key"))
	_, e, code = runEnv(t, env, nil, "luks", "unlock", "-d", img, "--test", "--timeout", "3s")
	if code == 0 || !strings.Contains(string(e), "revoked") {
		t.Fatalf("unlock after deleting the key file: exit %d\n%s", code, e)
	}
	checkSlot(t, img, "0", []byte(oldPass))
}

// luksDump is the image's LUKS2 JSON metadata, tokens included.
func luksDump(t *testing.T, img string) string {
	t.Helper()
	out, e, code := testenv.Run(t, nil, testenv.RequireCmd(t, "cryptsetup"), "luksDump", "--dump-json-metadata", img)
	if code != 0 {
		t.Fatalf("luksDump: %s", e)
	}
	return string(out)
}

func TestLUKSBindTPM2(t *testing.T) {
	sw := tpmtest.Start(t)
	env := append(luksEnv(t), "TPM2TOOLS_TCTI="+sw.TCTI)
	img := luksImage(t)
	mustEnv(t, env, []byte(oldPass+"\n"), "luks", "bind", "-d", img, "-k", "-", "tpm2", `{"pcr_bank":"sha256","pcr_ids":"16"}`)
	slot, pinName := boundSlot(t, env, img)
	if pinName != "tpm2" {
		t.Fatalf("luks list shows pin %q", pinName)
	}
	pass := mustEnv(t, env, nil, "luks", "pass", "-d", img, "-s", slot)
	checkSlot(t, img, slot, pass)

	// The token is clevis's own: stock clevis reads the binding.
	cl := exec.Command(testenv.RequireCmd(t, "clevis"), "luks", "pass", "-d", img, "-s", slot)
	cl.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sw.TCTI)
	cpass, err := cl.Output()
	if err != nil || string(cpass) != string(pass) {
		t.Fatalf("clevis luks pass: %v (%d bytes, tether gave %d)", err, len(cpass), len(pass))
	}
	flush := sw.Command("tpm2_flushcontext", "-l")
	flush.Run() // clevis leaves a session loaded (swtpm has no resource manager)

	// A changed boot chain (PCR 16 extended) keeps the volume locked.
	sw.Extend(t, "sha256", 16)
	_, e, code := runEnv(t, env, nil, "luks", "unlock", "-d", img, "--test", "--timeout", "5s")
	if code == 0 || !strings.Contains(string(e), "PCR") {
		t.Fatalf("unlock after extending PCR 16: exit %d\n%s", code, e)
	}
	checkSlot(t, img, "0", []byte(oldPass))

}
