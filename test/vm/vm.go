// Package vm boots a Debian kernel under QEMU (software emulation, TCG) with
// an initramfs built by hand — busybox, cryptsetup, the guest kernel's
// dm-crypt modules and the tether binary — so tests can open real dm-crypt
// volumes, which the host kernel cannot. A test gives a shell script; the
// guest runs it after bringing up its network (10.0.2.15/24; the host's
// 127.0.0.1 is 10.0.2.2) and powers off. The test reads the serial console.
//
// Everything the guest needs comes from Debian packages (qemu-system-x86,
// linux-image-amd64, busybox-static, cryptsetup-bin); when one is missing
// the test is skipped locally and fails in CI (see internal/testenv).
package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// Kernel is a guest kernel and its modules.
type Kernel struct {
	Image   string // vmlinuz
	Modules string // /lib/modules/<version>
}

// FindKernel finds the newest /boot/vmlinuz-* that has its modules
// installed (the linux-image-amd64 package; not the host's kernel, which
// may be anything).
func FindKernel() (Kernel, error) {
	imgs, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(imgs)))
	for _, img := range imgs {
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mods := filepath.Join("/lib/modules", ver)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err == nil {
			return Kernel{Image: img, Modules: mods}, nil
		}
	}
	return Kernel{}, fmt.Errorf("no /boot/vmlinuz-* with modules in /lib/modules (apt-get install linux-image-amd64)")
}

// Require skips (locally) or fails (CI) unless QEMU, a guest kernel,
// busybox-static and cryptsetup are installed, and returns the kernel.
func Require(t testing.TB) Kernel {
	t.Helper()
	testenv.RequireCmd(t, "qemu-system-x86_64")
	testenv.RequireCmd(t, "cryptsetup")
	_, err := os.Stat("/bin/busybox")
	testenv.Require(t, err == nil, "busybox-static is not installed")
	k, err := FindKernel()
	testenv.Require(t, err == nil, "linux-image-amd64 is not installed")
	return k
}

// GuestModules are loaded at boot, with their dependencies: virtio disk
// and network, dm-crypt and its ciphers, ext4, the kernel crypto API
// cryptsetup uses for keyslots. Missing ones are skipped.
var GuestModules = []string{
	"virtio_pci", "virtio_blk", "virtio_net",
	"dm_mod", "dm_crypt", "xts", "ecb", "aesni_intel",
	"af_alg", "algif_skcipher", "algif_hash",
	"crc32c_generic", "libcrc32c", "ext4",
	"loop", // cryptsetup open of an image file
}

// Config describes one guest boot.
type Config struct {
	Kernel Kernel
	// Tether is the tether binary to put in /bin; "" builds a static one.
	Tether string
	// Script is run by /bin/sh once the network is up.
	Script string
	// Files are extra files: guest path → content (mode 0644; 0755 under
	// /bin and /sbin).
	Files map[string][]byte
	// Binaries are host executables copied to the same path in the guest,
	// with the shared libraries ldd lists.
	Binaries []string
	// Disks are raw images attached as virtio disks /dev/vda, /dev/vdb, ...
	Disks []string
	// Timeout bounds the whole boot; 0 means 4 minutes.
	Timeout time.Duration
	// Console, if set, receives the serial console as it comes.
	Console func(line string)
}

// Result is what a guest printed.
type Result struct {
	Console  string
	Duration time.Duration
}

// Marker lines are printed by guest scripts as "@@NAME rest..."; Markers
// returns the rest of every line for NAME.
func (r Result) Markers(name string) []string {
	var out []string
	for _, l := range strings.Split(r.Console, "\n") {
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

// Has reports whether the guest printed marker NAME.
func (r Result) Has(name string) bool { return len(r.Markers(name)) > 0 }

// StaticTether returns the tether binary, which is static (built without
// cgo), so it runs in any initramfs.
func StaticTether(t testing.TB) string {
	t.Helper()
	return testenv.TetherBin(t)
}

const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run/cryptsetup /tmp /mnt /var/tmp
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /etc/modules.order
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "@@GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
sh /test.sh
echo "@@GUEST-EXIT $? $(cut -d' ' -f1 /proc/uptime)"
sync
reboot -f
`

// BuildInitramfs writes a gzipped newc initramfs for cfg to path.
func BuildInitramfs(cfg Config, path string) error {
	ents := map[string]cpioEntry{}
	add := func(guest string, data []byte, mode uint32) {
		ents[strings.TrimPrefix(guest, "/")] = cpioEntry{mode: modeFile | mode, data: data}
	}
	addHost := func(guest, host string, mode uint32) error {
		data, err := os.ReadFile(host)
		if err != nil {
			return err
		}
		add(guest, data, mode)
		return nil
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "mnt", "etc", "sbin", "usr/bin", "usr/sbin"} {
		ents[d] = cpioEntry{mode: modeDir | 0o755}
	}
	add("/init", []byte(initScript), 0o755)
	add("/test.sh", []byte(cfg.Script), 0o755)
	if err := addHost("/bin/busybox", "/bin/busybox", 0o755); err != nil {
		return fmt.Errorf("busybox-static: %w", err)
	}
	bins := append([]string{"/usr/sbin/cryptsetup"}, cfg.Binaries...)
	libs := map[string]bool{}
	for _, b := range bins {
		if err := addHost(b, b, 0o755); err != nil {
			return err
		}
		ls, err := sharedLibs(b)
		if err != nil {
			return err
		}
		for _, l := range ls {
			libs[l] = true
		}
	}
	// ldd does not list libgcc_s, which glibc dlopens for pthread_exit and
	// cancellation: without it cryptsetup aborts.
	if gcc, _ := filepath.Glob("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"); len(gcc) > 0 {
		libs[gcc[0]] = true
	}
	for l := range libs {
		if err := addHost(l, l, 0o755); err != nil {
			return err
		}
	}
	// cryptsetup is also on the usual paths.
	ents["sbin/cryptsetup"] = cpioEntry{mode: modeSymlink | 0o777, data: []byte("/usr/sbin/cryptsetup")}
	if err := addHost("/bin/tether", cfg.Tether, 0o755); err != nil {
		return fmt.Errorf("tether binary: %w", err)
	}
	order, err := moduleOrder(cfg.Kernel.Modules, GuestModules)
	if err != nil {
		return err
	}
	for _, m := range order {
		if err := addHost("/lib/modules/"+m, filepath.Join(cfg.Kernel.Modules, m), 0o644); err != nil {
			return err
		}
	}
	add("/etc/modules.order", []byte(strings.Join(order, "\n")+"\n"), 0o644)
	for p, data := range cfg.Files {
		mode := uint32(0o644)
		if strings.HasPrefix(p, "/bin/") || strings.HasPrefix(p, "/sbin/") {
			mode = 0o755
		}
		add(p, data, mode)
	}
	addParents(ents)
	// /lib and /lib64 may be symlinks on the host (merged /usr); in the
	// guest they are plain directories holding what we copied.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := writeCPIO(zw, ents); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// sharedLibs lists the libraries ldd says bin needs.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		// A static binary: "not a dynamic executable".
		return nil, nil
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := lddLine.FindStringSubmatch(sc.Text()); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

// moduleOrder resolves modules (by name, "-" or "_") and their
// dependencies from modules.dep into a load order.
func moduleOrder(modDir string, names []string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	byName := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		base := filepath.Base(mod)
		base = base[:strings.Index(base, ".ko")]
		byName[strings.ReplaceAll(base, "-", "_")] = mod
	}
	var order []string
	done := map[string]bool{}
	var visit func(m string)
	visit = func(m string) {
		if done[m] {
			return
		}
		done[m] = true
		// modules.dep lists every (transitive) dependency; load the
		// deepest first.
		for i := len(deps[m]) - 1; i >= 0; i-- {
			visit(deps[m][i])
		}
		order = append(order, m)
	}
	for _, n := range names {
		if m, ok := byName[strings.ReplaceAll(n, "-", "_")]; ok {
			visit(m)
		}
	}
	for _, m := range order {
		if strings.HasSuffix(m, ".xz") || strings.HasSuffix(m, ".zst") {
			return nil, fmt.Errorf("module %s is compressed; busybox insmod cannot load it", m)
		}
	}
	return order, nil
}

// Boot builds the initramfs and boots the guest, returning its console.
// It fails the test if QEMU cannot start or the guest does not power off
// within the timeout.
func Boot(t testing.TB, cfg Config) Result {
	t.Helper()
	if cfg.Tether == "" {
		cfg.Tether = StaticTether(t)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 4 * time.Minute
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.gz")
	if err := BuildInitramfs(cfg, initrd); err != nil {
		t.Fatalf("build initramfs: %v", err)
	}
	args := []string{
		"-M", "q35,accel=tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
		"-nographic", "-no-reboot",
		"-kernel", cfg.Kernel.Image, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
	}
	for _, d := range cfg.Disks {
		args = append(args, "-drive", "file="+d+",if=virtio,format=raw,cache=unsafe")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var console testenv.SyncBuffer
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	pw.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			console.Write([]byte(line + "\n"))
			if cfg.Console != nil {
				cfg.Console(line)
			}
		}
	}()
	err = cmd.Wait()
	<-done
	res := Result{Console: console.String(), Duration: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("guest did not power off within %s; console:\n%s", cfg.Timeout, res.Console)
	}
	if err != nil {
		t.Fatalf("qemu: %v; console:\n%s", err, res.Console)
	}
	if !res.Has("GUEST-EXIT") {
		t.Fatalf("guest did not finish its script; console:\n%s", res.Console)
	}
	return res
}
