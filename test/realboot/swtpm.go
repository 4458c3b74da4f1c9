package realboot

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// ManagedAddr is where guests reach the host's managed API.
const ManagedAddr = "10.0.2.100:7501"

// startSWTPM starts an swtpm on the state directory dir for one boot: QEMU
// connects to the returned socket, and swtpm ends when QEMU does
// (--terminate). The state — seeds, sealed objects, NV — stays in dir, as
// a TPM's does across power cycles. The swtpm of an earlier boot on dir
// is waited for first (after a power cut it may still be ending, and two
// on one state would fight over it); t's cleanup stops this one.
func startSWTPM(t *testing.T, dir string) string {
	t.Helper()
	if prev, ok := swtpms.Load(dir); ok {
		p := prev.(*swtpmProc)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			// What a power cut does to a TPM: its state is written after
			// every command that changes it.
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	sock := filepath.Join(dir, "swtpm.sock")
	os.Remove(sock)
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--ctrl", "type=unixio,path="+sock, "--terminate")
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	p := &swtpmProc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	swtpms.Store(dir, p)
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	// Generous: under a loaded CI machine (two guests under emulation and
	// the unit tests) a process can take seconds to get going.
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		select {
		case <-p.done:
			t.Fatalf("swtpm on %s exited before making its socket: %v\n%s", dir, cmd.ProcessState, out.String())
		default:
		}
	}
	t.Fatalf("swtpm on %s made no socket in 30s: %s", dir, out.String())
	return ""
}

// swtpms holds the latest swtpm started on each state directory.
var swtpms sync.Map // dir -> *swtpmProc

type swtpmProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
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
