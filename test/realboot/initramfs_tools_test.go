package realboot

import (
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestMain removes the binaries testenv.TetherBin builds.
func TestMain(m *testing.M) { testenv.Main(m) }

// fetchAdv returns a server's advertisement (the JWS), so a binding can be
// made on the host for a URL only the guest reaches.
func fetchAdv(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s/adv: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}

// hostPort is the host:port of a server URL.
func hostPort(url string) string {
	return url[strings.Index(url, "//")+2:]
}

// tangConfig is a tang pin config for a guest address, with the
// advertisement inline (the host cannot reach the guest's address).
func tangConfig(guestAddr, adv string) string {
	return fmt.Sprintf(`{"url":"http://%s","adv":%s}`, guestAddr, adv)
}

// installInitramfsTools runs tether's own install and Debian's
// update-initramfs in the tree, as an owner would on the machine.
func installInitramfsTools(g *Guest) {
	g.t.Helper()
	out := g.Chroot("tether install initramfs-tools\nupdate-initramfs -u -k all\nlsinitramfs /boot/initrd.img-* | grep -E 'sbin/tether$|local-top/tether$'\n")
	for _, want := range []string{"sbin/tether", "scripts/local-top/tether"} {
		if !strings.Contains(out, want) {
			g.t.Fatalf("the initramfs has no %s:\n%s", want, out)
		}
	}
}

// TestInitramfsTools boots one real Debian 12 whose root is on LUKS2 and
// whose initramfs was built by Debian's initramfs-tools with tether's hook,
// and takes it through the life of a machine. Each boot checks one step
// and carries the next step's script, so the story takes nine boots on
// one guest, not twenty on four. In every check only the binding under
// test can open the root (the others' servers are not forwarded, or the
// TPM is not attached) and the keyslot tether opened is checked:
//
//   - tang: bound to a tether server, the guest reaches multi-user.target
//     with nothing typed, root on /dev/mapper/root;
//   - sss-one-down: bound to any 1 of 2 servers, the first one down (it
//     never answers);
//   - kernel-tpm2: in that boot the root was also bound to sss(t=1) of
//     tpm2 (PCR 7, swtpm on a tpm-crb device) and the server, the guest
//     enrolled with the server's managed API and bound the root to the
//     managed pin, and a newer kernel package was installed with dpkg
//     (MODULES=dep): Debian's postinst built its initramfs with tether's
//     hook, which holds the TPM drivers and the managed identity. The new
//     kernel boots with no server reachable and the TPM alone opens the
//     root;
//   - reinstall-managed: in that boot systemd and cryptsetup were
//     reinstalled (their triggers rebuild the initramfs) and systemctl
//     daemon-reload run; the next boot, with only the managed API
//     reachable and no TPM, opens the root through the managed pin;
//   - powercut: QEMU is killed during "tether luks regen" of the TPM
//     binding in the guest (the next boot, TPM only, opens the root), and
//     twice in a row at random moments of boot; the boot after them
//     unlocks unattended.
//
// The server-down fallback to cryptroot's prompt is TestDataVolumes/down.
func TestInitramfsTools(t *testing.T) {
	testenv.RequireCmd(t, "swtpm")
	g := New(t, InitramfsTools)
	installInitramfsTools(g)
	g.MakeDisks()
	data := t.TempDir()
	managed := testenv.FreePort(t)
	srv := testenv.StartServer(t, data, "--managed-listen", managed, "--curve", "P-256")
	adv := fetchAdv(t, srv.URL)
	tang := map[string]string{ServerAddr: hostPort(srv.URL)}
	tangAndManaged := map[string]string{ServerAddr: hostPort(srv.URL), ManagedAddr: managed}
	tpmState := t.TempDir()
	g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "tang", tangConfig(ServerAddr, adv))

	// opened waits for the root opened by tether and multi-user.target
	// and returns the keyslot tether opened.
	opened := func(t *testing.T, m *Machine) string {
		t.Helper()
		line, _, at := m.WaitFor(`tether: opened /dev/vdb as /dev/mapper/root \(keyslot \d+\)`, 0, 10*time.Minute)
		m.WaitReady(0, 10*time.Minute, "/dev/mapper/root")
		slot := regexp.MustCompile(`keyslot (\d+)`).FindStringSubmatch(line)[1]
		t.Logf("root opened with keyslot %s %s after power-on", slot, at.Round(time.Second))
		return slot
	}
	// list is the end of every script: the root's bindings as the guest
	// sees them.
	const list = `
tether luks list -d /dev/vdb | sed 's/^/@@LIST /'
sync
`
	// slotOf is the keyslot of the binding whose "tether luks list" line
	// (from m's last LIST markers) matches re.
	slotOf := func(t *testing.T, m *Machine, re string) string {
		t.Helper()
		rx := regexp.MustCompile(re)
		for _, l := range m.Markers("LIST") {
			if rx.MatchString(l) {
				return strings.SplitN(l, ":", 2)[0]
			}
		}
		t.Fatalf("no binding %s in the guest's list: %q", re, m.Markers("LIST"))
		return ""
	}
	sssTwo := fmt.Sprintf(`{"t":1,"pins":{"tang":[%s,%s]}}`, tangConfig(Server2Addr, adv), tangConfig(ServerAddr, adv))
	sssTPM := fmt.Sprintf(`{"t":1,"pins":{"tpm2":[{"pcr_ids":"7"}],"tang":[%s]}}`, tangConfig(ServerAddr, adv))
	kpkg := KernelPackage(t)
	kver := strings.TrimPrefix(kpkg, "linux-image-")
	reinstallDebs := Debs(t, "systemd", "systemd-sysv", "udev", "libsystemd0", "libsystemd-shared", "libudev1",
		"cryptsetup", "cryptsetup-bin", "cryptsetup-initramfs", "libcryptsetup12")
	// next is the booted guest that checks one step and runs the next
	// step's script; prev is the one before it (its LIST markers name
	// the keyslots).
	var next, prev *Machine
	// top owns what outlives a step: the swtpm of a boot a step starts
	// for the next one (the guests are the guest's, g.t, already).
	top := t
	step := func(name string, f func(t *testing.T)) {
		if next == nil && name != "tang" {
			return
		}
		t.Run(name, f)
	}

	step("tang", func(t *testing.T) {
		m := g.Boot(Options{Forward: tang, Log: "tang.log", Files: map[string][]byte{"pass": []byte(Passphrase)}, Script: `
tether luks bind -d /dev/vdb -k ./pass sss '` + sssTwo + `' && echo "@@BOUND"
tether luks unbind -d /dev/vdb -s 1
` + list})
		if slot := opened(t, m); slot != "1" {
			t.Fatalf("the root opened with keyslot %s, not the tang binding's 1", slot)
		}
		m.WaitFor(`@@DONE`, 0, 5*time.Minute)
		m.WaitExit(3 * time.Minute)
		if !strings.Contains(m.Console(), "@@BOUND") || len(m.Markers("LIST")) != 1 {
			t.Fatalf("the root should have the sss binding alone: %q", m.Markers("LIST"))
		}
		prev = m
		// Server2Addr has no forward: nothing answers there.
		next = g.Boot(Options{Forward: tangAndManaged, TPM: startSWTPM(top, tpmState), Log: "sss-kernel-install.log",
			Files: merge(Debs(t, kpkg), map[string][]byte{"pass": []byte(Passphrase), "token": adminToken(t, g, data)}), Script: `
ls /dev/tpmrm0
tether luks bind -d /dev/vdb -k ./pass sss '` + sssTPM + `' && echo "@@BOUND tpm2"
tether enroll --server https://` + ManagedAddr + ` --token-file ./token --key-store file && echo "@@ENROLLED"
tether luks bind -d /dev/vdb -k ./pass managed '{}' && echo "@@BOUND managed"
tether install initramfs-tools --ip ` + staticIP + ` && echo "@@STATIC"
uname -r
` + modulesDep + `
t0=$(date +%s)
dpkg -i ./linux-image-*.deb 2>&1 | tail -5
echo "@@SECONDS $(( $(date +%s) - t0 ))"
systemctl daemon-reload
echo "@@BOOT $(ls /boot | tr '\n' ' ')"
lsinitramfs /boot/initrd.img-` + kver + ` | grep -c 'sbin/tether$' | sed 's/^/@@HOOK /'
` + list})
	})

	step("sss-one-down", func(t *testing.T) {
		m := next
		next = nil
		want := slotOf(t, prev, `^\d+: sss .*`+regexp.QuoteMeta(Server2Addr))
		if slot := opened(t, m); slot != want {
			t.Fatalf("the root opened with keyslot %s, not the sss binding's %s", slot, want)
		}
		// The kernel package: Debian's postinst builds its initramfs
		// under emulation.
		m.WaitFor(`@@DONE`, 0, 30*time.Minute)
		m.WaitExit(3 * time.Minute)
		t.Logf("dpkg -i %s took %v s in the guest", kpkg, m.Markers("SECONDS"))
		for _, want := range []string{"@@BOUND tpm2", "@@ENROLLED", "@@BOUND managed", "@@STATIC"} {
			if !strings.Contains(m.Console(), want) {
				t.Fatalf("no %s in the guest", want)
			}
		}
		if b := m.Markers("BOOT"); len(b) == 0 || !strings.Contains(b[0], "initrd.img-"+kver) {
			t.Fatalf("no initramfs for %s after installing %s: %v", kver, kpkg, b)
		}
		if h := m.Markers("HOOK"); len(h) == 0 || h[0] != "1" {
			t.Fatalf("the new kernel's initramfs has no tether: %v", h)
		}
		prev = m
		// No server is reachable: the TPM alone can open the root.
		next = g.Boot(Options{TPM: startSWTPM(top, tpmState), Files: reinstallDebs, Log: "tpm2-reinstall.log", Script: `
t0=$(date +%s)
dpkg -i ./*.deb 2>&1 | tail -5
systemctl daemon-reload
echo "@@SECONDS $(( $(date +%s) - t0 ))"
` + list})
	})

	step("kernel-tpm2", func(t *testing.T) {
		m := next
		next = nil
		want := slotOf(t, prev, `^\d+: sss .*tpm2`)
		if slot := opened(t, m); slot != want {
			t.Fatalf("the root opened with keyslot %s, not the TPM binding's %s", slot, want)
		}
		if !strings.Contains(m.Console(), "Linux version "+kver) {
			t.Fatalf("the guest did not boot the new kernel %s", kver)
		}
		m.WaitFor(`@@DONE 0`, 0, 20*time.Minute)
		m.WaitExit(3 * time.Minute)
		t.Logf("reinstalling systemd and cryptsetup took %v s in the guest", m.Markers("SECONDS"))
		prev = m
		// Only the managed API is reachable, and no TPM.
		next = g.Boot(Options{Forward: map[string]string{ManagedAddr: managed}, Log: "managed.log"})
	})

	step("reinstall-managed", func(t *testing.T) {
		m := next
		next = nil
		want := slotOf(t, prev, `^\d+: managed`)
		if slot := opened(t, m); slot != want {
			t.Fatalf("the root opened with keyslot %s, not the managed binding's %s", slot, want)
		}
		m.WaitExit(3 * time.Minute)
		// regen rewrites the TPM binding (keyslot and token) in a loop
		// until the power goes.
		next = g.Boot(Options{Forward: tang, TPM: startSWTPM(top, tpmState), Log: "regen.log", Script: `
touch /run/test/keep-running
i=0
while true; do
    i=$((i+1))
    slot=$(tether luks list -d /dev/vdb | sed -n 's/^\([0-9]*\): sss .*tpm2.*/\1/p' | head -1)
    tether luks regen -d /dev/vdb -s "$slot" >/dev/null 2>&1 </dev/null
    echo "@@REGEN $i $?"
done
`})
	})

	step("powercut", func(t *testing.T) {
		rng := rand.New(rand.NewSource(time.Now().UnixNano()))
		m := next
		opened(t, m)
		m.WaitFor(`@@REGEN 2 0`, 0, 8*time.Minute)
		time.Sleep(time.Duration(rng.Intn(3000)) * time.Millisecond)
		m.Kill()
		t.Logf("power cut after %d regen runs", len(m.Markers("REGEN")))
		// No server: only the TPM binding that was being rewritten can
		// open the root.
		m = g.Boot(Options{TPM: startSWTPM(t, tpmState), Log: "after-cut-regen.log", Script: list})
		opened(t, m)
		m.WaitExit(3 * time.Minute)
		// A cut between writing the new keyslot and removing the old
		// one may leave both; none may be lost.
		if l := m.Markers("LIST"); len(l) < 3 {
			t.Errorf("after the cut the root should still have its 3 bindings: %q", l)
		}
		// During boot: anywhere from the kernel to multi-user.target,
		// twice in a row, then a boot that must unlock.
		for i := 0; i < 2; i++ {
			m := g.Boot(Options{Forward: tang, Log: fmt.Sprintf("cut-boot-%d.log", i)})
			at := time.Duration(5+rng.Intn(70)) * time.Second
			time.Sleep(at)
			m.Kill()
			t.Logf("power cut %s after power-on", at)
		}
		// With no ip= on the kernel command line, the address the
		// initramfs was built with (--ip, in the sss-one-down step)
		// brings up the network, and no DHCP server is asked before the
		// root is open; the booted system's systemd-networkd asks one
		// after it, which shows the capture would have seen it.
		pcap := filepath.Join(t.TempDir(), "static.pcap")
		m = g.Boot(Options{Forward: tang, NoIP: true, Capture: pcap, Log: "after-cut-static.log"})
		_, _, at := m.WaitFor(`tether: opened /dev/vdb as /dev/mapper/root`, 0, 10*time.Minute)
		// local-bottom names the address it releases before the real
		// system starts: the one --ip set.
		m.WaitFor(`tether: released \w+ \(10\.0\.2\.50\)`, 0, 5*time.Minute)
		m.WaitReady(0, 10*time.Minute, "/dev/mapper/root")
		m.WaitExit(3 * time.Minute)
		after := noDHCPBefore(t, pcap, m, at)
		t.Logf("static address from --ip: root opened %s after power-on, no DHCP request before it (%d after, the booted system's)", at.Round(time.Second), after)
	})
}

// staticIP is the initramfs-tools ip= the chain's guest is built with
// (tether install --ip) and boots with when the kernel command line has
// none: QEMU's user network routes any address of its subnet, and this
// one is not the address its DHCP server hands out (10.0.2.15).
const staticIP = "10.0.2.50::10.0.2.2:255.255.255.0::enp0s4:off"

// adminToken makes an enrolment token with the server's admin CLI (the
// server's data directory holds its admin.json).
func adminToken(t *testing.T, g *Guest, data string) []byte {
	t.Helper()
	cmd := exec.Command(g.Tether, "admin", "token", "create")
	cmd.Env = append(os.Environ(), "TETHER_ADMIN_CONFIG="+filepath.Join(data, "admin.json"))
	tok, err := cmd.Output()
	if err != nil {
		t.Fatalf("admin token create: %v", err)
	}
	return tok
}

// merge is the union of script-disk file sets.
func merge(sets ...map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for _, s := range sets {
		for k, v := range s {
			out[k] = v
		}
	}
	return out
}

// modulesDep is a guest script line that makes initramfs-tools include only
// the modules the running guest uses (MODULES=dep), as many small machines
// are configured. A rebuild inside the guest then takes a few minutes under
// emulation instead of a quarter of an hour, and the boots that follow
// prove that tether's hook adds what it needs (network, TPM, crypto
// drivers) without relying on MODULES=most. Only a rebuild inside the
// guest may use it: in the host's chroot, dep would pick the host's modules.
const modulesDep = `sed -i 's/^MODULES=.*/MODULES=dep/' /etc/initramfs-tools/initramfs.conf`
