package doctor

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// cpioOf makes a newc archive of files with the real cpio.
func cpioOf(t testing.TB, files []string) []byte {
	t.Helper()
	testenv.RequireCmd(t, "cpio")
	dir := t.TempDir()
	for _, name := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("data of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("cpio", "-o", "-H", "newc", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(strings.Join(files, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio: %v", err)
	}
	return out
}

func compress(t testing.TB, tool string, data []byte) []byte {
	t.Helper()
	if tool == "gzip" {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
		return b.Bytes()
	}
	testenv.RequireCmd(t, tool)
	cmd := exec.Command(tool, "-c")
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return out
}

// TestCpioNames: the reader lists what the real cpio wrote, across an
// early uncompressed archive followed by a compressed one (as Debian's
// images with microcode are laid out), for each compression, and agrees
// with lsinitramfs where it is installed.
func TestCpioNames(t *testing.T) {
	early := []string{"kernel/x86/microcode/AuthenticAMD.bin"}
	main := []string{"usr/sbin/tether", "scripts/local-top/tether", "usr/lib/klibc/bin/ipconfig", "etc/ssl/certs/ca-certificates.crt"}
	for _, tool := range []string{"gzip", "zstd", "xz"} {
		img := append(cpioOf(t, early), compress(t, tool, cpioOf(t, main))...)
		names, err := cpioNames(bytes.NewReader(img), externalDecompressor)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		for _, want := range append(early, main...) {
			if !slices.Contains(names, want) {
				t.Errorf("%s: %s not listed in %q", tool, want, names)
			}
		}
		if p, err := exec.LookPath("lsinitramfs"); err == nil {
			f := filepath.Join(t.TempDir(), "initrd.img")
			os.WriteFile(f, img, 0o644)
			out, err := exec.Command(p, f).Output()
			if err != nil {
				t.Fatalf("lsinitramfs: %v", err)
			}
			for _, l := range strings.Fields(string(out)) {
				if l != "." && !slices.Contains(names, cleanName(l)) {
					t.Errorf("%s: lsinitramfs lists %s, our reader does not", tool, l)
				}
			}
		}
	}
	// Damaged images are an error, not a short list that looks complete.
	img := append(cpioOf(t, early), compress(t, "gzip", cpioOf(t, main))...)
	if _, err := cpioNames(bytes.NewReader(img[:len(img)-40]), nil); err == nil {
		t.Error("a truncated image was read without an error")
	}
	if _, err := cpioNames(bytes.NewReader([]byte("garbage, not an initramfs")), nil); err == nil {
		t.Error("garbage was read as an initramfs")
	}
}

// FuzzCpioNames: an initramfs image is untrusted bytes; the reader must
// neither panic nor run away.
func FuzzCpioNames(f *testing.F) {
	f.Add(cpioOf(f, []string{"a", "usr/sbin/tether"}))
	f.Add(append(cpioOf(f, []string{"early"}), compress(f, "gzip", cpioOf(f, []string{"b/c"}))...))
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cpioNames(bytes.NewReader(data), nil)
	})
}

// TestNetworkDriverInImage: the check that catches an initramfs without
// the network card's driver (MODULES=dep without tether's hook adding
// it) reads module file names as the kernel names modules, and knows a
// driver built into the kernel needs no file.
func TestNetworkDriverInImage(t *testing.T) {
	names := []string{
		"usr/lib/modules/6.1.0-28-amd64/kernel/drivers/net/virtio_net.ko",
		"usr/lib/modules/6.1.0-28-amd64/kernel/drivers/net/usb/smsc95xx.ko.xz",
		"usr/lib/modules/6.1.0-28-amd64/kernel/drivers/net/ethernet/realtek/r8169.ko.zst",
		"usr/lib/modules/6.1.0-28-amd64/kernel/drivers/net/usb/lan78xx-compat.ko",
		"etc/virtio_net.conf",
	}
	for m, want := range map[string]bool{"virtio_net": true, "smsc95xx": true, "r8169": true, "lan78xx_compat": true, "e1000e": false, "virtio": false} {
		if got := hasModule(names, m); got != want {
			t.Errorf("hasModule(%s) = %v, want %v", m, got, want)
		}
	}
	root := t.TempDir()
	dir := filepath.Join(root, "lib/modules/6.1.0-28-amd64")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/net/ethernet/intel/e1000.ko\nkernel/drivers/char/tpm/tpm_crb.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &doctor{o: Options{Root: root}}
	if !d.builtin("6.1.0-28-amd64", "e1000") || d.builtin("6.1.0-28-amd64", "e1000e") || d.builtin("6.1.0-29-amd64", "e1000") {
		t.Error("builtin does not read modules.builtin of the image's kernel")
	}
	if d.netDrivers() != nil {
		t.Error("a system under --root has no network cards to check")
	}
}
