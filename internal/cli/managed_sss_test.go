package cli_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestManagedTwoServersSSS: one device enrolled with two independent
// managed servers (a state directory each) and bound with sss. t=1 still
// decrypts with either server down or the device revoked on one; t=2 needs
// both, and a revocation on either one ends it.
func TestManagedTwoServersSSS(t *testing.T) {
	type managedServer struct {
		srv      *testenv.Server
		addr     string
		adminEnv []string
		state    string
		id       string
	}
	var servers [2]*managedServer
	for i := range servers {
		data := t.TempDir()
		s := &managedServer{addr: testenv.FreePort(t), state: t.TempDir(),
			adminEnv: []string{"TETHER_ADMIN_CONFIG=" + filepath.Join(data, "admin.json")}}
		s.srv = testenv.StartServer(t, data, "--managed-listen", s.addr, "--curve", "P-256")
		tok := strings.TrimSpace(mustTether(t, s.adminEnv, "", "admin", "token", "create"))
		s.id = strings.TrimSpace(mustTether(t, nil, tok, "enroll", "--server", "https://"+s.addr, "--token-file", "-",
			"--state", s.state, "--key-store", "file", "--name", fmt.Sprint("host-on-", i)))
		servers[i] = s
	}
	policy := func(threshold int) string {
		return fmt.Sprintf(`{"t":%d,"pins":{"managed":[{"state":%q},{"state":%q}]}}`, threshold, servers[0].state, servers[1].state)
	}
	one := mustTether(t, nil, "one of two", "encrypt", "sss", policy(1))
	two := mustTether(t, nil, "both", "encrypt", "sss", policy(2))
	if got := mustTether(t, nil, two, "decrypt"); got != "both" {
		t.Fatalf("t=2 with both servers: %q", got)
	}

	// Server 0 down: t=1 still decrypts, t=2 does not.
	servers[0].srv.Cmd.Process.Signal(syscall.SIGTERM)
	servers[0].srv.Cmd.Wait()
	if got := mustTether(t, nil, one, "decrypt"); got != "one of two" {
		t.Fatalf("t=1 with server 0 down: %q", got)
	}
	if _, e, code := tether(t, nil, two, "decrypt", "--timeout", "3s"); code == 0 {
		t.Fatalf("t=2 decrypted with server 0 down\n%s", e)
	}
	servers[0].srv = testenv.StartServer(t, filepath.Dir(strings.TrimPrefix(servers[0].adminEnv[0], "TETHER_ADMIN_CONFIG=")),
		"--managed-listen", servers[0].addr, "--curve", "P-256")

	// Revoked on server 1: t=1 decrypts through server 0; t=2 never again.
	mustTether(t, servers[1].adminEnv, "", "admin", "device", "revoke", "--yes", "--reason", "lost", servers[1].id)
	if got := mustTether(t, nil, one, "decrypt"); got != "one of two" {
		t.Fatalf("t=1 after a revocation on server 1: %q", got)
	}
	if _, e, code := tether(t, nil, two, "decrypt"); code == 0 || !strings.Contains(e, "revoked") {
		t.Fatalf("t=2 after a revocation on server 1: exit %d\n%s", code, e)
	}
}
