package realboot

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// ManagedAddr is where guests reach the host's managed API.
const ManagedAddr = "10.0.2.100:7501"

// startSWTPM starts an swtpm on the state directory dir for one boot: QEMU
// connects to the returned socket, and swtpm ends when QEMU does
// (--terminate). The state — seeds, sealed objects, NV — stays in dir, as
// a TPM's does across power cycles.
func startSWTPM(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "swtpm.sock")
	os.Remove(sock)
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--ctrl", "type=unixio,path="+sock, "--terminate")
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("swtpm made no socket: %s", out.String())
	return ""
}

// bindTPMOnHost binds g's root (keyslot 1) to tpm2 (PCR 7) of an swtpm
// on the host that no guest ever sees: booted with its own TPM, the guest
// is the disk in another machine.
func bindTPMOnHost(t *testing.T, g *Guest) {
	t.Helper()
	withHostTPM(t, t.TempDir(), func() {
		g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "-s", "1", "tpm2", `{"pcr_ids":"7"}`)
	})
}

// withHostTPM runs f with TETHER_TPM_TCTI naming an swtpm on the host
// whose state is in dir: f's tether commands use that TPM. Booted with
// startSWTPM on the same dir, a guest has the same TPM (its seeds, so the
// same primary keys).
func withHostTPM(t *testing.T, dir string, f func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
		"--flags", "not-need-init,startup-clear")
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Setenv("TETHER_TPM_TCTI", fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port))
	f()
	os.Unsetenv("TETHER_TPM_TCTI")
}
