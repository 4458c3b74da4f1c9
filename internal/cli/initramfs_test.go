package cli_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// kernelVersion returns a kernel whose modules are installed here (the
// initramfs builders need one), or skips.
func kernelVersion(t *testing.T) string {
	t.Helper()
	dirs, _ := filepath.Glob("/lib/modules/*/modules.dep")
	testenv.Require(t, len(dirs) > 0, "no kernel modules in /lib/modules (linux-image-amd64)")
	return filepath.Base(filepath.Dir(dirs[0]))
}

// checkInitramfs checks an unpacked initramfs for what bound root volumes
// need: tether, the enrolled identity (root only, and it really decrypts
// the device's managed JWE), the CA bundle, every TPM driver.
func checkInitramfs(t *testing.T, tree, tetherPath string, f *managedFixture, kver string) {
	t.Helper()
	bin := testenv.TetherBin(t)
	if fi, err := os.Stat(filepath.Join(tree, tetherPath)); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("no executable %s in the initramfs: %v", tetherPath, err)
	}
	dev := filepath.Join(tree, "etc/tether/device")
	for _, name := range []string{"device.json", "identity.key"} {
		fi, err := os.Stat(filepath.Join(dev, name))
		if err != nil {
			t.Errorf("the device identity was not copied: %v", err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is mode %v in the initramfs, want 0600", name, fi.Mode().Perm())
		}
	}
	// The copy is the enrolment: a managed binding decrypts with it alone.
	cmd := exec.Command(bin, "decrypt")
	cmd.Env = append(os.Environ(), "TETHER_DEVICE_DIR="+dev)
	cmd.Stdin = strings.NewReader(f.jwe)
	if out, err := cmd.Output(); err != nil || string(out) != "disk key" {
		t.Errorf("decrypt with the initramfs's identity: %q %v", out, err)
	}
	if host, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		if got, err := os.ReadFile(filepath.Join(tree, "etc/ssl/certs/ca-certificates.crt")); err != nil || !bytes.Equal(got, host) {
			t.Errorf("the CA bundle was not copied: %v", err)
		}
	}
	builtin, _ := os.ReadFile(filepath.Join("/lib/modules", kver, "modules.builtin"))
	mods := filepath.Join("/lib/modules", kver, "kernel/drivers/char/tpm")
	n := 0
	filepath.WalkDir(mods, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(d.Name(), ".ko") {
			return nil
		}
		n++
		rel, _ := filepath.Rel("/lib/modules", p)
		if _, err := os.Stat(filepath.Join(tree, "usr/lib/modules", rel)); err != nil {
			if _, err2 := os.Stat(filepath.Join(tree, "lib/modules", rel)); err2 != nil {
				t.Errorf("TPM driver %s is not in the initramfs", rel)
			}
		}
		return nil
	})
	for _, m := range []string{"tpm_crb", "tpm_tis"} {
		if bytes.Contains(builtin, []byte("/"+m+".ko")) {
			continue
		}
		found, _ := filepath.Glob(filepath.Join(tree, "usr/lib/modules", kver, "kernel/drivers/char/tpm", m+".ko*"))
		if len(found) == 0 {
			t.Errorf("%s is neither built into kernel %s nor in the initramfs", m, kver)
		}
	}
	t.Logf("%d TPM driver modules checked", n)
}

// TestInitramfsToolsHookBuild: a real mkinitramfs (initramfs-tools) build
// with tether's hook, in a configuration directory of its own: the image
// holds tether, the enrolled device identity (and it decrypts the device's
// managed JWE), the CA bundle and the TPM drivers, and it is written
// readable by root only (conf.d/tether). Without that setting the hook
// warns that the identity is in a world-readable file.
func TestInitramfsToolsHookBuild(t *testing.T) {
	mk := testenv.RequireCmd(t, "mkinitramfs")
	unmk := testenv.RequireCmd(t, "unmkinitramfs")
	kver := kernelVersion(t)
	bin := testenv.TetherBin(t)
	f := startManagedFixture(t)
	devDir := strings.TrimPrefix(f.devEnv[0], "TETHER_DEVICE_DIR=")

	root := t.TempDir()
	if _, e, c := testenv.Run(t, nil, bin, "install", "initramfs-tools", "--root", root, "--bin", bin); c != 0 {
		t.Fatalf("install: %s", e)
	}
	conf := filepath.Join(root, "etc/initramfs-tools")
	// The smallest build that still runs every hook: no module sweep.
	os.WriteFile(filepath.Join(conf, "initramfs.conf"), []byte("MODULES=list\nBUSYBOX=auto\nCOMPRESS=gzip\nKEYMAP=n\n"), 0o644)
	os.WriteFile(filepath.Join(conf, "modules"), nil, 0o644)
	build := func(out string) string {
		cmd := exec.Command(mk, "-d", conf, "-o", out, kver)
		cmd.Env = append(os.Environ(), "TETHER_DEVICE_DIR="+devDir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("mkinitramfs: %v\n%s", err, stderr.String())
		}
		return stderr.String()
	}
	img := filepath.Join(t.TempDir(), "initrd.img")
	build(img)
	if fi, _ := os.Stat(img); fi.Mode().Perm() != 0o600 {
		t.Errorf("the initramfs holding the identity key is mode %v, want 0600", fi.Mode().Perm())
	}
	tree := t.TempDir()
	if out, err := exec.Command(unmk, img, tree).CombinedOutput(); err != nil {
		t.Fatalf("unmkinitramfs: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(tree, "main")); err == nil {
		tree = filepath.Join(tree, "main") // an early (microcode) archive came first
	}
	checkInitramfs(t, tree, "usr/sbin/tether", f, kver)

	os.Remove(filepath.Join(conf, "conf.d/tether"))
	open := filepath.Join(t.TempDir(), "initrd.img")
	warn := build(open)
	if !strings.Contains(warn, "W: tether:") || !strings.Contains(warn, "UMASK=0077") {
		t.Errorf("a world-readable initramfs with the identity key in it was built without a warning:\n%s", warn)
	}
}

// TestDracutModuleBuild: a real dracut build with tether's module (from a
// copy of the dracut tree, so nothing is installed on this machine): the
// image holds tether, the enrolled identity (it decrypts), the CA bundle
// and the TPM drivers, and is readable by root only. Debian puts dracut's
// network modules in dracut-network; where none is installed, a module
// named network that installs nothing stands in, so that the dependency
// resolves (the network itself is not what this test checks).
func TestDracutModuleBuild(t *testing.T) {
	dracut := testenv.RequireCmd(t, "dracut")
	cpio := testenv.RequireCmd(t, "cpio")
	kver := kernelVersion(t)
	bin := testenv.TetherBin(t)
	f := startManagedFixture(t)
	devDir := strings.TrimPrefix(f.devEnv[0], "TETHER_DEVICE_DIR=")

	base := filepath.Join(t.TempDir(), "dracut")
	if out, err := exec.Command("cp", "-a", "/usr/lib/dracut", base).CombinedOutput(); err != nil {
		t.Fatalf("copy the dracut tree: %v\n%s", err, out)
	}
	root := t.TempDir()
	if _, e, c := testenv.Run(t, nil, bin, "install", "dracut", "--root", root, "--bin", bin); c != 0 {
		t.Fatalf("install: %s", e)
	}
	if out, err := exec.Command("cp", "-a", filepath.Join(root, "usr/lib/dracut/modules.d/60tether"), filepath.Join(base, "modules.d")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if nets, _ := filepath.Glob(filepath.Join(base, "modules.d/*network*")); len(nets) == 0 {
		stand := filepath.Join(base, "modules.d/40network")
		os.Mkdir(stand, 0o755)
		os.WriteFile(filepath.Join(stand, "module-setup.sh"), []byte("#!/bin/bash\ncheck() { return 0; }\ndepends() { return 0; }\ninstall() { :; }\n"), 0o755)
	}
	img := filepath.Join(t.TempDir(), "initrd.img")
	cmd := exec.Command(dracut, "--no-hostonly", "--no-compress", "--no-early-microcode", "-m", "tether", "--kver", kver,
		"--conf", "/dev/null", "--confdir", t.TempDir(), "--tmpdir", t.TempDir(), "--force", img)
	cmd.Env = append(os.Environ(), "TETHER_DEVICE_DIR="+devDir, "dracutbasedir="+base)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dracut: %v\n%s", err, out)
	}
	if fi, _ := os.Stat(img); fi.Mode().Perm() != 0o600 {
		t.Errorf("the initramfs holding the identity key is mode %v, want 0600", fi.Mode().Perm())
	}
	tree := t.TempDir()
	x := exec.Command(cpio, "-idm", "--quiet", "--no-absolute-filenames")
	x.Dir = tree
	x.Stdin, _ = os.Open(img)
	if out, err := x.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}
	checkInitramfs(t, tree, strings.TrimPrefix(bin, "/"), f, kver)
	if data, err := os.ReadFile(filepath.Join(tree, "etc/cmdline.d/60tether.conf")); err != nil || !strings.Contains(string(data), "rd.neednet=1") {
		t.Errorf("rd.neednet=1 is not on the initramfs command line: %q %v", data, err)
	}
}
