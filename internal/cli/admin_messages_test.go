package cli_test

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// TestHelpOfGroupsAndPins: the manuals say what the commands take.
func TestHelpOfGroupsAndPins(t *testing.T) {
	for _, args := range [][]string{{"admin", "--help"}, {"admin", "-h"}, {"help", "admin"}, {"admin", "device", "--help"}} {
		out, e, code := runCLI("", args...)
		if code != 0 || e != "" || !strings.Contains(out, "tether admin device revoke") {
			t.Errorf("tether %s: exit %d, stderr %q\n%s", strings.Join(args, " "), code, e, out)
		}
	}
	if out, _, _ := runCLI("", "encrypt", "--help"); !strings.Contains(out, "\n  managed ") || !strings.Contains(out, "tether enroll") {
		t.Errorf("tether encrypt --help does not list the managed pin:\n%s", out)
	}
	if out, _, _ := runCLI("", "admin", "device", "revoke", "--help"); !strings.Contains(out, "Usage: tether admin device revoke [--reason TEXT] --yes ID") {
		t.Errorf("revoke's usage does not show the required --yes:\n%s", out)
	}
	if out, _, _ := runCLI("", "admin", "unlock", "list", "--help"); !strings.Contains(out, "--json") {
		t.Errorf("unlock list's usage has no --json:\n%s", out)
	}
	// Through the tether binary, which hands admin to tether-server.
	if out, e, code := tether(t, nil, "", "admin", "--help"); code != 0 || !strings.Contains(out, "tether admin unlock approve") {
		t.Errorf("tether admin --help (binary): exit %d\n%s%s", code, out, e)
	}
}

// TestUnlockApprovalAndRevokedAudit: unlock list --json shows the waiting
// unlock, approve says what it did; a revoked device's attempt is audited
// under its device ID and its error says "revoked".
func TestUnlockApprovalAndRevokedAudit(t *testing.T) {
	f := startManagedFixture(t)
	var devs []struct{ ID string }
	json.Unmarshal([]byte(mustTether(t, f.adminEnv, "", "admin", "device", "list", "--json")), &devs)
	if len(devs) != 1 {
		t.Fatalf("devices: %+v", devs)
	}
	id := devs[0].ID
	mustTether(t, f.adminEnv, "", "admin", "device", "policy", id, `{"approval":true}`)
	dec := exec.Command(testenv.TetherBin(t), "decrypt")
	dec.Env = append(dec.Environ(), f.devEnv...)
	dec.Stdin = strings.NewReader(f.jwe)
	var out strings.Builder
	dec.Stdout = &out
	if err := dec.Start(); err != nil {
		t.Fatal(err)
	}
	var waiting []struct{ ID, Device string }
	for deadline := time.Now().Add(20 * time.Second); len(waiting) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no unlock waits for approval")
		}
		if err := json.Unmarshal([]byte(mustTether(t, f.adminEnv, "", "admin", "unlock", "list", "--json")), &waiting); err != nil {
			t.Fatalf("unlock list --json: %v", err)
		}
	}
	if waiting[0].Device != id {
		t.Fatalf("waiting unlock: %+v", waiting)
	}
	_, e, code := tether(t, f.adminEnv, "", "admin", "unlock", "approve", waiting[0].ID)
	if code != 0 || !strings.Contains(e, waiting[0].ID) || !strings.Contains(e, "approved") {
		t.Fatalf("unlock approve: exit %d, stderr %q", code, e)
	}
	if err := dec.Wait(); err != nil || out.String() != "disk key" {
		t.Fatalf("decrypt after approval: %v %q", err, out.String())
	}

	mustTether(t, f.adminEnv, "", "admin", "device", "revoke", "--yes", "--reason", "stolen", id)
	if _, e, code := tether(t, f.devEnv, f.jwe, "decrypt"); code == 0 || !strings.Contains(e, "device "+id+" was revoked") {
		t.Fatalf("decrypt after revoke: exit %d\n%s", code, e)
	}
	export := mustTether(t, f.adminEnv, "", "admin", "audit", "export")
	if !strings.Contains(export, `"device":"`+id+`","action":"unlock","source":"127.0.0.1","decision":"deny"`) {
		t.Fatalf("the revoked device's unlock attempt is not audited under its ID:\n%s", export)
	}
}

// TestPCRSignerCLI: the managed server as the signer of a signed PCR
// policy, as a user meets it with the binaries: a secret sealed with
// "pcr_signer":"managed" decrypts; after PCR 16 moves, decrypt fails with
// a hint naming an admin command; admin pcr list shows the waiting values;
// the hinted command, run as it is, approves them; decrypt works again.
func TestPCRSignerCLI(t *testing.T) {
	sw := tpmtest.Start(t)
	f := startManagedFixture(t)
	dev := append(slices.Clone(f.devEnv), "TETHER_TPM_TCTI="+sw.TCTI)
	jwe := mustTether(t, dev, "pwenc", "encrypt", "tpm2", `{"pcr_signer":"managed","pcr_signed_ids":"16"}`)
	if got := mustTether(t, dev, jwe, "decrypt"); got != "pwenc" {
		t.Fatalf("decrypt = %q", got)
	}
	sw.Extend(t, "sha256", 16)
	_, e, code := tether(t, dev, jwe, "decrypt")
	hint := regexp.MustCompile(`tether admin pcr approve (dev-\S+) ([0-9a-f]{64})`).FindStringSubmatch(e)
	if code == 0 || hint == nil {
		t.Fatalf("decrypt after PCR 16 moved: exit %d, stderr %q (want the approve command)", code, e)
	}
	list := mustTether(t, f.adminEnv, "", "admin", "pcr", "list", "--state", "pending")
	if !strings.Contains(list, hint[1]) || !strings.Contains(list, "sha256:16") || !strings.Contains(list, "pending") ||
		!strings.Contains(list, "16=") || !strings.Contains(list, hint[2][:16]) {
		t.Fatalf("admin pcr list --state pending:\n%s", list)
	}
	_, e, code = tether(t, f.adminEnv, "", "admin", "pcr", "approve", hint[1], hint[2])
	if code != 0 || !strings.Contains(e, "approved") {
		t.Fatalf("admin pcr approve: exit %d, stderr %q", code, e)
	}
	if got := mustTether(t, dev, jwe, "decrypt"); got != "pwenc" {
		t.Fatalf("decrypt after the approval = %q", got)
	}
	if out := mustTether(t, f.adminEnv, "", "admin", "pcr", "list", "--state", "pending"); strings.Contains(out, hint[1]) {
		t.Fatalf("still pending after the approval:\n%s", out)
	}
}
