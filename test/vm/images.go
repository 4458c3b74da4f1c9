package vm

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
)

// MakeLUKSImage makes a 64 MiB LUKS2 image file holding an ext4
// filesystem with files (name → content), encrypted in place on the host
// (no device-mapper needed) with one PBKDF2 keyslot (0) for passphrase.
// PBKDF2 because argon2 takes about a minute under emulation.
func MakeLUKSImage(t testing.TB, files map[string]string, passphrase string) string {
	t.Helper()
	testenv.RequireCmd(t, "mkfs.ext4")
	cs := testenv.RequireCmd(t, "cryptsetup")
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	if err := os.Mkdir(content, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(content, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	mustRun(t, nil, "mkfs.ext4", "-q", "-F", "-d", content, img, "32M")
	mustRun(t, []byte(passphrase), cs, "reencrypt", "--encrypt", "--type", "luks2", "--batch-mode",
		"--reduce-device-size", "32M", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
		"--key-file", "-", img)
	return img
}

// FetchAdv returns a server's advertisement (the JWS as JSON).
func FetchAdv(t testing.TB, url string) json.RawMessage {
	t.Helper()
	resp, err := http.Get(url + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s/adv: %d %v", url, resp.StatusCode, err)
	}
	return data
}

// BindTang binds img the way clevis luks bind does — a new random
// passphrase in a PBKDF2 keyslot, encrypted with the tang pin, stored as
// a clevis LUKS2 token — with guestURL as the server's URL and adv as its
// trusted advertisement, so the host needs no route to guestURL (the
// guest's 10.0.2.2 is the host's loopback). It returns the keyslot.
func BindTang(t testing.TB, tether, img, passphrase, guestURL string, adv json.RawMessage, slot int) int {
	t.Helper()
	cs := testenv.RequireCmd(t, "cryptsetup")
	raw := make([]byte, 40)
	rand.Read(raw)
	newKey := base64.RawURLEncoding.EncodeToString(raw)
	keyFile := filepath.Join(t.TempDir(), "newkey")
	if err := os.WriteFile(keyFile, []byte(newKey), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, []byte(passphrase), cs, "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-slot", strconv.Itoa(slot), "--key-file", "-", img, keyFile)
	os.Remove(keyFile)
	cfg, _ := json.Marshal(map[string]any{"url": guestURL, "adv": adv})
	out := mustRun(t, []byte(newKey), tether, "encrypt", "tang", string(cfg))
	j, err := jose.ParseCompact(string(out))
	if err != nil {
		t.Fatalf("parse JWE from tether encrypt: %v", err)
	}
	tok, _ := json.Marshal(map[string]any{
		"type":     "clevis",
		"keyslots": []string{strconv.Itoa(slot)},
		"jwe":      json.RawMessage(j.Flattened()),
	})
	mustRun(t, tok, cs, "token", "import", img)
	return slot
}

func mustRun(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	out, errOut, code := testenv.Run(t, stdin, name, args...)
	if code != 0 {
		t.Fatalf("%s %v: exit %d: %s", name, args, code, errOut)
	}
	return out
}
