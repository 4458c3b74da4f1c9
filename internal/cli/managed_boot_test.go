package cli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// keydClient asks a keyd socket for volume's key as systemd-cryptsetup
// does (its end bound to @<hex>/cryptsetup/<volume>, shutdown(SHUT_WR),
// read to EOF) and says how long the answer took.
func keydClient(t *testing.T, sock, volume string) ([]byte, time.Duration) {
	t.Helper()
	start := time.Now()
	laddr := &net.UnixAddr{Name: fmt.Sprintf("@%016x/cryptsetup/%s", time.Now().UnixNano(), volume), Net: "unix"}
	// The socket file appears at bind(), a moment before listen(): on a
	// loaded machine a dial in between is refused.
	var c *net.UnixConn
	var err error
	for i := 0; i < 100; i++ {
		if c, err = net.DialUnix("unix", laddr, &net.UnixAddr{Name: sock, Net: "unix"}); !errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	var key bytes.Buffer
	key.ReadFrom(c)
	return key.Bytes(), time.Since(start)
}

// startKeyd runs the real tether keyd on a socket of its own.
func startKeyd(t *testing.T, env []string, tab string, deadline time.Duration) (string, *testenv.SyncBuffer) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "keyd.sock")
	logs := &testenv.SyncBuffer{}
	cmd := exec.Command(testenv.TetherBin(t), "keyd", "--socket", sock, "--crypttab", tab, "--deadline", deadline.String(), "--timeout", "5s")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil }, logs.String)
	return sock, logs
}

// luksImage formats a small LUKS2 image with passphrase "recovery" and
// binds it with tether luks bind (pin, cfg) in env.
func luksImage(t *testing.T, env []string, name, pinName, cfg string) string {
	t.Helper()
	testenv.RequireCmd(t, "cryptsetup")
	img := filepath.Join(t.TempDir(), name)
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 20<<20)
	if _, e, c := testenv.Run(t, []byte("recovery"), "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img); c != 0 {
		t.Fatal(string(e))
	}
	state := t.TempDir()
	os.Chmod(state, 0o700)
	mustTether(t, env, "recovery", "luks", "bind", "-d", img, "-k", "-", "-y", "--state-dir", state, pinName, cfg)
	return img
}

// TestBootManagedRefusals: the boot paths (keyd, tether crypttab open, the
// password agent) against a real managed server. A disabled device and a
// lockdown are waited for (an admin may act: enabling the device during
// the wait delivers the key); a revoked device is given up at once, well
// under the deadline, and the log says it was revoked. An sss binding
// gives up at once only when too few of its children can still succeed.
func TestBootManagedRefusals(t *testing.T) {
	f := startManagedFixture(t)
	id := strings.TrimSpace(func() string {
		var devs []struct {
			ID string `json:"id"`
		}
		out := mustTether(t, f.adminEnv, "", "admin", "device", "list", "--json")
		if err := json.Unmarshal([]byte(out), &devs); err != nil || len(devs) != 1 {
			t.Fatalf("device list: %v %s", err, out)
		}
		return devs[0].ID
	}())
	img := luksImage(t, f.devEnv, "managed.img", "managed", "{}")

	// A tang server that is down once the bindings are made.
	tangSrv := testenv.StartServer(t, "")
	tangCfg := fmt.Sprintf(`{"url":%q}`, tangSrv.URL)
	one := luksImage(t, f.devEnv, "sss1.img", "sss", `{"t":1,"pins":{"managed":{},"tang":`+tangCfg+`}}`)
	two := luksImage(t, f.devEnv, "sss2.img", "sss", `{"t":2,"pins":{"managed":{},"tang":`+tangCfg+`}}`)
	tangSrv.Cmd.Process.Signal(syscall.SIGTERM)
	tangSrv.Cmd.Wait()

	tab := filepath.Join(t.TempDir(), "crypttab")
	os.WriteFile(tab, []byte(fmt.Sprintf("data %s /run/tether/keyd.sock luks,_netdev\nsss1 %s /run/tether/keyd.sock luks,_netdev\nsss2 %s /run/tether/keyd.sock luks,_netdev\n", img, one, two)), 0o644)
	const deadline = 60 * time.Second
	sock, logs := startKeyd(t, f.devEnv, tab, deadline)

	// Disabled: keyd keeps asking; the admin enables the device and the
	// key arrives long before the deadline.
	mustTether(t, f.adminEnv, "", "admin", "device", "disable", "--reason", "maintenance", id)
	go func() {
		time.Sleep(3 * time.Second)
		mustTether(t, f.adminEnv, "", "admin", "device", "enable", id)
	}()
	key, took := keydClient(t, sock, "data")
	if len(key) == 0 || took < 3*time.Second {
		t.Fatalf("disabled then enabled: key %d bytes after %v (want it after the admin enabled the device)\n%s", len(key), took, logs.String())
	}
	if _, e, c := testenv.Run(t, key, "cryptsetup", "open", "--test-passphrase", "--key-file", "-", img); c != 0 {
		t.Fatalf("served key does not open the volume: %s", e)
	}

	// Lockdown: waited for until the deadline (a short keyd for that).
	mustTether(t, f.adminEnv, "", "admin", "lockdown", "on")
	shortSock, shortLogs := startKeyd(t, f.devEnv, tab, 4*time.Second)
	if key, took := keydClient(t, shortSock, "data"); len(key) != 0 || took < 4*time.Second {
		t.Fatalf("lockdown: key %d bytes after %v; want none, at the deadline\n%s", len(key), took, shortLogs.String())
	}
	waitFor(t, func() bool { return strings.Contains(shortLogs.String(), `volume "data": no key sent`) }, shortLogs.String)
	if l := lineOf(shortLogs.String(), `volume "data": no key sent`); !strings.Contains(l, "lockdown") || !strings.Contains(l, "the deadline passed") {
		t.Errorf("lockdown log:\n%s", l)
	}
	mustTether(t, f.adminEnv, "", "admin", "lockdown", "off")

	// Revoked: every boot path gives up at once and says why.
	mustTether(t, f.adminEnv, "", "admin", "device", "revoke", "--yes", "--reason", "stolen", id)
	key, took = keydClient(t, sock, "data")
	if len(key) != 0 || took > 5*time.Second {
		t.Errorf("revoked: key %d bytes after %v; want none, at once (deadline %v)", len(key), took, deadline)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), `volume "data": no key sent`) }, logs.String)
	if l := lineOf(logs.String(), `volume "data": no key sent`); !strings.Contains(l, "gave up at once") || !strings.Contains(l, "revoked") {
		t.Errorf("revoked: keyd's log line does not say it gave up because of the revocation:\n%s", l)
	}
	// sss t=2 of (revoked managed, tang down): can never reach 2 — at once.
	if key, took := keydClient(t, sock, "sss2"); len(key) != 0 || took > 5*time.Second {
		t.Errorf("sss t=2 with its managed child revoked: key %d bytes after %v; want none, at once", len(key), took)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), `volume "sss2": no key sent`) }, logs.String)
	if l := lineOf(logs.String(), `volume "sss2": no key sent`); !strings.Contains(l, "gave up at once") || !strings.Contains(l, "revoked") {
		t.Errorf("sss t=2: log line:\n%s", l)
	}
	// sss t=1: the tang child may still come back: waited for.
	if key, took := keydClient(t, shortSock, "sss1"); len(key) != 0 || took < 4*time.Second {
		t.Errorf("sss t=1 with tang down and managed revoked: key %d bytes after %v; want none, at the deadline", len(key), took)
	}

	// tether crypttab open (the initramfs) and the password agent.
	start := time.Now()
	_, e, code := tether(t, f.devEnv, "", "crypttab", "open", "--crypttab", tab, "--deadline", deadline.String(), "data")
	if code == 0 || time.Since(start) > 10*time.Second || !strings.Contains(e, "revoked") || !strings.Contains(e, "gave up at once") {
		t.Errorf("crypttab open of a revoked device: exit %d after %v:\n%s", code, time.Since(start), e)
	}
	askDir := t.TempDir()
	reply := filepath.Join(t.TempDir(), "reply")
	rc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: reply, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	os.WriteFile(filepath.Join(askDir, "ask.data"), []byte("[Ask]\nPID=1\nSocket="+reply+"\nNotAfter=0\nId=cryptsetup:"+img+"\n"), 0o644)
	start = time.Now()
	_, e, code = tether(t, f.devEnv, "", "askpass", "--dir", askDir, "--crypttab", tab, "--once", "--deadline", deadline.String())
	if time.Since(start) > 10*time.Second || !strings.Contains(e, "revoked") || !strings.Contains(e, "no answer sent") {
		t.Errorf("askpass for a revoked device: exit %d after %v:\n%s", code, time.Since(start), e)
	}
}

func lineOf(log, substr string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}
