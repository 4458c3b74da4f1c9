package realboot

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestUpgradeAndPowerCut boots a real Debian whose root is bound to a
// tether server through the initramfs-tools hook, then changes it the
// ways that break hand-made setups, and boots it again after each:
//
//   - kernel: a newer kernel package is installed with dpkg inside the
//     running guest (MODULES=dep); Debian's own postinst hook builds its
//     initramfs (with tether's hook), and the guest boots the new kernel
//     unattended;
//   - reinstall: systemd and cryptsetup are reinstalled (their
//     triggers rebuild the initramfs again), systemctl daemon-reload, and
//     the next boot is still unattended;
//   - powercut: QEMU is killed during a tether luks regen in the guest,
//     and twice in a row at random moments of boot; each boot after
//     them unlocks unattended.
func TestUpgradeAndPowerCut(t *testing.T) {
	g := New(t, InitramfsTools)
	installInitramfsTools(g)
	g.MakeDisks()
	srv := testenv.StartServer(t, "")
	adv := fetchAdv(t, srv.URL)
	fwd := map[string]string{ServerAddr: hostPort(srv.URL)}
	g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "tang", tangConfig(ServerAddr, adv))

	// unattended boots the guest with the server reachable and waits for
	// the root opened by tether and multi-user.target; the caller waits
	// for o.Script, if any, and the power-off. Each boot that checks a
	// step also carries the next step's script, so the story takes six
	// boots, not ten.
	unattended := func(t *testing.T, o Options) *Machine {
		t.Helper()
		o.Forward = fwd
		m := g.Boot(o)
		m.WaitFor(`tether: opened /dev/vdb as /dev/mapper/root`, 0, 5*time.Minute)
		m.WaitReady(0, 5*time.Minute, "/dev/mapper/root")
		return m
	}
	reinstallDebs := Debs(t, "systemd", "systemd-sysv", "udev", "libsystemd0", "libsystemd-shared", "libudev1",
		"cryptsetup", "cryptsetup-bin", "cryptsetup-initramfs", "libcryptsetup12")
	const reinstall = `
t0=$(date +%s)
dpkg -i ./*.deb 2>&1 | tail -5
systemctl daemon-reload
echo "@@SECONDS $(( $(date +%s) - t0 ))"
sync
`
	// regen rewrites the binding (keyslot and token) in a loop until the
	// power goes.
	const regen = `
touch /run/test/keep-running
i=0
while true; do
    i=$((i+1))
    slot=$(tether luks list -d /dev/vdb | sed -n 's/^\([0-9]*\): tang.*/\1/p' | head -1)
    tether luks regen -d /dev/vdb -s "$slot" >/dev/null 2>&1 </dev/null
    echo "@@REGEN $i $?"
done
`
	// next is the booted guest that checks one step and runs the next
	// step's script.
	var next *Machine

	t.Run("kernel", func(t *testing.T) {
		kpkg := KernelPackage(t)
		m := g.Boot(Options{Forward: fwd, Files: Debs(t, kpkg), Log: "kernel-install.log", Script: `
uname -r
` + modulesDep + `
t0=$(date +%s)
dpkg -i ./linux-image-*.deb 2>&1 | tail -5
echo "@@SECONDS $(( $(date +%s) - t0 ))"
systemctl daemon-reload
echo "@@BOOT $(ls /boot | tr '\n' ' ')"
lsinitramfs /boot/initrd.img-` + strings.TrimPrefix(kpkg, "linux-image-") + ` | grep -c 'sbin/tether$' | sed 's/^/@@HOOK /'
sync
`})
		m.WaitFor(`@@DONE`, 0, 30*time.Minute)
		m.WaitExit(2 * time.Minute)
		t.Logf("dpkg -i %s took %v s in the guest", kpkg, m.Markers("SECONDS"))
		ver := strings.TrimPrefix(kpkg, "linux-image-")
		if b := m.Markers("BOOT"); len(b) == 0 || !strings.Contains(b[0], "initrd.img-"+ver) {
			t.Fatalf("no initramfs for %s after installing %s: %v", ver, kpkg, b)
		}
		if h := m.Markers("HOOK"); len(h) == 0 || h[0] != "1" {
			t.Fatalf("the new kernel's initramfs has no tether: %v", h)
		}
		// The new kernel boots unattended; the same boot reinstalls
		// systemd and cryptsetup (the next step).
		next = unattended(t, Options{Files: reinstallDebs, Script: reinstall, Log: "kernel-boot.log"})
		if !strings.Contains(next.Console(), "Linux version "+ver) {
			t.Fatalf("the guest did not boot the new kernel %s", ver)
		}
	})
	if next == nil {
		return
	}

	t.Run("reinstall", func(t *testing.T) {
		m := next
		next = nil
		m.WaitFor(`@@DONE 0`, 0, 20*time.Minute)
		m.WaitExit(2 * time.Minute)
		t.Logf("reinstalling systemd and cryptsetup took %v s in the guest", m.Markers("SECONDS"))
		// Unattended after the reinstall; the same boot then runs
		// regen in a loop for the power cut.
		next = unattended(t, Options{Script: regen, Log: "reinstall-boot.log"})
	})
	if next == nil {
		return
	}

	t.Run("powercut", func(t *testing.T) {
		rng := rand.New(rand.NewSource(time.Now().UnixNano()))
		m := next
		m.WaitFor(`@@REGEN 2 0`, 0, 8*time.Minute)
		time.Sleep(time.Duration(rng.Intn(3000)) * time.Millisecond)
		m.Kill()
		t.Logf("power cut after %d regen runs", len(m.Markers("REGEN")))
		m = unattended(t, Options{Log: "after-cut-regen.log"})
		m.WaitExit(2 * time.Minute)
		// During boot: anywhere from the kernel to multi-user.target,
		// twice in a row, then a boot that must unlock.
		for i := 0; i < 2; i++ {
			m := g.Boot(Options{Forward: fwd, Log: fmt.Sprintf("cut-boot-%d.log", i)})
			at := time.Duration(5+rng.Intn(70)) * time.Second
			time.Sleep(at)
			m.Kill()
			t.Logf("power cut %s after power-on", at)
		}
		m = unattended(t, Options{Log: "after-cut-boot.log"})
		m.WaitExit(2 * time.Minute)
	})
}
