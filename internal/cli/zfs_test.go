package cli_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestZFSKeyByCurl fetches dataset keys with curl exactly as ZFS's libcurl
// does for keylocation=https:// (client certificate and key files, the
// server certificate as CA file): an enrolled device gets a stable raw
// 32-byte key per dataset; an unenrolled key, a revoked device and a
// device in lockdown get nothing.
func TestZFSKeyByCurl(t *testing.T) {
	curl := testenv.RequireCmd(t, "curl")
	data := t.TempDir()
	maddr := testenv.FreePort(t)
	testenv.StartServer(t, data, "--managed-listen", maddr, "--managed-hostname", "127.0.0.1", "--curve", "P-256")
	adminEnv := []string{"TETHER_ADMIN_CONFIG=" + filepath.Join(data, "admin.json")}

	enroll := func() (string, []string) {
		tok := strings.TrimSpace(mustTether(t, adminEnv, "", "admin", "token", "create"))
		state := t.TempDir()
		env := []string{"TETHER_DEVICE_DIR=" + state}
		id := strings.TrimSpace(mustTether(t, env, tok, "enroll", "--server", "https://"+maddr, "--token-file", "-", "--key-store", "file"))
		out := mustTether(t, env, "", "zfs", "setup", "tank/secret")
		if !strings.Contains(out, "keylocation=https://"+maddr+"/v1/zfs/tank/secret") {
			t.Fatalf("zfs setup output:\n%s", out)
		}
		return id, []string{"--cacert", filepath.Join(state, "zfs-server.crt"),
			"--cert", filepath.Join(state, "zfs-client.crt"), "--key", filepath.Join(state, "identity.key")}
	}
	fetch := func(auth []string, dataset string) ([]byte, error) {
		args := append([]string{"-sS", "--fail", "https://" + maddr + "/v1/zfs/" + dataset}, auth...)
		return exec.Command(curl, args...).Output()
	}

	id, auth := enroll()
	k1, err := fetch(auth, "tank/secret")
	if err != nil || len(k1) != 32 {
		t.Fatalf("curl: %d bytes, %v", len(k1), err)
	}
	if k2, _ := fetch(auth, "tank/secret"); string(k2) != string(k1) {
		t.Fatal("the same dataset gave a different key")
	}
	if k3, _ := fetch(auth, "tank/other"); len(k3) != 32 || string(k3) == string(k1) {
		t.Fatal("another dataset gave the same key (or none)")
	}
	_, auth2 := enroll()
	if k4, _ := fetch(auth2, "tank/secret"); len(k4) != 32 || string(k4) == string(k1) {
		t.Fatal("another device got the same key for the dataset")
	}

	// A client certificate whose key is not enrolled gets nothing.
	stranger := t.TempDir()
	strangerAuth := []string{"--cacert", auth[1], "--cert", filepath.Join(stranger, "c.pem"), "--key", filepath.Join(stranger, "k.pem")}
	gen := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", strangerAuth[5], "-out", strangerAuth[3], "-subj", "/CN=stranger", "-days", "1")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	if out, err := fetch(strangerAuth, "tank/secret"); err == nil || len(out) != 0 {
		t.Fatalf("unenrolled certificate got %d bytes", len(out))
	}
	if out, err := fetch(auth[:2], "tank/secret"); err == nil || len(out) != 0 {
		t.Fatalf("no client certificate got %d bytes", len(out))
	}

	mustTether(t, adminEnv, "", "admin", "lockdown", "on")
	if out, err := fetch(auth, "tank/secret"); err == nil || len(out) != 0 {
		t.Fatal("lockdown: got a key")
	}
	mustTether(t, adminEnv, "", "admin", "lockdown", "off")
	if k, _ := fetch(auth, "tank/secret"); string(k) != string(k1) {
		t.Fatal("after lockdown off: no key")
	}

	mustTether(t, adminEnv, "", "admin", "device", "revoke", "--yes", id)
	if out, err := fetch(auth, "tank/secret"); err == nil || len(out) != 0 {
		t.Fatal("revoked device got a key")
	}
	if out := mustTether(t, adminEnv, "", "admin", "audit", "export"); !strings.Contains(out, "zfs-key") {
		t.Fatal("zfs key fetches are not in the audit log")
	}
}
