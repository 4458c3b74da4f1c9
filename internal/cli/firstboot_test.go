package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestInstallFirstBoot: --first-boot writes the settings and the script
// into the tree, and every incomplete or wrong request is refused before
// anything is written, with what to do instead.
func TestInstallFirstBoot(t *testing.T) {
	bin := testenv.TetherBin(t)
	run := func(args ...string) (string, int) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--first-boot", "/dev/vdb", "tpm2", `{}`}, "--first-boot-recovery"},
		{[]string{"--first-boot", "/dev/vdb", "--first-boot-recovery", "none"}, "PIN CONFIG"},
		{[]string{"--first-boot", "LABEL=root", "--first-boot-recovery", "none", "tpm2", `{}`}, "PARTUUID="},
		{[]string{"--first-boot", "/dev/vdb", "--first-boot-recovery", "/key", "tpm2", `{}`}, "DEV:PATH"},
		{[]string{"tpm2", `{}`}, "takes no arguments"},
	} {
		root := t.TempDir()
		out, code := run(append([]string{"install", "initramfs-tools", "--root", root}, c.args...)...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, want an error with %q:\n%s", c.args, code, c.want, out)
		}
		if ents, _ := os.ReadDir(root); len(ents) != 0 {
			t.Errorf("%v: refused, but wrote %v", c.args, ents)
		}
	}
	if out, code := run("install", "systemd", "--root", t.TempDir(), "--first-boot", "/dev/vdb", "--first-boot-recovery", "none", "tpm2", "{}"); code == 0 || !strings.Contains(out, "initramfs-tools and dracut") {
		t.Errorf("install systemd --first-boot: exit %d:\n%s", code, out)
	}
	droot := t.TempDir()
	if out, code := run("install", "dracut", "--root", droot, "--bin", "/usr/bin/tether", "--first-boot", "/dev/vdb", "--first-boot-recovery", "none", "tpm2", "{}"); code != 0 {
		t.Errorf("install dracut --first-boot: exit %d:\n%s", code, out)
	}
	for _, p := range []string{"etc/tether/first-boot.conf", "usr/lib/dracut/modules.d/60tether/module-setup.sh",
		"usr/lib/dracut/modules.d/91tether-first-boot/module-setup.sh", "usr/lib/dracut/modules.d/91tether-first-boot/tether-first-boot.service"} {
		if _, err := os.Stat(filepath.Join(droot, p)); err != nil {
			t.Errorf("install dracut --first-boot: %v", err)
		}
	}

	// The image's crypttab gets the root's line, after the owner's lines;
	// a line for the name on another device is refused, writing nothing.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	owner := "data\tUUID=1234\tnone\tluks,nofail\n"
	os.WriteFile(filepath.Join(root, "etc/crypttab"), []byte(owner+"cryptroot /dev/sdz9 none luks\n"), 0o644)
	if out, code := run("install", "initramfs-tools", "--root", root, "--first-boot", "PARTLABEL=root",
		"--first-boot-recovery", "none", "--first-boot-name", "cryptroot", "tpm2", `{}`); code == 0 || !strings.Contains(out, "already opens /dev/sdz9 as cryptroot") {
		t.Errorf("a crypttab line for the name on another device: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/tether/first-boot.conf")); err == nil {
		t.Errorf("refused, but wrote first-boot.conf")
	}
	os.WriteFile(filepath.Join(root, "etc/crypttab"), []byte(owner), 0o644)
	out, code := run("install", "initramfs-tools", "--root", root, "--first-boot", "PARTLABEL=root",
		"--first-boot-recovery", "LABEL=KEYS:/root.key", "--first-boot-name", "cryptroot", "tpm2", `{"pcr_ids":"7"}`)
	if code != 0 {
		t.Fatalf("install --first-boot: exit %d\n%s", code, out)
	}
	conf, err := os.ReadFile(filepath.Join(root, "etc/tether/first-boot.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TETHER_FB_DEVICE='PARTLABEL=root'", "TETHER_FB_NAME='cryptroot'", `TETHER_FB_CONFIG='{"pcr_ids":"7"}'`,
		"TETHER_FB_RECOVERY='LABEL=KEYS:/root.key'", "TETHER_FB_NETWORK='no'"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("first-boot.conf has no %s:\n%s", want, conf)
		}
	}
	tab, _ := os.ReadFile(filepath.Join(root, "etc/crypttab"))
	if !strings.HasPrefix(string(tab), owner) || !strings.HasSuffix(string(tab), "\ncryptroot\tPARTLABEL=root\tnone\tluks,initramfs\n") {
		t.Errorf("crypttab after install --first-boot:\n%s", tab)
	}
	// Again: the line is there, nothing is added.
	if out, code := run("install", "initramfs-tools", "--root", root, "--first-boot", "PARTLABEL=root",
		"--first-boot-recovery", "LABEL=KEYS:/root.key", "--first-boot-name", "cryptroot", "tpm2", `{"pcr_ids":"7"}`); code != 0 {
		t.Fatalf("install --first-boot again: exit %d\n%s", code, out)
	}
	if again, _ := os.ReadFile(filepath.Join(root, "etc/crypttab")); string(again) != string(tab) {
		t.Errorf("crypttab changed on the second install:\n%s", again)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/initramfs-tools/scripts/local-top/tether-first-boot")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("the local-top script: %v", err)
	}
}
