// Package realboot boots a real Debian 12 (bookworm) system under QEMU —
// systemd as PID 1, an initramfs built by Debian's own initramfs-tools or
// dracut inside the guest's tree, the root filesystem on LUKS2 — so tests
// can prove what tether's units and hooks do at a real boot: unattended
// unlocks, fallbacks to the passphrase prompt, OS upgrades, power cuts.
//
// The base tree is made by mmdebstrap from Debian's packages once and
// cached outside the repository, keyed by what went into it
// (CacheDir/base-<flavor>-<key>); every test copies it, installs tether
// and its boot integration in a chroot, and builds two disk images from
// it: /boot (ext4, unencrypted, so the harness can read the kernel and
// initramfs the guest itself rebuilt) and the root (LUKS2, encrypted in
// place by cryptsetup reencrypt with a PBKDF2 passphrase keyslot, since
// argon2 takes a minute under emulation).
//
// KVM is unusable on the project's machines, so guests run under TCG:
// a boot to multi-user.target takes 40–90 s. The key servers run on the
// host; the guest reaches them at fixed addresses (ServerAddr, ...) that
// QEMU forwards to whatever loopback port the test's server has, so a
// binding made once works against any run's server.
package realboot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// Flavor names the initramfs generator of a base image.
type Flavor string

const (
	InitramfsTools Flavor = "initramfs-tools"
	Dracut         Flavor = "dracut"
)

// Suite and the package lists define the base images; changing any of
// them changes the cache key.
const Suite = "bookworm"

var commonPackages = []string{
	"linux-image-amd64", "systemd-sysv", "udev", "kmod", "cryptsetup",
	"iproute2", "procps", "e2fsprogs",
}

var flavorPackages = map[Flavor][]string{
	InitramfsTools: {"cryptsetup-initramfs", "initramfs-tools"},
	// dracut's network module takes systemd-networkd, which needs dbus in
	// the initramfs: without the dbus package "dracut -f" refuses every
	// module that needs the network.
	Dracut: {"dracut", "dracut-network", "dbus"},
}

// harnessVersion is part of the cache key: bump it when Base changes what
// it does to a tree.
const harnessVersion = "1"

// CacheDir is where base trees are kept between runs:
// $TETHER_TEST_CACHE, else /var/cache/tether-test.
func CacheDir() string {
	if d := os.Getenv("TETHER_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/tether-test"
}

// Mirror is the Debian mirror apt already uses on this machine (the
// testbed reaches no other), read from its sources.
func Mirror() string {
	if m := os.Getenv("TETHER_TEST_MIRROR"); m != "" {
		return m
	}
	for _, f := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			fs := strings.Fields(line)
			switch {
			case len(fs) >= 2 && fs[0] == "URIs:" && !strings.Contains(fs[1], "security"):
				return fs[1]
			case len(fs) >= 3 && fs[0] == "deb" && !strings.Contains(fs[1], "security"):
				return fs[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// Require skips (locally) or fails (CI) unless the tools the harness needs
// are here and the tests run as root (chroot, mkfs into image files).
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, c := range []string{"mmdebstrap", "qemu-system-x86_64", "cryptsetup", "mkfs.ext4", "debugfs", "socat", "unshare"} {
		testenv.RequireCmd(t, c)
	}
	if testing.Short() {
		t.Skip("skipping real-boot guests in -short mode")
	}
}

// Base returns the cached base tree of flavor, building it first if it is
// not there.
func Base(t testing.TB, flavor Flavor) string {
	t.Helper()
	pkgs := append(append([]string{}, commonPackages...), flavorPackages[flavor]...)
	mirror := Mirror()
	sum := sha256.Sum256([]byte(strings.Join([]string{harnessVersion, Suite, mirror, strings.Join(pkgs, ",")}, "\n")))
	name := fmt.Sprintf("base-%s-%s", flavor, hex.EncodeToString(sum[:8]))
	return cached(t, name, func(tmp string) error {
		t.Logf("building the %s base image with mmdebstrap from %s (once; cached in %s)", flavor, mirror, CacheDir())
		// In a private mount namespace: the proc, sys and dev mounts
		// mmdebstrap makes in the tree go with it even when it is killed
		// (a killed build once left them mounted under the cache).
		cmd := exec.Command("unshare", "--mount", "--propagation", "private",
			"mmdebstrap", "--variant=minbase", "--include="+strings.Join(pkgs, ","), Suite, tmp, mirror)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("mmdebstrap: %v\n%s", err, tail(out, 4000))
		}
		return prepareBase(tmp)
	})
}

// cached returns CacheDir/name, made first by build (into a temporary
// folder renamed into place when build succeeds) if an earlier run has not
// made it. Concurrent test processes wait for one build (flock).
func cached(t testing.TB, name string, build func(tmp string) error) string {
	t.Helper()
	dir := filepath.Join(CacheDir(), name)
	if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir
	}
	tmp := dir + ".building"
	// A build killed by an older harness may have left mounts in its tree:
	// removing through them would reach the host's /proc, /sys or /dev.
	if err := unmountUnder(tmp); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := build(tmp); err != nil {
		os.RemoveAll(tmp)
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// prepareBase makes the settings every guest shares: DHCP by
// systemd-networkd and the ciphers the initramfs must hold (a chroot
// cannot read the root's LUKS header, so the cryptroot hook cannot find
// them). The test runner is written by New, so that changing it needs no
// new base.
func prepareBase(tree string) error {
	files := map[string]string{
		"etc/hostname":                        "guest\n",
		"etc/systemd/network/50-dhcp.network": "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
		"etc/initramfs-tools/modules":         "dm_crypt\nxts\naesni_intel\naes_generic\nalgif_skcipher\n",
	}
	for p, data := range files {
		full := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.Contains(p, "sbin/") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(data), mode); err != nil {
			return err
		}
	}
	for link, to := range map[string]string{
		"etc/systemd/system/multi-user.target.wants/systemd-networkd.service": "/lib/systemd/system/systemd-networkd.service",
		"etc/systemd/system/multi-user.target.wants/tether-test.service":      "/etc/systemd/system/tether-test.service",
	} {
		full := filepath.Join(tree, link)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.Remove(full)
		if err := os.Symlink(to, full); err != nil {
			return err
		}
	}
	return nil
}

// testUnit prints the READY marker once multi-user.target is reached (the
// console line systemd prints itself can be lost when a getty starts at
// the same moment) and runs the test's script from the script disk.
const testUnit = `[Unit]
Description=tether real-boot test runner
After=multi-user.target
[Service]
Type=oneshot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
ExecStart=/usr/local/sbin/tether-test-run
[Install]
WantedBy=multi-user.target
`

// testRunner is what tether-test.service runs: the script disk (a tar
// attached with serial "testscript") holds run.sh; with no script disk the
// guest powers off once up.
//
// dmesg -n 1 first: kernel messages printed on the console in the middle
// of a marker line split it. Every line opens the console anew: a password
// prompt on the console (systemd-ask-password-console.service) hangs the
// terminal up as it starts (vhangup), which revokes the descriptors open
// then, and a runner writing on its old one printed nothing more.
const testRunner = `#!/bin/sh
say() { printf '%s\n' "$1" > /dev/ttyS0; }
dmesg -n 1 2>/dev/null
root=$(findmnt -no SOURCE /)
say "@@ROOT $root"
say "@@READY $(cut -d' ' -f1 /proc/uptime) root=$root"
disk=/dev/disk/by-id/virtio-testscript
if [ -e "$disk" ]; then
    mkdir -p /run/test
    tar -xf "$disk" -C /run/test
    (cd /run/test && sh ./run.sh 2>&1; echo "@@RC $?") | while IFS= read -r l; do
        case $l in "@@RC "*) echo "${l#@@RC }" > /run/test-rc ;; *) say "$l" ;; esac
    done
    say "@@DONE $(cat /run/test-rc 2>/dev/null) $(cut -d' ' -f1 /proc/uptime)"
fi
[ -e /run/test/keep-running ] || systemctl poweroff
`

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// unmountUnder detaches every mount at or below dir (deepest first) and
// fails if any is left.
func unmountUnder(dir string) error {
	under := func() ([]string, error) {
		data, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return nil, err
		}
		var out []string
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
				out = append(out, f[4])
			}
		}
		sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
		return out, nil
	}
	ms, err := under()
	if err != nil {
		return err
	}
	for _, m := range ms {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if left, _ := under(); len(left) > 0 {
		return fmt.Errorf("%s still has mounts (%s): unmount them (umount -R -l %s) before the base image is built again", dir, strings.Join(left, ", "), dir)
	}
	return nil
}
