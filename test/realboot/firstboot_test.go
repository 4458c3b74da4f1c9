package realboot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// firstBootRootMiB is the root image of the first-boot tests: small, since
// the guest encrypts all of it under emulation.
const firstBootRootMiB = 512

// trimTree removes from the tree what a server does not need (documents,
// translations, drivers for hardware QEMU does not have), after the
// initramfs was built, so that the root fits firstBootRootMiB.
func trimTree(t *testing.T, g *Guest) {
	t.Helper()
	for _, p := range []string{"usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"} {
		os.RemoveAll(filepath.Join(g.Tree, p))
	}
	mods, _ := filepath.Glob(filepath.Join(g.Tree, "usr/lib/modules/*/kernel"))
	for _, k := range mods {
		for _, p := range []string{"sound", "drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/iio",
			"drivers/net/wireless", "drivers/net/ethernet", "drivers/scsi", "drivers/staging", "drivers/bluetooth",
			"drivers/input/touchscreen", "drivers/hid", "net/wireless", "net/mac80211", "net/bluetooth", "fs/ocfs2",
			"fs/xfs", "fs/btrfs", "fs/nfs", "fs/cifs", "fs/smb"} {
			os.RemoveAll(filepath.Join(k, p))
		}
	}
}

// writeSums puts a data file into the tree and returns sha256sum -c input
// for it and every file under /usr/bin and /usr/lib/x86_64-linux-gnu:
// files nothing changes at boot, checked in the booted guest.
func writeSums(t *testing.T, g *Guest) []byte {
	t.Helper()
	blob := make([]byte, 24<<20)
	rand.New(rand.NewSource(17)).Read(blob)
	g.Write("/var/lib/first-boot-data/blob", blob, 0o644)
	var b strings.Builder
	for _, dir := range []string{"var/lib/first-boot-data", "usr/bin", "usr/lib/x86_64-linux-gnu"} {
		filepath.Walk(filepath.Join(g.Tree, dir), func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			io.Copy(h, f)
			f.Close()
			fmt.Fprintf(&b, "%s  /%s\n", hex.EncodeToString(h.Sum(nil)), strings.TrimPrefix(p, g.Tree+"/"))
			return nil
		})
	}
	if strings.Count(b.String(), "\n") < 100 {
		t.Fatalf("too few files to check:\n%s", b.String())
	}
	return []byte(b.String())
}

// firstBootCheck runs in the booted guest: the checksums, the root's
// source and its bindings.
const firstBootCheck = `
# Each marker also goes to the kernel log (level 2, always on the console):
# a getty starting on ttyS0 at the same moment can swallow this unit's output.
say() { echo "$1"; echo "<2>$1" > /dev/kmsg; }
say "@@ROOT $(findmnt -no SOURCE /)"
cd /
if sha256sum -c --quiet /run/test/sums; then say "@@SUMS ok $(wc -l < /run/test/sums)"; else say "@@SUMS bad"; fi
tether luks list -d /dev/vdb 2>&1 | while read -r l; do say "@@LIST $l"; done
`

// noTemporaryKey checks on the host that a finished first boot left no
// trace of the temporary key in the header: no label, no keyslot beyond
// the binding and the recovery passphrase, no token but the binding.
func noTemporaryKey(t *testing.T, g *Guest, wantSlots int) {
	t.Helper()
	out, err := exec.Command("cryptsetup", "luksDump", "--dump-json-metadata", g.RootImg).Output()
	if err != nil {
		t.Fatalf("luksDump: %v", err)
	}
	var md struct {
		Keyslots map[string]json.RawMessage             `json:"keyslots"`
		Tokens   map[string]struct{ Type string }       `json:"tokens"`
		Config   map[string]json.RawMessage             `json:"config"`
		Segments map[string]struct{ Type string }       `json:"segments"`
		Digests  map[string]struct{ Keyslots []string } `json:"digests"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "reencrypt") {
		t.Errorf("the header still has the reencryption:\n%s", out)
	}
	if len(md.Keyslots) != wantSlots {
		t.Errorf("want %d keyslots, have %d:\n%s", wantSlots, len(md.Keyslots), out)
	}
	if _, ok := md.Keyslots["0"]; ok {
		t.Errorf("keyslot 0 (the temporary key's) is still there:\n%s", out)
	}
	for id, tok := range md.Tokens {
		if tok.Type != "clevis" {
			t.Errorf("token %s is %q, want only the clevis binding", id, tok.Type)
		}
	}
	if len(md.Tokens) != 1 {
		t.Errorf("want one token (the binding), have %d", len(md.Tokens))
	}
	// The label is in the binary header, not in the JSON.
	dump, _ := exec.Command("cryptsetup", "luksDump", g.RootImg).Output()
	if strings.Contains(string(dump), "tether-encrypt") || !strings.Contains(string(dump), "(no subsystem)") {
		t.Errorf("the subsystem label is not cleared:\n%s", dump)
	}
}

// TestFirstBoot boots a real Debian 12 whose root is a plain ext4
// filesystem and whose initramfs has tether's first-boot mode (tether
// install initramfs-tools --first-boot): the initramfs encrypts the root
// in place, binds it to sss(t=1) of the guest's TPM (swtpm, PCR 7) and a
// Tang server, writes the recovery passphrase to a "USB stick" (an ext4
// disk labelled FBKEYS), removes the temporary key and boots on from
// /dev/mapper/root; the next boot unlocks it unattended. Every checked
// file is byte-identical in the booted system both times.
//
//   - unattended: no interruption;
//   - power-cuts: QEMU is killed at random moments of the first-boot
//     encryption (0–5 s after it starts: before or during the header
//     write; at random percentages; in the bind and the removal of the
//     temporary key), up to 6 times per image; each next boot carries on.
//     Rounds (fresh images): $TETHER_FIRSTBOOT_ROUNDS (default 1).
func TestFirstBoot(t *testing.T) { firstBoot(t, InitramfsTools) }

// TestFirstBootDracut is TestFirstBoot with an initramfs built by Debian's
// dracut (tether install dracut --first-boot): module 91tether-first-boot's
// service encrypts the root before systemd-cryptsetup opens it, and
// tether's password agent answers for the new binding.
func TestFirstBootDracut(t *testing.T) { firstBoot(t, Dracut) }

func firstBoot(t *testing.T, flavor Flavor) {
	testenv.RequireCmd(t, "swtpm")
	g := New(t, flavor)
	srv := testenv.StartServer(t, "")
	adv := fetchAdv(t, srv.URL)
	fwd := map[string]string{ServerAddr: hostPort(srv.URL)}
	policy := fmt.Sprintf(`{"t":1,"pins":{"tpm2":[{"pcr_ids":"7"}],"tang":[%s]}}`, tangConfig(ServerAddr, adv))
	install := "tether install " + string(flavor) + " --first-boot /dev/vdb --first-boot-recovery LABEL=FBKEYS:/root.key sss '" + policy + "'\n"
	// What opened the root, on the console: tether's own open in the
	// initramfs-tools script, the password agent under dracut.
	opened := `tether: opened /dev/vdb as /dev/mapper/root`
	cmdline := "loglevel=4 no_timer_check"
	var want []string
	if flavor == Dracut {
		install += `kver=$(ls /lib/modules | sort -V | tail -1)
dracut -q -f --no-hostonly --kver "$kver" --add "crypt tether" --add-drivers "virtio_blk virtio_pci virtio_net dm_crypt" 2>&1 | grep -v 'could not be found' || true
lsinitrd /boot/initrd.img-$kver | grep -E 'tether-first-boot|etc/tether/first-boot.conf$|etc/crypttab$'
lsinitrd -f /etc/crypttab /boot/initrd.img-$kver
`
		opened = `askpass: cryptsetup:\S+: answered`
		cmdline += " " + slowSystemd
		want = []string{"usr/lib/tether/tether-first-boot", "tether-first-boot.service", "etc/tether/first-boot.conf", "root /dev/vdb none luks"}
	} else {
		install += "update-initramfs -u -k all\nlsinitramfs /boot/initrd.img-* | grep -E 'local-top/tether-first-boot$|etc/tether/first-boot.conf$'\n"
		want = []string{"scripts/local-top/tether-first-boot", "etc/tether/first-boot.conf"}
	}
	out := g.Chroot(install)
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("the initramfs has no %s:\n%s", w, out)
		}
	}
	trimTree(t, g)
	sums := writeSums(t, g)
	keys := filepath.Join(g.Dir, "keys.img")
	fresh := func() {
		g.MakePlainDisks(firstBootRootMiB)
		os.Remove(keys)
		for _, c := range [][]string{{"truncate", "-s", "16M", keys}, {"mkfs.ext4", "-q", "-F", "-L", "FBKEYS", keys}} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", c, err, out)
			}
		}
	}
	tpmState := t.TempDir()
	// Every power cut counts as a dictionary-attack failure at the TPM's
	// next startup (it cannot tell a cut from an attack), and swtpm's
	// default allows 3, forgiving one per 1000 s: a few cuts in a row and
	// the bind cannot seal (tether says so and the next boot tries again;
	// docs/BOOT.md). Here the TPM allows 32 and forgives one per 10 s of
	// uptime (hardware TPMs commonly allow 32), so that the cuts test the
	// first boot and not the TPM's lockout.
	onHostTPM(t, tpmState, "tpm2_dictionarylockout", "--setup-parameters", "--max-tries=32", "--recovery-time=10", "--lockout-recovery-time=10")
	var da []string
	lines := strings.Split(onHostTPM(t, tpmState, "tpm2_getcap", "properties-variable"), "\n")
	for _, l := range lines {
		if strings.Contains(l, "TPM2_PT_MAX_AUTH_FAIL") || strings.Contains(l, "TPM2_PT_LOCKOUT_INTERVAL") || strings.Contains(l, "TPM2_PT_LOCKOUT_COUNTER") {
			da = append(da, strings.TrimSpace(l))
		}
	}
	if len(da) != 3 || !strings.Contains(strings.Join(da, " "), "TPM2_PT_MAX_AUTH_FAIL: 0x20") {
		t.Fatalf("the guest's TPM's dictionary-attack settings are not set: %v", da)
	}
	boot := func(t *testing.T, log string) *Machine {
		// loglevel=4: fewer kernel lines to interleave with the markers;
		// no_timer_check: under TCG on a loaded host the kernel's IO-APIC
		// timer check can fail and panic ("IO-APIC + timer doesn't work").
		return g.Boot(Options{Forward: fwd, TPM: startSWTPM(t, tpmState), Disks: []string{keys}, Append: cmdline,
			Script: firstBootCheck, Files: map[string][]byte{"sums": sums}, Log: log})
	}
	// verify is a boot that must end in the booted system with every file
	// intact; encrypts says whether the initramfs is to do (or finish) the
	// first-boot work in it.
	verify := func(t *testing.T, m *Machine, encrypts bool) {
		t.Helper()
		if encrypts {
			m.WaitFor(`tether: first boot: /dev/vdb is encrypted and bound`, 0, 12*time.Minute)
		}
		_, _, at := m.WaitFor(opened, 0, 12*time.Minute)
		// Kernel messages on the same serial console can split a marker
		// line: the root is printed twice, and the test ends on power-off.
		m.Expect(`@@SUMS`, 0, 8*time.Minute)
		m.WaitExit(2 * time.Minute)
		if r := append(m.Markers("READY"), m.Markers("ROOT")...); !slices.ContainsFunc(r, func(s string) bool { return strings.Contains(s, "/dev/mapper/root") }) {
			t.Fatalf("the booted root is not /dev/mapper/root: READY %v ROOT %v", m.Markers("READY"), m.Markers("ROOT"))
		}
		s := m.Markers("SUMS")
		if len(s) == 0 || slices.ContainsFunc(s, func(x string) bool { return !strings.HasPrefix(x, "ok") }) {
			t.Fatalf("files on the root differ from before: %v", s)
		}
		if !encrypts && strings.Contains(m.Console(), "first boot: encrypting") {
			t.Errorf("the finished root was encrypted again")
		}
		t.Logf("root opened %s after power-on; bindings: %v", at.Round(time.Second), m.Markers("LIST"))
	}
	recoveryOpens := func(t *testing.T) {
		t.Helper()
		rec := filepath.Join(t.TempDir(), "root.key")
		if out, err := exec.Command("debugfs", "-R", "dump /root.key "+rec, keys).CombinedOutput(); err != nil {
			t.Fatalf("read the recovery file from the medium: %v\n%s", err, out)
		}
		if out, err := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file", rec, g.RootImg).CombinedOutput(); err != nil {
			t.Fatalf("the recovery passphrase on the medium does not open the root: %v\n%s", err, out)
		}
	}

	t.Run("unattended", func(t *testing.T) {
		fresh()
		start := time.Now()
		verify(t, boot(t, "first-boot.log"), true)
		t.Logf("first boot (encrypt %d MiB, bind, boot on) took %s", firstBootRootMiB, time.Since(start).Round(time.Second))
		noTemporaryKey(t, g, 2)
		recoveryOpens(t)
		noTPMObjects(t, tpmState)
		verify(t, boot(t, "second-boot.log"), false)
	})

	t.Run("power-cuts", func(t *testing.T) {
		rounds := 1
		if n, err := strconv.Atoi(os.Getenv("TETHER_FIRSTBOOT_ROUNDS")); err == nil && n > 0 {
			rounds = n
		}
		rng := rand.New(rand.NewSource(time.Now().UnixNano()))
		cuts, late := 0, 0
		for r := 0; r < rounds; r++ {
			fresh()
			// The progress a cut during the encryption reached: the next
			// cut of this image falls later, so that each one interrupts
			// the encryption again.
			done := 0
			// As the encryption starts (before or during the header
			// write), during the encryption, and in the bind and the
			// removal of the temporary key.
			for i, phase := range []string{"start", "encrypting", "encrypting", "encrypting", "bind", "bind"} {
				before := rootState(g)
				if before == "LUKS, finished" {
					t.Logf("round %d: finished before cut %d; no more cuts", r, i)
					break
				}
				m := boot(t, fmt.Sprintf("cut-%d-%d.log", r, i))
				_, idx, _ := m.WaitFor(`tether: first boot: encrypting /dev/vdb`, 0, 10*time.Minute)
				var wait time.Duration
				switch {
				case phase == "start":
					// The header is written 3–10 s after the line (more
					// under load): cuts in the first 5 s fall before it,
					// or while it is written, half the time or more; in
					// the runs of 2026-12-04 a 0–12 s window never did.
					wait = time.Duration(rng.Intn(5000)) * time.Millisecond
				case phase == "encrypting" && done < 90 && before != "LUKS, data encrypted, temporary key still in the header (bind/cleanup unfinished)":
					waitPercent(t, m, idx, done+1+rng.Intn(95-done))
				case before == "no LUKS header" || before == "LUKS, encryption unfinished":
					// A resumed run near its end can finish the rest in
					// cryptsetup's recovery, with no progress line.
					m.WaitFor(`tether: encrypting: 100%|all data is encrypted|first boot: /dev/vdb is encrypted and bound`, idx, 20*time.Minute)
					wait = time.Duration(rng.Intn(8000)) * time.Millisecond
				default:
					wait = time.Duration(rng.Intn(8000)) * time.Millisecond
				}
				time.Sleep(wait)
				last := lastTetherLine(m.Console())
				m.Kill()
				if p := lastPercent(m.Console()); p > done {
					done = p
				}
				// A cut after the job was done interrupts nothing of it:
				// said, and not counted.
				if strings.Contains(m.Console(), "first boot: /dev/vdb is encrypted and bound") {
					late++
					t.Logf("round %d cut %d (%s, +%s; root before: %s): the first-boot work had finished before the power cut (not counted); root after: %s", r, i, phase, wait, before, rootState(g))
					continue
				}
				cuts++
				t.Logf("round %d cut %d (%s, +%s; root before: %s): power cut after %q; root after: %s", r, i, phase, wait, before, last, rootState(g))
			}
			verify(t, boot(t, fmt.Sprintf("cut-%d-done.log", r)), rootState(g) != "LUKS, finished")
			noTemporaryKey(t, g, 2)
			recoveryOpens(t)
			noTPMObjects(t, tpmState)
		}
		t.Logf("%d power cuts during the first-boot work in %d rounds (%d more after it had finished); every next boot finished the job with the files intact", cuts, rounds, late)
	})
}

// lastTetherLine is the last console line of tether's, where a cut fell.
func lastTetherLine(console string) string {
	lines := strings.Split(console, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "tether") {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}

// waitPercent waits for a progress line of at least pct percent.
func waitPercent(t *testing.T, m *Machine, from, pct int) {
	t.Helper()
	for {
		line, idx, _ := m.WaitFor(`tether: encrypting: +[0-9]+%|first boot: /dev/vdb is encrypted|first boot: encrypting .* failed`, from, 20*time.Minute)
		if !strings.Contains(line, "tether: encrypting:") {
			return // no progress lines left in this run
		}
		f := strings.Fields(line[strings.Index(line, "encrypting:")+len("encrypting:"):])
		if n, err := strconv.Atoi(strings.TrimSuffix(f[0], "%")); err == nil && n >= pct {
			return
		}
		from = idx + 1
	}
}

// rootState says what a cut left on the root image: no header yet, an
// unfinished encryption, or a finished one still holding the temporary
// key, or done.
func rootState(g *Guest) string {
	out, err := exec.Command("cryptsetup", "luksDump", "--dump-json-metadata", g.RootImg).Output()
	switch {
	case err != nil:
		return "no LUKS header"
	case strings.Contains(string(out), "online-reencrypt"):
		return "LUKS, encryption unfinished"
	case strings.Contains(string(textDump(g)), "tether-encrypt"):
		return "LUKS, data encrypted, temporary key still in the header (bind/cleanup unfinished)"
	default:
		return "LUKS, finished"
	}
}

func textDump(g *Guest) []byte {
	out, _ := exec.Command("cryptsetup", "luksDump", g.RootImg).Output()
	return out
}

// onHostTPM starts an swtpm on the state a guest's TPM keeps in state,
// reachable from the host over TCP, and runs tpm2-tools command args
// (without -T) against it, retrying while swtpm starts; it returns the
// output.
func onHostTPM(t *testing.T, state string, args ...string) string {
	t.Helper()
	testenv.RequireCmd(t, args[0])
	addr := testenv.FreePort(t)
	port, _ := strconv.Atoi(addr[strings.LastIndex(addr, ":")+1:])
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1), "--flags", "startup-clear")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	tcti := fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port)
	var out []byte
	var err error
	for i := 0; i < 50; i++ {
		c := exec.Command(args[0], append([]string{"-T", tcti}, args[1:]...)...)
		if out, err = c.CombinedOutput(); err == nil {
			return string(out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%v: %v\n%s", args, err, out)
	return ""
}

// noTPMObjects checks that the guest's TPM holds no persistent object and
// no NV index: tether's tpm2 pin seals into the JWE and keeps nothing in
// the TPM, and the temporary key never goes there.
func noTPMObjects(t *testing.T, state string) {
	t.Helper()
	for _, what := range []string{"handles-persistent", "handles-nv-index"} {
		if out := onHostTPM(t, state, "tpm2_getcap", what); strings.TrimSpace(out) != "" {
			t.Errorf("the TPM holds %s after the first boot:\n%s", what, out)
		}
	}
}

// lastPercent is the progress of the last "tether: encrypting: N%" line.
func lastPercent(console string) int {
	i := strings.LastIndex(console, "tether: encrypting:")
	if i < 0 {
		return 0
	}
	f := strings.Fields(console[i+len("tether: encrypting:"):])
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSuffix(f[0], "%"))
	return n
}
