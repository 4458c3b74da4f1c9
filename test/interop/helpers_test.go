// Package interop tests the tether binary against the real Debian peers:
// clevis encrypt/decrypt, stock tangd (socket-activated like its systemd
// units) and jose. Every test runs processes, as a person would.
package interop

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

var secret = []byte("correct horse battery staple\n")

// tether runs the tether binary.
func tether(t testing.TB, stdin []byte, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	return testenv.Run(t, stdin, testenv.TetherBin(t), args...)
}

// mustTether runs tether and fails the test unless it exits 0.
func mustTether(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, errb, code := tether(t, stdin, args...)
	if code != 0 {
		t.Fatalf("tether %s: exit %d\n%s", strings.Join(args, " "), code, errb)
	}
	return out
}

func clevis(t testing.TB, stdin []byte, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	return testenv.Run(t, stdin, testenv.RequireCmd(t, "clevis"), args...)
}

func mustClevis(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, errb, code := clevis(t, stdin, args...)
	if code != 0 {
		t.Fatalf("clevis %s: exit %d\n%s", strings.Join(args, " "), code, errb)
	}
	return out
}

// decryptBoth decrypts jwe with clevis and with tether and checks both give
// the secret.
func decryptBoth(t testing.TB, jwe []byte) {
	t.Helper()
	if got := mustClevis(t, jwe, "decrypt"); !bytes.Equal(got, secret) {
		t.Errorf("clevis decrypt: %q", got)
	}
	if got := mustTether(t, jwe, "decrypt"); !bytes.Equal(got, secret) {
		t.Errorf("tether decrypt: %q", got)
	}
}

// failsCleanly checks the error convention: non-zero exit, nothing on
// stdout, one "tether: error:" line and at most one "tether: hint:" line.
// It returns the error line.
func failsCleanly(t testing.TB, what string, stdout, stderr []byte, code int) string {
	t.Helper()
	if code == 0 {
		t.Errorf("%s: exit 0, want failure", what)
	}
	if len(stdout) != 0 {
		t.Errorf("%s: wrote %d bytes to stdout: %q", what, len(stdout), stdout)
	}
	lines := strings.Split(strings.TrimRight(string(stderr), "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "tether: error: ") {
		t.Errorf("%s: stderr does not start with \"tether: error: \":\n%s", what, stderr)
		return ""
	}
	t.Logf("%s: %s", what, strings.Join(lines, " | "))
	if len(lines) > 2 || (len(lines) == 2 && !strings.HasPrefix(lines[1], "tether: hint: ")) {
		t.Errorf("%s: want one error line and an optional hint, got:\n%s", what, stderr)
	}
	return lines[0]
}

// proc is a tether server process on a fixed address, so that it can be
// stopped and started again where a JWE expects it.
type proc struct {
	URL, Addr, Data string
	cmd             *exec.Cmd
	logs            *testenv.SyncBuffer
	done            chan struct{}
}

func startTether(t testing.TB, addr, data string, extra ...string) *proc {
	t.Helper()
	if data == "" {
		data = t.TempDir()
	}
	// A free port can be taken by a parallel test before the server binds
	// it: then try another one.
	for try := 0; ; try++ {
		a := addr
		if a == "" {
			a = testenv.FreePort(t)
		}
		p, err := tryStartTether(t, a, data, extra...)
		if err == nil {
			return p
		}
		if addr != "" || try == 3 {
			t.Fatal(err)
		}
	}
}

func tryStartTether(t testing.TB, addr, data string, extra ...string) (*proc, error) {
	t.Helper()
	args := append([]string{"server", "--listen", addr, "--data", data}, extra...)
	cmd := exec.Command(testenv.TetherBin(t), args...)
	p := &proc{URL: "http://" + addr, Addr: addr, Data: data, cmd: cmd, logs: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("tether server %s log:\n%s", addr, p.logs.String())
		}
	})
	prefix := ""
	client := http.DefaultClient
	for i, a := range extra {
		switch a {
		case "--tls-cert":
			p.URL = "https://" + addr
			client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		case "--prefix":
			prefix = extra[i+1]
		}
	}
	check := p.URL + prefix + "/healthz"
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("tether server on %s exited: %s", addr, p.logs.String())
		default:
		}
		if resp, err := client.Get(check); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("%s did not come up within 10s", check)
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t testing.TB) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("server did not exit within 15s of SIGTERM")
	}
	return p.cmd.ProcessState.ExitCode()
}

// signingThp returns the S256 thumbprint of the advertised signing key, as
// "tether server keys list" prints it.
func (p *proc) signingThp(t testing.TB) string {
	t.Helper()
	out := mustTether(t, nil, "server", "keys", "list", "--data", p.Data)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "advertised" && f[1] == "signing" {
			return f[3]
		}
	}
	t.Fatalf("no advertised signing key in:\n%s", out)
	return ""
}

// tangdProc is a stock tangd on a fixed address that can be stopped early.
type tangdProc struct {
	URL, Addr, Dir string
	cmd            *exec.Cmd
}

// startTangd runs tangd on dir (with fresh keys if keygen) at addr (a free
// port if empty), socket-activated as in its systemd units.
func startTangd(t testing.TB, addr, dir string, keygen bool) *tangdProc {
	t.Helper()
	_, err := os.Stat("/usr/libexec/tangd")
	testenv.Require(t, err == nil, "tang (tangd) is not installed")
	sa := testenv.RequireCmd(t, "systemd-socket-activate")
	if keygen {
		if out, err := exec.Command("/usr/libexec/tangd-keygen", dir).CombinedOutput(); err != nil {
			t.Fatalf("tangd-keygen: %v\n%s", err, out)
		}
	}
	if addr == "" {
		addr = testenv.FreePort(t)
	}
	cmd := exec.Command(sa, "--inetd", "-a", "-l", addr, "/usr/libexec/tangd", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &tangdProc{URL: "http://" + addr, Addr: addr, Dir: dir, cmd: cmd}
	t.Cleanup(p.stop)
	testenv.WaitHTTP(t, p.URL+"/adv")
	return p
}

func (p *tangdProc) stop() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// signingThp returns the S256 thumbprint of tangd's visible signing key.
func (p *tangdProc) signingThp(t testing.TB) string {
	t.Helper()
	keys, err := tang.LoadKeyDir(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Signing() && !k.Hidden {
			tp, _ := k.JWK.Thumbprint("S256")
			return tp
		}
	}
	t.Fatal("tangd has no visible signing key")
	return ""
}

// advKeys fetches and verifies url/adv and returns the S256 thumbprints of
// the advertised keys.
func advKeys(t testing.TB, client *http.Client, url string) []string {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Get(url + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s/adv: %d", url, resp.StatusCode)
	}
	ks, _, err := tang.VerifyAdvertisement(body)
	if err != nil {
		t.Fatalf("advertisement of %s: %v", url, err)
	}
	var out []string
	for _, k := range ks.Keys {
		tp, _ := k.Thumbprint("S256")
		out = append(out, tp)
	}
	return out
}

// saveAdv writes url/adv to a file and returns its name.
func saveAdv(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	f := filepath.Join(t.TempDir(), "adv.jws")
	if err := os.WriteFile(f, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func cfg(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// tangURL returns the clevis.tang.url of a tang JWE.
func jweHeader(t testing.TB, jwe []byte) jose.Header {
	t.Helper()
	j, err := jose.ParseCompact(string(jwe))
	if err != nil {
		t.Fatalf("not a compact JWE: %v\n%s", err, jwe)
	}
	return j.Header
}
