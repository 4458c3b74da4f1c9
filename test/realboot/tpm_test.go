package realboot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// TestTPMAndManaged proves the root unlocks in the initramfs through the
// guest's own TPM (swtpm on a tpm-crb device) and through a managed-mode
// device identity:
//
//   - tpm2: in the running guest the root is bound to sss(t=1) of tpm2
//     (PCR 7) and the tang server (the initramfs already holds the TPM
//     drivers); with the tang server down at the next boot the TPM alone
//     opens the root;
//   - managed: the guest enrolls with the server's managed API, binds
//     the root to the managed pin, rebuilds its initramfs (which now
//     holds the identity) and the tpm2 and tang bindings are removed; the
//     next boot opens the root through the managed API alone.
func TestTPMAndManaged(t *testing.T) {
	testenv.RequireCmd(t, "swtpm")
	g := New(t, InitramfsTools)
	installInitramfsTools(g)
	g.MakeDisks()
	data := t.TempDir()
	managed := testenv.FreePort(t)
	srv := testenv.StartServer(t, data, "--managed-listen", managed, "--curve", "P-256")
	adv := fetchAdv(t, srv.URL)
	g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "tang", tangConfig(ServerAddr, adv))
	tpmState := t.TempDir()
	both := map[string]string{ServerAddr: hostPort(srv.URL), ManagedAddr: managed}
	passFile := map[string][]byte{"pass": []byte(Passphrase)}

	t.Run("tpm2", func(t *testing.T) {
		sss := fmt.Sprintf(`{"t":1,"pins":{"tpm2":[{"pcr_ids":"7"}],"tang":[%s]}}`, tangConfig(ServerAddr, adv))
		m := g.Boot(Options{Forward: both, TPM: startSWTPM(t, tpmState), Files: passFile, Log: "tpm-bind.log", Script: `
ls /dev/tpmrm0
tether luks bind -d /dev/vdb -k ./pass sss '` + sss + `' && echo "@@BOUND"
tether luks list -d /dev/vdb
sync
`})
		// No initramfs rebuild: tether's hook put the TPM drivers in it
		// already.
		m.WaitFor(`@@DONE`, 0, 10*time.Minute)
		m.WaitExit(2 * time.Minute)
		if !strings.Contains(m.Console(), "@@BOUND") {
			t.Fatal("binding to sss(tpm2, tang) in the guest failed")
		}
		// The tang server is down: no forward.
		m = g.Boot(Options{TPM: startSWTPM(t, tpmState), Log: "tpm-unlock.log"})
		_, _, opened := m.WaitFor(`tether: opened /dev/vdb as /dev/mapper/root`, 0, 6*time.Minute)
		m.WaitReady(0, 6*time.Minute, "/dev/mapper/root")
		m.WaitExit(2 * time.Minute)
		t.Logf("the TPM alone opened the root %s after power-on", opened.Round(time.Second))
	})

	t.Run("managed", func(t *testing.T) {
		adminEnv := append(os.Environ(), "TETHER_ADMIN_CONFIG="+filepath.Join(data, "admin.json"))
		cmd := exec.Command(g.Tether, "admin", "token", "create")
		cmd.Env = adminEnv
		tok, err := cmd.Output()
		if err != nil {
			t.Fatalf("admin token create: %v", err)
		}
		files := map[string][]byte{"pass": []byte(Passphrase), "token": tok}
		m := g.Boot(Options{Forward: both, TPM: startSWTPM(t, tpmState), Files: files, Log: "managed-bind.log", Script: `
tether enroll --server https://` + ManagedAddr + ` --token-file ./token --key-store file && echo "@@ENROLLED"
tether luks bind -d /dev/vdb -k ./pass managed '{}' && echo "@@BOUND"
for s in $(tether luks list -d /dev/vdb | sed -n 's/^\([0-9]*\): \(tang\|sss\).*/\1/p'); do
    tether luks unbind -d /dev/vdb -s "$s"
done
tether luks list -d /dev/vdb | sed 's/^/@@LIST /'
` + modulesDep + `
t0=$(date +%s)
update-initramfs -u 2>&1 | tail -2
echo "@@SECONDS $(( $(date +%s) - t0 ))"
sync
`})
		// update-initramfs under emulation takes minutes.
		m.WaitFor(`@@DONE`, 0, 25*time.Minute)
		m.WaitExit(2 * time.Minute)
		t.Logf("update-initramfs took %v s in the guest", m.Markers("SECONDS"))
		for _, want := range []string{"@@ENROLLED", "@@BOUND"} {
			if !strings.Contains(m.Console(), want) {
				t.Fatalf("no %s in the guest", want)
			}
		}
		if l := m.Markers("LIST"); len(l) != 1 || !strings.Contains(l[0], "managed") {
			t.Fatalf("the root should have the managed binding alone: %v", l)
		}
		// Only the managed API is reachable; no TPM either.
		m = g.Boot(Options{Forward: map[string]string{ManagedAddr: managed}, Log: "managed-unlock.log"})
		_, _, opened := m.WaitFor(`tether: opened /dev/vdb as /dev/mapper/root`, 0, 6*time.Minute)
		m.WaitReady(0, 6*time.Minute, "/dev/mapper/root")
		m.WaitExit(2 * time.Minute)
		t.Logf("the managed API opened the root %s after power-on", opened.Round(time.Second))
	})
}
