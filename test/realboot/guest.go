package realboot

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// Fixed addresses at which guests reach the host's key servers: QEMU
// forwards each to a loopback port chosen per run (Options.Forward), and
// the guest can reach nothing else (user networking with restrict=on), so
// an address with no forward is a server that never answers.
const (
	ServerAddr  = "10.0.2.100:7500"
	Server2Addr = "10.0.2.101:7500"
)

// Passphrase is the root volume's keyslot-0 passphrase, the one typed at
// the prompt when no binding can open it.
const Passphrase = "guest-recovery-passphrase"

// Guest is one test's copy of a base tree and the disk images built from
// it. Tree changes (Write, Chroot) take effect at the next MakeDisks;
// once the disks exist, the guest changes them itself when booted.
type Guest struct {
	t       testing.TB
	Flavor  Flavor
	Dir     string // everything of this guest
	Tree    string // the root filesystem tree
	BootImg string // /boot: ext4, plain (vda)
	RootImg string // /: LUKS2 (vdb)
	Tether  string // host tether binary (the same one installed in the tree)
}

// New copies the base tree of flavor and installs tether, tether-smb and
// tether-server in its /usr/bin, as the packages place them.
func New(t testing.TB, flavor Flavor) *Guest {
	t.Helper()
	Require(t)
	base := Base(t, flavor)
	dir := t.TempDir()
	g := &Guest{t: t, Flavor: flavor, Dir: dir, Tree: filepath.Join(dir, "tree"),
		BootImg: filepath.Join(dir, "boot.img"), RootImg: filepath.Join(dir, "root.img"),
		Tether: testenv.TetherBin(t)}
	start := time.Now()
	if out, err := exec.Command("cp", "-a", base, g.Tree).CombinedOutput(); err != nil {
		t.Fatalf("copy base tree: %v\n%s", err, out)
	}
	t.Logf("base tree copied in %s", time.Since(start).Round(100*time.Millisecond))
	for _, b := range []string{"tether", "tether-smb", "tether-server"} {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(g.Tether), b))
		if err != nil {
			t.Fatal(err)
		}
		g.Write("/usr/bin/"+b, data, 0o755)
	}
	// No login prompt on the serial console: a getty starting hangs up
	// the terminal (vhangup), which kills the test runner's script and
	// loses its output.
	// Nor the jobs a test never needs, which cost minutes under emulation
	// (e2scrub_reap ran for over 3 minutes of a loaded boot).
	for _, unit := range []string{"serial-getty@ttyS0.service", "e2scrub_reap.service", "e2scrub_all.timer",
		"apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer"} {
		p := filepath.Join(g.Tree, "etc/systemd/system", unit)
		os.Remove(p)
		if err := os.Symlink("/dev/null", p); err != nil {
			t.Fatal(err)
		}
	}
	g.Write("/etc/systemd/system/tether-test.service", []byte(testUnit), 0o644)
	g.Write("/usr/local/sbin/tether-test-run", []byte(testRunner), 0o755)
	if err := os.WriteFile(g.PassphraseFile(), []byte(Passphrase), 0o600); err != nil {
		t.Fatal(err)
	}
	// The root is /dev/vdb; "initramfs" makes cryptroot take the line
	// as written (in a chroot it cannot resolve devices), as Debian
	// documents for volumes the initramfs must open.
	g.Write("/etc/crypttab", []byte("root /dev/vdb none luks,initramfs\n"), 0o644)
	g.Write("/etc/fstab", []byte(Fstab), 0o644)
	return g
}

// Fstab is the guests' /etc/fstab. /boot waits for its disk up to 10
// minutes, not systemd's 90 s: a guest starved of CPU beside the unit
// tests (in CI) once had udev start only after that wait, and the boot
// went to emergency mode.
const Fstab = "/dev/mapper/root / ext4 defaults 0 1\n/dev/vda /boot ext4 defaults,x-systemd.device-timeout=10min 0 2\n"

// Write writes a file into the tree.
func (g *Guest) Write(path string, data []byte, mode os.FileMode) {
	g.t.Helper()
	full := filepath.Join(g.Tree, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(full, data, mode); err != nil {
		g.t.Fatal(err)
	}
	os.Chmod(full, mode)
}

// Chroot runs script with /bin/sh inside the tree, with /proc, /sys and
// /dev mounted in a private mount namespace (nothing leaks to the host's
// mounts), and returns its combined output.
func (g *Guest) Chroot(script string) string {
	g.t.Helper()
	t := g.Tree
	mounts := fmt.Sprintf("mount -t proc proc %[1]s/proc && mount -t sysfs sys %[1]s/sys && mount --bind /dev %[1]s/dev && mount -t tmpfs tmpfs %[1]s/run && exec chroot %[1]s /bin/sh -es", t)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", mounts)
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "HOME=/root"}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	g.t.Logf("chroot script (%d lines) took %s", strings.Count(script, "\n"), time.Since(start).Round(100*time.Millisecond))
	if err != nil {
		g.t.Fatalf("in the guest tree: %v\nscript:\n%s\noutput:\n%s", err, script, tail(out, 6000))
	}
	return string(out)
}

// MakeDisks builds boot.img from the tree's /boot and root.img from the
// whole tree, then encrypts root.img in place (LUKS2, keyslot 0 opened by
// Passphrase with PBKDF2, fast under emulation).
func (g *Guest) MakeDisks() {
	g.t.Helper()
	start := time.Now()
	defer func() { g.t.Logf("disks made in %s", time.Since(start).Round(100*time.Millisecond)) }()
	g.MakePlainDisks(2048)
	g.run("cryptsetup", "reencrypt", "-q", "--encrypt", "--type", "luks2", "--reduce-device-size", "32M",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", g.PassphraseFile(), g.RootImg)
}

// MakePlainDisks builds boot.img from the tree's /boot and root.img of
// sizeMiB holding the tree as a plain ext4 filesystem that leaves the last
// 32 MiB free: what an encryption in place needs for the LUKS2 header
// (MakeDisks, or a factory image encrypted at its first boot).
func (g *Guest) MakePlainDisks(sizeMiB int) {
	g.t.Helper()
	os.Remove(g.BootImg)
	os.Remove(g.RootImg)
	g.run("truncate", "-s", "320M", g.BootImg)
	g.run("mkfs.ext4", "-q", "-F", "-L", "boot", "-d", filepath.Join(g.Tree, "boot"), g.BootImg)
	g.run("truncate", "-s", fmt.Sprintf("%dM", sizeMiB), g.RootImg)
	// The root gets an empty /boot, the mount point of boot.img as on a
	// real machine: a generic dracut initramfs alone is ~100 MiB.
	boot, aside := filepath.Join(g.Tree, "boot"), filepath.Join(g.Dir, "boot-aside")
	if err := os.Rename(boot, aside); err != nil {
		g.t.Fatal(err)
	}
	defer func() {
		os.Remove(boot)
		if err := os.Rename(aside, boot); err != nil {
			g.t.Fatal(err)
		}
	}()
	if err := os.Mkdir(boot, 0o755); err != nil {
		g.t.Fatal(err)
	}
	g.run("mkfs.ext4", "-q", "-F", "-L", "root", "-d", g.Tree, g.RootImg, fmt.Sprintf("%dM", sizeMiB-32))
}

// run runs a host command for the guest's images and fails the test if it
// fails.
func (g *Guest) run(name string, args ...string) {
	g.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		g.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// PassphraseFile is a file holding Passphrase, for -k.
func (g *Guest) PassphraseFile() string { return filepath.Join(g.Dir, "passphrase") }

// Host runs the host's tether with args (stdin given) and fails the test
// if it fails; it returns stdout.
func (g *Guest) Host(stdin string, args ...string) string {
	g.t.Helper()
	cmd := exec.Command(g.Tether, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "TETHER_LUKS_STATE_DIR="+filepath.Join(g.Dir, "luks-state"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		g.t.Fatalf("tether %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// bootFiles reads boot.img's listing and returns the newest kernel that
// has an initramfs: what a bootloader's default entry would start.
func (g *Guest) bootFiles() (kernel, initrd string) {
	g.t.Helper()
	out, err := exec.Command("debugfs", "-R", "ls -p /", g.BootImg).Output()
	if err != nil {
		g.t.Fatalf("debugfs ls %s: %v", g.BootImg, err)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		// /inode/mode/uid/gid/name/size/
		if f := strings.Split(line, "/"); len(f) >= 6 {
			names[f[5]] = true
		}
	}
	var versions []string
	for n := range names {
		if v, ok := strings.CutPrefix(n, "vmlinuz-"); ok && names["initrd.img-"+v] {
			versions = append(versions, v)
		}
	}
	if len(versions) == 0 {
		g.t.Fatalf("boot.img has no kernel with an initramfs: %v", names)
	}
	sort.Slice(versions, func(i, j int) bool { return versionLess(versions[i], versions[j]) })
	v := versions[len(versions)-1]
	dir := g.t.TempDir()
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	for src, dst := range map[string]string{"/vmlinuz-" + v: kernel, "/initrd.img-" + v: initrd} {
		if out, err := exec.Command("debugfs", "-R", "dump "+src+" "+dst, g.BootImg).CombinedOutput(); err != nil {
			g.t.Fatalf("debugfs dump %s: %v\n%s", src, err, out)
		}
	}
	return kernel, initrd
}

var digits = regexp.MustCompile(`\d+|\D+`)

// versionLess orders kernel versions numerically part by part
// (6.1.0-9 < 6.1.0-50).
func versionLess(a, b string) bool {
	pa, pb := digits.FindAllString(a, -1), digits.FindAllString(b, -1)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		var na, nb int
		if _, err := fmt.Sscan(pa[i], &na); err == nil {
			if _, err := fmt.Sscan(pb[i], &nb); err == nil {
				return na < nb
			}
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

// NIC is the guest's network card.
type NIC int

const (
	NICUser   NIC = iota // QEMU user networking: DHCP, and the forwards
	NICNone              // no network card
	NICNoDHCP            // a card with nothing behind it: link, no DHCP
)

// Options is one boot.
type Options struct {
	// Forward maps guest addresses (ServerAddr, ...) to host loopback
	// addresses, host:port.
	Forward map[string]string
	NIC     NIC
	// Append is added to the kernel command line.
	Append string
	// Script, if set, runs as root in the booted system (run.sh on the
	// script disk, with Files beside it) once multi-user.target is
	// reached; the guest powers off after it unless it creates
	// /run/test/keep-running.
	Script string
	Files  map[string][]byte
	// Disks are extra raw images: vdc, vdd, ...
	Disks []string
	// TPM is the socket of an swtpm (--ctrl type=unixio) for a tpm-crb.
	TPM string
	// Log names the console log file kept in the guest's directory.
	Log string
	// Initrd, if set, is a host file booted instead of boot.img's
	// initramfs (to compare two initramfs images of one tree).
	Initrd string
	// NoIP leaves ip= off the kernel command line, so the initramfs's
	// own setting (tether install --ip) decides; by default a NICUser
	// boot gets ip=dhcp.
	NoIP bool
	// Capture, if set, is a file QEMU writes the card's traffic to
	// (pcap, both directions), for dhcpRequests.
	Capture string
	// Serial, if set, is the machine's SMBIOS serial number. SeaBIOS
	// measures the SMBIOS tables into PCR 1, so a boot with another
	// serial stands in for a firmware update: PCR 1 changes.
	Serial string
}

// Machine is a running guest.
type Machine struct {
	t       testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	start   time.Time
	mu      sync.Mutex
	console bytes.Buffer
	lines   []consoleLine
	// partial is the last line while it has no newline yet: a prompt
	// waiting for input is matched as it stands.
	partial   string
	partialAt time.Duration
	changed   chan struct{}
	exited    chan struct{}
	waitErr   error
}

type consoleLine struct {
	at   time.Duration
	text string
}

// Boot starts the guest from its disks. The machine is killed when the
// test ends if it is still running.
func (g *Guest) Boot(o Options) *Machine {
	g.t.Helper()
	kernel, initrd := g.bootFiles()
	if o.Initrd != "" {
		initrd = o.Initrd
	}
	// no_timer_check: under TCG on a loaded host the kernel's IO-APIC
	// timer check can fail and panic the boot (seen at load 10+).
	appendLine := "root=/dev/mapper/root ro console=ttyS0 panic=-1 no_timer_check " + o.Append
	if o.NIC == NICUser && !o.NoIP && !strings.Contains(o.Append, "ip=") {
		appendLine += " ip=dhcp"
	}
	args := []string{
		"-M", "q35,accel=tcg", "-cpu", "max", "-m", "1536", "-smp", "2",
		"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", appendLine,
	}
	// Every disk is an explicit device, in order, so the kernel names
	// them vda, vdb, ... in this order whatever else is attached.
	disk := func(id, file, extra string) {
		args = append(args, "-drive", "file="+file+",if=none,format=raw,cache=unsafe,id="+id+extra,
			"-device", "virtio-blk-pci,drive="+id)
	}
	disk("boot", g.BootImg, "")
	disk("root", g.RootImg, "")
	for i, d := range o.Disks {
		disk(fmt.Sprintf("extra%d", i), d, "")
	}
	switch o.NIC {
	case NICUser:
		nd := "user,id=n0,restrict=on"
		keys := make([]string, 0, len(o.Forward))
		for k := range o.Forward {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, guest := range keys {
			nd += fmt.Sprintf(",guestfwd=tcp:%s-cmd:socat -lf /dev/null - TCP:%s", guest, o.Forward[guest])
		}
		args = append(args, "-netdev", nd, "-device", "virtio-net-pci,netdev=n0")
		if o.Capture != "" {
			args = append(args, "-object", "filter-dump,id=cap0,netdev=n0,file="+o.Capture)
		}
	case NICNoDHCP:
		args = append(args, "-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-pci,netdev=n0")
	case NICNone:
		args = append(args, "-nic", "none")
	}
	if o.Script != "" {
		script := filepath.Join(g.t.TempDir(), "script.tar")
		if err := writeTar(script, o.Script, o.Files); err != nil {
			g.t.Fatal(err)
		}
		// A fixed slot after every other card: without it the script disk
		// can take a lower slot (with no NIC it did) and become vda,
		// renaming the boot and root disks.
		args = append(args, "-drive", "file="+script+",if=none,format=raw,id=script,readonly=on",
			"-device", "virtio-blk-pci,drive=script,serial=testscript,addr=0x10")
	}
	if o.Serial != "" {
		// The 32-bit entry point: SeaBIOS measures the tables it points to.
		args[1] += ",smbios-entry-point-type=32"
		args = append(args, "-smbios", "type=1,serial="+o.Serial)
	}
	if o.TPM != "" {
		args = append(args, "-chardev", "socket,id=chrtpm,path="+o.TPM,
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0")
	}
	m := &Machine{t: g.t, changed: make(chan struct{}), exited: make(chan struct{})}
	m.cmd = exec.Command("qemu-system-x86_64", args...)
	// A test binary that is killed takes its guests with it.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := m.cmd.StdinPipe()
	if err != nil {
		g.t.Fatal(err)
	}
	m.stdin = stdin
	pr, pw, err := os.Pipe()
	if err != nil {
		g.t.Fatal(err)
	}
	m.cmd.Stdout, m.cmd.Stderr = pw, pw
	m.start = time.Now()
	if err := m.cmd.Start(); err != nil {
		g.t.Fatalf("start qemu: %v", err)
	}
	pw.Close()
	logName := o.Log
	if logName == "" {
		logName = "console.log"
	}
	logPath := filepath.Join(g.Dir, logName)
	if dir := os.Getenv("TETHER_REALBOOT_LOGS"); dir != "" {
		logPath = filepath.Join(dir, strings.ReplaceAll(g.t.Name(), "/", "_")+"-"+logName)
		os.MkdirAll(dir, 0o755)
	}
	go m.read(pr, logPath)
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	g.t.Cleanup(func() {
		m.Kill()
		if g.t.Failed() {
			// The guest's directory goes with the test: keep its console.
			keep := filepath.Join(os.TempDir(), "realboot-logs", strings.ReplaceAll(g.t.Name(), "/", "_"))
			os.MkdirAll(keep, 0o755)
			os.WriteFile(filepath.Join(keep, logName), []byte(m.Console()), 0o644)
			g.t.Logf("console of %s (whole: %s):\n%s", logName, filepath.Join(keep, logName), tail([]byte(m.Console()), 6000))
		}
	})
	return m
}

// read keeps what the guest prints: in m (for WaitFor) and in the file
// logPath, each line after the seconds since power-on at which it came.
func (m *Machine) read(r io.Reader, logPath string) {
	log, _ := os.Create(logPath)
	if log != nil {
		defer log.Close()
	}
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			m.mu.Lock()
			m.console.Write(chunk)
			m.partial += string(chunk)
			for {
				i := strings.IndexByte(m.partial, '\n')
				if i < 0 {
					break
				}
				line := consoleLine{at: time.Since(m.start), text: strings.TrimRight(m.partial[:i], "\r")}
				m.lines = append(m.lines, line)
				if log != nil {
					fmt.Fprintf(log, "%7.1f %s\n", line.at.Seconds(), line.text)
				}
				m.partial = m.partial[i+1:]
			}
			m.partialAt = time.Since(m.start)
			close(m.changed)
			m.changed = make(chan struct{})
			m.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// Console is everything the guest printed so far.
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.console.String()
}

// Since is the time since QEMU started.
func (m *Machine) Since() time.Duration { return time.Since(m.start) }

// At is the wall-clock time of a moment since QEMU started (as WaitFor
// reports it).
func (m *Machine) At(since time.Duration) time.Time { return m.start.Add(since) }

// WaitFor waits until a console line matches re (from the line after
// index from) and returns the line, its index and when it came (since
// QEMU started). It fails the test on timeout or if the guest stops.
func (m *Machine) WaitFor(re string, from int, timeout time.Duration) (string, int, time.Duration) {
	m.t.Helper()
	line, idx, at, err := m.Expect(re, from, timeout)
	if err != nil {
		m.t.Fatal(err)
	}
	return line, idx, at
}

// WaitReady waits for the READY marker (multi-user.target reached) from
// line from on, and checks that the root filesystem is on root (a device
// path such as /dev/mapper/root). The runner prints the root twice, in a
// ROOT marker and on the READY line: a console line can be split by
// another writer (systemd's status lines, the kernel), and one intact copy
// is enough.
func (m *Machine) WaitReady(from int, timeout time.Duration, root string) (int, time.Duration) {
	m.t.Helper()
	_, idx, at := m.WaitFor(`@@READY`, from, timeout)
	for _, l := range append(m.Markers("ROOT"), m.Markers("READY")...) {
		if strings.HasSuffix(l, " "+root) || l == root || strings.HasSuffix(l, "root="+root) {
			return idx, at
		}
	}
	m.t.Fatalf("the booted root is not %s: ROOT %q, READY %q", root, m.Markers("ROOT"), m.Markers("READY"))
	return idx, at
}

// Expect is WaitFor that returns an error instead of failing.
func (m *Machine) Expect(re string, from int, timeout time.Duration) (string, int, time.Duration, error) {
	rx := regexp.MustCompile(re)
	deadline := time.After(timeout)
	for {
		m.mu.Lock()
		line, idx, at, ok := m.match(rx, from)
		from = max(from, len(m.lines))
		ch := m.changed
		m.mu.Unlock()
		if ok {
			return line, idx, at, nil
		}
		select {
		case <-ch:
		case <-m.exited:
			// Read what is left, then one last look.
			time.Sleep(200 * time.Millisecond)
			m.mu.Lock()
			line, idx, at, ok := m.match(rx, from)
			m.mu.Unlock()
			if ok {
				return line, idx, at, nil
			}
			return "", 0, 0, fmt.Errorf("guest stopped before printing %q", re)
		case <-deadline:
			return "", 0, 0, fmt.Errorf("no console line matching %q within %s", re, timeout)
		}
	}
}

// match looks for rx in the lines from index from on, then in the line
// still being printed (whose index is len(lines)). m.mu is held.
func (m *Machine) match(rx *regexp.Regexp, from int) (string, int, time.Duration, bool) {
	for i := from; i < len(m.lines); i++ {
		if rx.MatchString(m.lines[i].text) {
			return m.lines[i].text, i, m.lines[i].at, true
		}
	}
	// The line still being printed matches too, for prompts that end
	// without a newline; but not a marker (a pattern starting with @@):
	// the test reads what follows it, which may not have arrived yet (a
	// READY line was matched as "@@READY" with its root still on the way).
	if m.partial != "" && !strings.HasPrefix(rx.String(), "@@") && rx.MatchString(m.partial) {
		return m.partial, len(m.lines), m.partialAt, true
	}
	return "", 0, 0, false
}

// Type sends text to the serial console, as a person at the keyboard.
func (m *Machine) Type(text string) {
	m.t.Helper()
	if _, err := io.WriteString(m.stdin, text); err != nil {
		m.t.Fatalf("type on the console: %v", err)
	}
}

// WaitExit waits for the guest to power off.
func (m *Machine) WaitExit(timeout time.Duration) {
	m.t.Helper()
	select {
	case <-m.exited:
	case <-time.After(timeout):
		m.t.Fatalf("guest did not power off within %s", timeout)
	}
}

// Kill pulls the plug: QEMU is killed, whatever the guest was doing. What
// the guest had written reached the image files; what it had not is lost,
// as in a power cut.
func (m *Machine) Kill() {
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Kill()
	<-m.exited
}

// Markers returns the rest of every "@@NAME ..." line so far.
func (m *Machine) Markers(name string) []string {
	var out []string
	for _, l := range strings.Split(m.Console(), "\n") {
		l = strings.TrimRight(l, "\r")
		if i := strings.Index(l, "@@"+name); i >= 0 {
			rest := l[i+2+len(name):]
			if rest == "" || rest[0] == ' ' {
				out = append(out, strings.TrimSpace(rest))
			}
		}
	}
	return out
}

// writeTar writes the script disk: run.sh and files, as a tar padded to
// whole sectors.
func writeTar(path, script string, files map[string][]byte) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte, mode int64) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("run.sh", []byte(script), 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := add(n, files[n], 0o644); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if pad := buf.Len() % 4096; pad != 0 {
		buf.Write(make([]byte, 4096-pad))
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
