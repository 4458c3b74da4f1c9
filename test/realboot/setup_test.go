package realboot

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestSetupBoot: in a real Debian (systemd, initramfs-tools, the root on
// LUKS2 opened by its passphrase) with tether installed from its Debian
// package (built by scripts/package.sh, installed with dpkg -i in place of
// the harness's binaries), "tether setup" in its flag form
//
//   - binds the running root to a tether server, and rebuilds the
//     initramfs (inside the guest, with the package's hook);
//   - creates a container file bound to the same server, installs the
//     units and writes crypttab and fstab; the volume opens at once.
//
// After a reboot the root opens with nothing typed, the container is
// opened and mounted by itself, and "tether doctor" finds nothing wrong
// with the running system (its real units, crypttab and initramfs).
func TestSetupBoot(t *testing.T) {
	g := New(t, InitramfsTools)
	srv := testenv.StartServer(t, "")
	fwd := map[string]string{ServerAddr: hostPort(srv.URL)}
	out, errOut, code := testenv.Run(t, nil, g.Tether, "adv", "--json", srv.URL)
	if code != 0 {
		t.Fatalf("tether adv: %s", errOut)
	}
	var a struct {
		Config struct{ Thp string } `json:"config"`
	}
	if err := json.Unmarshal(out, &a); err != nil || a.Config.Thp == "" {
		t.Fatalf("tether adv --json: %v", err)
	}
	os.MkdirAll(filepath.Join(g.Tree, "home/haadmin"), 0o755)
	installPackage(t, g)
	g.MakeDisks()

	// The root is not bound yet: its passphrase is typed at the prompt.
	m := g.Boot(Options{Forward: fwd, Files: map[string][]byte{"pass": []byte(Passphrase)}, Log: "setup.log", Script: modulesDep + `
tether setup -d /dev/vdb -k ./pass --server http://` + ServerAddr + ` --thp ` + a.Config.Thp + `
echo "@@ROOTSETUP exit=$?"
grep -v '^#' /etc/crypttab
tether setup --create /home/haadmin/cloud_container.img --size 96M -n cloud --mount /mnt/cloud \
    --server http://` + ServerAddr + ` --thp ` + a.Config.Thp + ` --recovery-file /root/cloud.key
echo "@@SETUP exit=$?"
cat /etc/crypttab /etc/fstab
systemctl start systemd-cryptsetup@cloud.service && mount /mnt/cloud && echo setup-data > /mnt/cloud/hello.txt
echo "@@NOW $(cat /mnt/cloud/hello.txt)"
umount /mnt/cloud; systemctl stop systemd-cryptsetup@cloud.service
sync
`})
	m.WaitFor(`Please unlock disk root`, 0, 5*time.Minute)
	m.Type(Passphrase + "\n")
	// The rebuild of the initramfs in the guest takes minutes under
	// emulation.
	if line, _, _ := m.WaitFor(`@@ROOTSETUP exit=`, 0, 20*time.Minute); !strings.Contains(line, "exit=0") {
		t.Fatalf("tether setup of the root failed in the guest: %s", line)
	}
	for _, want := range []string{"tether: /dev/vdb is bound (1 binding(s))", "tether's initramfs-tools integration is installed (/usr/share/initramfs-tools/hooks/tether)",
		"the initramfs (initramfs-tools, rebuilt with tether in it) opens it as"} {
		if !strings.Contains(m.Console(), want) {
			t.Errorf("no %q from setup of the root", want)
		}
	}
	line, _, _ := m.WaitFor(`@@SETUP exit=`, 0, 10*time.Minute)
	if !strings.Contains(line, "exit=0") {
		t.Fatalf("tether setup failed in the guest: %s", line)
	}
	if line, _, _ := m.WaitFor(`@@NOW`, 0, 3*time.Minute); !strings.Contains(line, "setup-data") {
		t.Fatalf("the volume did not open right after setup: %s", line)
	}
	m.WaitExit(3 * time.Minute)

	m = g.Boot(Options{Forward: fwd, Log: "setup-reboot.log", Script: `
for i in $(seq 1 150); do findmnt /mnt/cloud >/dev/null && break; sleep 1; done
echo "@@MOUNT $(findmnt -no SOURCE /mnt/cloud) $(cat /mnt/cloud/hello.txt)"
tether doctor -v --timeout 20s
echo "@@DOCTOR exit=$?"
`})
	m.WaitFor(`tether: opened /dev/vdb as /dev/mapper/root`, 0, 5*time.Minute)
	if line, _, _ := m.WaitFor(`@@MOUNT`, 0, 10*time.Minute); !strings.Contains(line, "/dev/mapper/cloud setup-data") {
		t.Errorf("after the reboot the volume is not mounted: %s", line)
	}
	if line, _, _ := m.WaitFor(`@@DOCTOR exit=`, 0, 3*time.Minute); !strings.Contains(line, "exit=0") {
		t.Errorf("tether doctor found problems in the set-up system (see setup-reboot.log): %s", line)
	}
	for _, want := range []string{"ok: volume cloud keyslot", "ok: volume root keyslot", "ok: initramfs /boot/initrd.img-"} {
		if !strings.Contains(m.Console(), want) {
			t.Errorf("doctor did not check %q", want)
		}
	}
	m.WaitExit(3 * time.Minute)
}

// installPackage builds tether's amd64 package from this checkout and
// installs it in the guest's tree with dpkg, in place of the binaries New
// copied in: the guest then runs what a user who installs the package
// gets (its units, hooks and man pages included).
func installPackage(t *testing.T, g *Guest) {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "scripts/package.sh"), "-a", "amd64", "-v", "9.9.9~realboot1", "-o", out)
	cmd.Dir = testenv.RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", err, b)
	}
	deb, err := os.ReadFile(filepath.Join(out, "tether_9.9.9~realboot1_amd64.deb"))
	if err != nil {
		t.Fatal(err)
	}
	g.Write("/root/tether.deb", deb, 0o644)
	res := g.Chroot(`rm -f /usr/bin/tether /usr/bin/tether-smb /usr/bin/tether-server
DEBIAN_FRONTEND=noninteractive dpkg -i /root/tether.deb
rm /root/tether.deb
dpkg-query -W -f='@@PKG ${Package} ${Version} ${Status}\n' tether
`)
	if !strings.Contains(res, "@@PKG tether 9.9.9~realboot1 install ok installed") {
		t.Fatalf("the package did not install:\n%s", res)
	}
}
