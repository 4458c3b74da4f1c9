package cli_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// smbConfig is an smb binding of a fresh key file on a real smbd, with the
// share password in a file.
func smbConfig(t *testing.T) (*testenv.SMBD, map[string]any) {
	t.Helper()
	s := testenv.StartSMBD(t)
	material := make([]byte, 64)
	rand.Read(material)
	s.WriteKey(t, "ha.key", material)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(s.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	return s, map[string]any{"server": "127.0.0.1", "port": s.Port, "share": s.Share, "path": "ha.key",
		"user": s.User, "password_file": pw, "attempts": 1}
}

func jsonOf(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSMBPlainPasswordHint: tether encrypt refuses to write the share
// password in the clear, and the command its hint names, given a real Tang
// server's URL, works; so does the opt-in it names, with a warning.
func TestSMBPlainPasswordHint(t *testing.T) {
	s, cfg := smbConfig(t)
	_, e, code := tether(t, nil, "disk key", "encrypt", "smb", jsonOf(t, cfg))
	if code != 1 || !strings.Contains(e, "tether: error: smb: the share password would be stored in the clear") {
		t.Fatalf("encrypt with the password in the clear: exit %d\n%s", code, e)
	}
	cmds := regexp.MustCompile(`(?m)^  tether encrypt smb '([^']*)'$`).FindAllStringSubmatch(e, -1)
	if len(cmds) != 2 {
		t.Fatalf("the hint names no commands:\n%s", e)
	}
	td := testenv.StartTangd(t)
	protected := strings.Replace(cmds[0][1], "http://YOUR-TANG-SERVER", td.URL, 1)
	jwe, e2, code := tether(t, nil, "disk key", "encrypt", "-y", "smb", protected)
	if code != 0 || strings.Contains(e2, "in the clear") {
		t.Fatalf("the hinted command %s: exit %d\n%s", protected, code, e2)
	}
	if strings.Contains(protectedHeader(t, jwe), s.Password) {
		t.Fatal("the password is in the header")
	}
	if got := mustTether(t, nil, jwe, "decrypt"); got != "disk key" {
		t.Fatalf("decrypt: %q", got)
	}
	jwe, e2, code = tether(t, nil, "disk key", "encrypt", "smb", cmds[1][1])
	if code != 0 || !strings.Contains(e2, "tether: warning: smb: the share password is stored in the clear") {
		t.Fatalf("the opt-in %s: exit %d\n%s", cmds[1][1], code, e2)
	}
	if !strings.Contains(protectedHeader(t, jwe), s.Password) {
		t.Fatal("opted in, the password is not in the header")
	}
}

// TestSMBPasswordProtectedByManaged protects the share password with the
// managed pin against a real tether server: revoking the device on the
// server withholds the password too, and says so.
func TestSMBPasswordProtectedByManaged(t *testing.T) {
	f := startManagedFixture(t)
	s, cfg := smbConfig(t)
	cfg["protect"] = map[string]any{"pin": "managed", "config": map[string]any{}}
	jwe := mustTether(t, f.devEnv, "disk key", "encrypt", "smb", jsonOf(t, cfg))
	if h := protectedHeader(t, jwe); strings.Contains(h, s.Password) || !strings.Contains(h, `"cred_jwe"`) {
		t.Fatalf("header: %s", h)
	}
	if got := mustTether(t, f.devEnv, jwe, "decrypt"); got != "disk key" {
		t.Fatalf("decrypt: %q", got)
	}
	var devs []struct{ ID string }
	json.Unmarshal([]byte(mustTether(t, f.adminEnv, "", "admin", "device", "list", "--json")), &devs)
	if len(devs) != 1 {
		t.Fatalf("devices: %+v", devs)
	}
	mustTether(t, f.adminEnv, "", "admin", "device", "revoke", "--yes", "--reason", "stolen", devs[0].ID)
	_, e, code := tether(t, f.devEnv, jwe, "decrypt")
	if code == 0 || !strings.Contains(e, "unlock credentials") || !strings.Contains(e, "revoked") {
		t.Fatalf("decrypt after revoking the device: exit %d\n%s", code, e)
	}
}

func protectedHeader(t *testing.T, compact string) string {
	t.Helper()
	p, _, _ := strings.Cut(compact, ".")
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		t.Fatalf("JWE %q: %v", compact, err)
	}
	return string(b)
}
