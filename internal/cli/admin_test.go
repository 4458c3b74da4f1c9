package cli_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/pin/managed"
	"github.com/tether-nbde/tether/server/admin"
)

// tether runs the real binary with extra environment and stdin.
func tether(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testenv.TetherBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func mustTether(t *testing.T, env []string, stdin string, args ...string) string {
	t.Helper()
	out, errOut, code := tether(t, env, stdin, args...)
	if code != 0 {
		t.Fatalf("tether %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// TestManagedEndToEnd drives the real binaries: a server in managed mode,
// enrol, bind, unlock, revoke, audit; the Tang endpoints keep working.
func TestManagedEndToEnd(t *testing.T) {
	data := t.TempDir()
	maddr := testenv.FreePort(t)
	srv := testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	adminEnv := []string{"TETHER_ADMIN_CONFIG=" + filepath.Join(data, "admin.json")}
	for _, f := range []string{"admin.json", "kek"} {
		fi, err := os.Stat(filepath.Join(data, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}
	// Tang is unchanged next to it.
	resp, err := http.Get(srv.URL + "/adv")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("tang /adv: %v %v", resp, err)
	}
	resp.Body.Close()

	tok := strings.TrimSpace(mustTether(t, adminEnv, "", "admin", "token", "create", "--group", "e2e"))
	state := t.TempDir()
	devEnv := []string{"TETHER_DEVICE_DIR=" + state}
	id := strings.TrimSpace(mustTether(t, devEnv, tok, "enroll", "--server", "https://"+maddr, "--token-file", "-", "--name", "e2e-host"))
	if fi, err := os.Stat(filepath.Join(state, "identity.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity key: %v", err)
	}
	jwe := mustTether(t, devEnv, "the disk key", "encrypt", "managed", "{}")
	if got := mustTether(t, devEnv, jwe, "decrypt"); got != "the disk key" {
		t.Fatalf("decrypt gave %q", got)
	}
	if out := mustTether(t, adminEnv, "", "admin", "device", "list"); !strings.Contains(out, id) || !strings.Contains(out, "enabled") {
		t.Fatalf("device list:\n%s", out)
	}
	mustTether(t, devEnv, "", "agent", "--once")

	mustTether(t, adminEnv, "", "admin", "lockdown", "on")
	if _, e, code := tether(t, devEnv, jwe, "decrypt"); code == 0 || !strings.Contains(e, "lockdown") {
		t.Fatalf("decrypt in lockdown: %d %s", code, e)
	}
	mustTether(t, adminEnv, "", "admin", "lockdown", "off")

	if _, e, code := tether(t, adminEnv, "", "admin", "device", "revoke", id); code != 1 || !strings.Contains(e, "--yes") {
		t.Fatalf("revoke without --yes: %d %s", code, e)
	}
	mustTether(t, adminEnv, "", "admin", "device", "revoke", "--yes", "--reason", "stolen", id)
	if _, e, code := tether(t, devEnv, jwe, "decrypt"); code == 0 || !strings.Contains(e, "revoked") {
		t.Fatalf("decrypt after revoke: %d %s", code, e)
	}
	if out := mustTether(t, adminEnv, "", "admin", "audit", "verify"); !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("audit verify: %s", out)
	}
	export := mustTether(t, adminEnv, "", "admin", "audit", "export")
	for _, want := range []string{`"action":"enroll"`, `"action":"unlock","source":"127.0.0.1","decision":"allow"`, `"action":"device.revoke"`} {
		if !strings.Contains(export, want) {
			t.Errorf("audit export lacks %s:\n%s", want, export)
		}
	}
	// The same data directory restarted: the same certificate, so the
	// enrolment state of other devices stays valid (checked by the admin
	// client's pin).
	srv.Cmd.Process.Signal(syscall.SIGTERM)
	srv.Cmd.Wait()
	testenv.StartServer(t, data, "--managed-listen", maddr, "--curve", "P-256")
	mustTether(t, adminEnv, "", "admin", "device", "list")
}

func TestTangAllow(t *testing.T) {
	srv := testenv.StartServer(t, "", "--tang-allow", "127.0.0.2/32")
	resp, err := http.Get(srv.URL + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("/adv from 127.0.0.1 with --tang-allow 127.0.0.2/32: %d", resp.StatusCode)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	resp, err = hc.Get(srv.URL + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/adv from 127.0.0.2 with --tang-allow 127.0.0.2/32: %d", resp.StatusCode)
	}
}

// TestEnrollmentsSurviveKill9 kills the server in the middle of a burst of
// enrolments; every enrolment the server acknowledged must be there after
// a restart.
func TestEnrollmentsSurviveKill9(t *testing.T) {
	data := t.TempDir()
	maddr := testenv.FreePort(t)
	srv := testenv.StartServer(t, data, "--managed-listen", maddr)
	cfg, err := admin.LoadCredentials(filepath.Join(data, "admin.json"))
	if err != nil {
		t.Fatal(err)
	}
	ac := admin.NewClient(cfg)
	ctx := context.Background()
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	enough := make(chan struct{})
	var once sync.Once
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				tok, err := ac.CreateToken(ctx, admin.TokenRequest{})
				if err != nil {
					return // the server is gone
				}
				_, info, err := managed.Enroll(ctx, managed.EnrollOptions{Server: "https://" + maddr, Token: tok.Token, Dir: t.TempDir()})
				if err != nil {
					return
				}
				mu.Lock()
				acked = append(acked, info.Device)
				if len(acked) >= 20 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	<-enough
	srv.Cmd.Process.Kill() // SIGKILL while the workers keep enrolling
	wg.Wait()
	srv.Cmd.Wait()
	testenv.StartServer(t, data, "--managed-listen", maddr)
	devs, err := ac.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, d := range devs {
		have[d.ID] = true
	}
	for _, id := range acked {
		if !have[id] {
			t.Errorf("acknowledged enrolment %s was lost", id)
		}
	}
	t.Logf("%d enrolments acknowledged before kill -9, %d devices after restart", len(acked), len(devs))
}
