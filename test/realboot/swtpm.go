package realboot

import (
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
