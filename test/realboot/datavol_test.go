package realboot

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// makeDataVolume makes a LUKS2 volume (makeLUKSVolume) and binds it to a
// tang server at guestAddr.
func makeDataVolume(t *testing.T, g *Guest, path, text, guestAddr, adv string) {
	t.Helper()
	makeLUKSVolume(t, g, path, text)
	g.Host("", "luks", "bind", "-d", path, "-k", g.PassphraseFile(), "tang", tangConfig(guestAddr, adv))
}

// makeLUKSVolume makes a LUKS2 image holding an ext4 filesystem with
// hello.txt (text), opened by Passphrase in keyslot 0.
func makeLUKSVolume(t *testing.T, g *Guest, path, text string) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"truncate", "-s", "128M", path},
		{"mkfs.ext4", "-q", "-F", "-d", src, path, "96M"},
		{"cryptsetup", "reencrypt", "-q", "--encrypt", "--type", "luks2", "--reduce-device-size", "32M",
			"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", g.PassphraseFile(), path},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// vaultPIN is the TPM PIN of TestDataVolumes' vault volume.
const vaultPIN = "2468"

func luksUUID(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("cryptsetup", "luksUUID", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// mountScript waits for the data volumes' mounts (they come after
// multi-user.target may be reached: _netdev, nofail) and prints what it
// finds.
const mountScript = `
for i in $(seq 1 150); do
    findmnt /mnt/cloud >/dev/null && findmnt /mnt/blk >/dev/null && break
    sleep 1
done
echo "@@MOUNTS cloud=$(findmnt -no SOURCE /mnt/cloud) blk=$(findmnt -no SOURCE /mnt/blk)"
echo "@@FILES cloud=$(cat /mnt/cloud/hello.txt) blk=$(cat /mnt/blk/hello.txt)"
echo "@@LEFT $(pgrep -x tether | wc -l)"
`

// TestDataVolumes boots a real Debian whose data volumes come from
// /etc/crypttab through tether's systemd units: a container file under
// /home (the Home Assistant journey) and a block device, both mounted
// from fstab with _netdev. The root is bound too, so the boot is
// unattended throughout.
//
//   - keyd: crypttab lines written by "tether crypttab --write" point at
//     keyd's socket; both volumes are mounted and readable. A third
//     volume, vault, has one binding: tpm2 "with_pin" (the guest's swtpm):
//     keyd asks for its PIN through systemd's password agent, the test
//     types it at the console prompt, and vault is mounted too;
//   - askpass: the same volumes with the key field "none", answered by
//     tether's password agent;
//   - down: the key server is down (root opened by the typed
//     passphrase): multi-user.target is not held up by the data volumes.
func TestDataVolumes(t *testing.T) {
	g := New(t, InitramfsTools)
	srv := testenv.StartServer(t, "")
	adv := fetchAdv(t, srv.URL)
	fwd := map[string]string{ServerAddr: hostPort(srv.URL)}

	container := filepath.Join(g.Tree, "home/haadmin/cloud_container.img")
	os.MkdirAll(filepath.Dir(container), 0o755)
	makeDataVolume(t, g, container, "cloud-data", ServerAddr, adv)
	blk := filepath.Join(g.Dir, "data.img")
	makeDataVolume(t, g, blk, "block-data", ServerAddr, adv)
	blkUUID := luksUUID(t, blk)
	// vault: bound to the guest's TPM with a PIN, and nothing else.
	vault := filepath.Join(g.Dir, "vault.img")
	makeLUKSVolume(t, g, vault, "vault-data")
	tpmState := t.TempDir()
	pinFile := filepath.Join(t.TempDir(), "pin")
	os.WriteFile(pinFile, []byte(vaultPIN+"\n"), 0o600)
	withHostTPM(t, tpmState, func() {
		g.Host("", "luks", "bind", "-d", vault, "-k", g.PassphraseFile(), "--pin-file", pinFile, "tpm2", `{"with_pin":true}`)
	})
	vaultUUID := luksUUID(t, vault)

	// An owner's existing line for the container, whose options must
	// survive --write.
	g.Write("/etc/crypttab", []byte("root /dev/vdb none luks,initramfs\n"), 0o644)
	g.Write("/etc/fstab", []byte(Fstab+
		"/dev/mapper/cloud /mnt/cloud ext4 _netdev,nofail 0 0\n/dev/mapper/blk /mnt/blk ext4 _netdev,nofail 0 0\n"+
		"/dev/mapper/vault /mnt/vault ext4 _netdev,nofail 0 0\n"), 0o644)
	for _, d := range []string{"cloud", "blk", "vault"} {
		os.MkdirAll(filepath.Join(g.Tree, "mnt", d), 0o755)
	}
	g.Chroot(`tether install systemd
tether crypttab -d /home/haadmin/cloud_container.img -n cloud --write /etc/crypttab
echo "blk UUID=` + blkUUID + ` /run/tether/keyd.sock luks,_netdev,nofail" >> /etc/crypttab
echo "vault UUID=` + vaultUUID + ` /run/tether/keyd.sock luks,_netdev,nofail" >> /etc/crypttab
cat /etc/crypttab
`)
	installInitramfsTools(g)
	g.MakeDisks()
	g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "tang", tangConfig(ServerAddr, adv))

	check := func(t *testing.T, m *Machine) {
		t.Helper()
		mounts, _, _ := m.WaitFor(`@@MOUNTS`, 0, 8*time.Minute)
		if !strings.Contains(mounts, "cloud=/dev/mapper/cloud") || !strings.Contains(mounts, "blk=/dev/mapper/blk") {
			t.Errorf("data volumes not mounted: %s", mounts)
		}
		files, _, _ := m.WaitFor(`@@FILES`, 0, time.Minute)
		if !strings.Contains(files, "cloud=cloud-data") || !strings.Contains(files, "blk=block-data") {
			t.Errorf("data volumes' files not read: %s", files)
		}
		m.WaitExit(2 * time.Minute)
	}

	// The keyd boot also rewrites crypttab for the askpass variant, so
	// the askpass boot needs no boot of its own to set it up.
	t.Run("keyd", func(t *testing.T) {
		m := g.Boot(Options{Forward: fwd, Disks: []string{blk, vault}, TPM: startSWTPM(t, tpmState), Log: "keyd.log", Script: `
for i in $(seq 1 150); do findmnt /mnt/vault >/dev/null && break; sleep 1; done
echo "@@VAULT $(findmnt -no SOURCE /mnt/vault) $(cat /mnt/vault/hello.txt)"
journalctl -b -o cat -u tether-keyd.service | grep vault | sed 's/^/@@KEYD /'
` + mountScript + `
tether crypttab -d /home/haadmin/cloud_container.img -n cloud --askpass --write /etc/crypttab
sed -i 's|^blk \(\S*\) \S* |blk \1 none |' /etc/crypttab
sed -i '/^vault /d' /etc/crypttab
sed -i '/vault/d' /etc/fstab
cat /etc/crypttab
sync
`})
		// The question keyd posted, on the console: the PIN typed there
		// opens vault.
		m.WaitFor(`PIN of the TPM-sealed secret`, 0, 8*time.Minute)
		m.Type(vaultPIN + "\n")
		line, _, _ := m.WaitFor(`@@VAULT`, 0, 8*time.Minute)
		if !strings.Contains(line, "/dev/mapper/vault vault-data") {
			t.Errorf("vault not mounted after its PIN was typed: %s\nkeyd: %q", line, m.Markers("KEYD"))
		}
		check(t, m)
		t.Logf("keyd: %q", m.Markers("KEYD"))
		if !regexp.MustCompile(`cloud\s+/home/haadmin/cloud_container.img\s+none\s`).MatchString(m.Console()) {
			t.Fatalf("crypttab was not rewritten for askpass")
		}
	})

	t.Run("askpass", func(t *testing.T) {
		m := g.Boot(Options{Forward: fwd, Disks: []string{blk}, Script: mountScript, Log: "askpass.log"})
		check(t, m)
	})

	t.Run("down", func(t *testing.T) {
		m := g.Boot(Options{Disks: []string{blk}, Log: "down.log", Script: `echo "@@UP $(cut -d' ' -f1 /proc/uptime)"
echo "@@STATE cloud=$(systemctl is-active systemd-cryptsetup@cloud) blk=$(systemctl is-active systemd-cryptsetup@blk)"`})
		_, idx, _ := m.WaitFor(`Please unlock disk root`, 0, 5*time.Minute)
		typed := m.Since()
		m.Type(Passphrase + "\n")
		_, _, ready := m.WaitFor(`@@READY`, idx, 5*time.Minute)
		m.WaitExit(2 * time.Minute)
		// keyd holds a data volume's request for its 90 s deadline; the
		// boot must not wait for it.
		if ready-typed > 150*time.Second {
			t.Errorf("multi-user.target came %s after the passphrase: the data volumes held up the boot", (ready - typed).Round(time.Second))
		}
		t.Logf("multi-user.target %s after the passphrase with the data volumes' server down", (ready - typed).Round(time.Second))
	})
}
