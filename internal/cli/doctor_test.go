package cli_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// doctorBed is a system under --root, with volumes as image files outside
// it and the tether under test installed in it as /usr/bin/tether.
type doctorBed struct {
	t     *testing.T
	bin   string // the tether under test
	dir   string
	root  string
	state string
	env   []string // for tether, doctor and the fixes: "tether" on PATH is bin
}

const recoveryPass = "recovery passphrase"

func newDoctorBed(t *testing.T) *doctorBed {
	t.Helper()
	b := newBed(t)
	b.run(nil, "tether", "install", "systemd", "--root", b.root, "--bin", "/usr/bin/tether")
	return b
}

// newBed is a doctorBed with nothing installed yet.
func newBed(t *testing.T) *doctorBed {
	t.Helper()
	testenv.RequireCmd(t, "cryptsetup")
	testenv.RequireRoot(t)
	b := &doctorBed{t: t, bin: testenv.TetherBin(t), dir: t.TempDir()}
	b.root = filepath.Join(b.dir, "root")
	b.state = filepath.Join(b.dir, "state")
	pathDir := filepath.Join(b.dir, "path")
	for _, d := range []string{b.root + "/usr/bin", b.root + "/etc", pathDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{b.root + "/usr/bin/tether", pathDir + "/tether"} {
		if err := os.Symlink(b.bin, l); err != nil {
			t.Fatal(err)
		}
	}
	b.env = append(os.Environ(), "PATH="+pathDir+":"+os.Getenv("PATH"), "TETHER_LUKS_STATE_DIR="+b.state)
	return b
}

// run runs a command with the bed's environment and fails the test if it
// fails.
func (b *doctorBed) run(stdin []byte, name string, args ...string) string {
	b.t.Helper()
	out, errOut, code := b.exec(stdin, name, args...)
	if code != 0 {
		b.t.Fatalf("%s %s: exit %d\n%s%s", name, strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (b *doctorBed) exec(stdin []byte, name string, args ...string) (string, string, int) {
	if name == "tether" {
		name = b.bin // exec.Command looks names up in this process's PATH
	}
	cmd := exec.Command(name, args...)
	cmd.Env = b.env
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// image makes a LUKS2 image file whose passphrase is recoveryPass.
func (b *doctorBed) image(name string) string {
	b.t.Helper()
	img := filepath.Join(b.dir, name+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		b.t.Fatal(err)
	}
	os.Truncate(img, 20<<20)
	b.run([]byte(recoveryPass), "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	return img
}

func (b *doctorBed) bind(img, pin, cfg string) {
	b.t.Helper()
	b.run([]byte(recoveryPass), "tether", "luks", "bind", "-d", img, "-k", "-", "-y", pin, cfg)
}

// crypttab writes the volume's line as tether crypttab does.
func (b *doctorBed) crypttab(img, name string, extra ...string) {
	b.t.Helper()
	b.run(nil, "tether", append([]string{"crypttab", "-d", img, "-n", name, "--write", b.root + "/etc/crypttab"}, extra...)...)
}

func (b *doctorBed) writeFile(rel, data string) {
	b.t.Helper()
	p := filepath.Join(b.root, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// doctor runs tether doctor on the bed and returns its problem lines.
func (b *doctorBed) doctor() ([]string, int) {
	b.t.Helper()
	out, errOut, code := b.exec(nil, "tether", "doctor", "--root", b.root, "--timeout", "3s")
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	if (code == 0) != (len(lines) == 0) || code > 1 {
		b.t.Fatalf("doctor: exit %d with %d problem lines\n%s%s", code, len(lines), out, errOut)
	}
	return lines, code
}

// healthy fails the test unless doctor finds no problem.
func (b *doctorBed) healthy() {
	b.t.Helper()
	if lines, code := b.doctor(); code != 0 {
		b.t.Fatalf("doctor found problems in a healthy setup (exit %d):\n%s", code, strings.Join(lines, "\n"))
	}
}

// expect runs doctor and returns the fix of the one problem line that
// contains want (every line must be one of wants).
func (b *doctorBed) expect(wants ...string) map[string]string {
	b.t.Helper()
	lines, code := b.doctor()
	if code != 1 {
		b.t.Fatalf("doctor: exit %d, want 1", code)
	}
	fixes := map[string]string{}
	for _, l := range lines {
		matched := false
		for _, w := range wants {
			if strings.Contains(l, w) {
				_, fix, ok := strings.Cut(l, "; fix: ")
				if !ok {
					b.t.Errorf("problem line without a fix: %s", l)
				}
				fixes[w] = fix
				matched = true
			}
		}
		if !matched {
			b.t.Errorf("unexpected problem: %s", l)
		}
	}
	for _, w := range wants {
		if _, ok := fixes[w]; !ok {
			b.t.Errorf("doctor did not report %q; it said:\n%s", w, strings.Join(lines, "\n"))
		}
	}
	if b.t.Failed() {
		b.t.FailNow()
	}
	return fixes
}

// fix runs a fix line as a person would paste it into a shell.
func (b *doctorBed) fix(line string, stdin []byte) {
	b.t.Helper()
	b.run(stdin, "sh", "-c", line)
}

// TestDoctor: a healthy setup reports nothing and exits 0; each broken
// setup is found, with a fix that, run as printed, makes doctor happy
// again (or, for the initramfs, the line names the rebuild).
func TestDoctor(t *testing.T) {
	tangd := testenv.StartTangd(t)
	tangCfg := fmt.Sprintf(`{"url":%q}`, tangd.URL)

	// A data volume bound to a stock tangd, its line written by tether.
	dataBed := func(t *testing.T) (*doctorBed, string) {
		b := newDoctorBed(t)
		img := b.image("data")
		b.bind(img, "tang", tangCfg)
		b.crypttab(img, "data")
		return b, img
	}

	t.Run("healthy", func(t *testing.T) {
		b, _ := dataBed(t)
		b.healthy()
		out, errOut, code := b.exec(nil, "tether", "doctor", "--root", b.root, "-v")
		if code != 0 || !strings.Contains(out, "ok: volume data keyslot 1: tang(") || !strings.Contains(errOut, "no problem") {
			t.Errorf("doctor -v: exit %d\n%s%s", code, out, errOut)
		}
	})

	t.Run("socket not enabled", func(t *testing.T) {
		b, _ := dataBed(t)
		for _, w := range []string{"cryptsetup.target.wants", "remote-cryptsetup.target.wants"} {
			os.Remove(filepath.Join(b.root, "etc/systemd/system", w, "tether-keyd.socket"))
		}
		fix := b.expect("tether-keyd.socket is installed but not enabled")
		want := "systemctl --root " + b.root + " enable tether-keyd.socket"
		if f := fix["tether-keyd.socket is installed but not enabled"]; f != want {
			t.Fatalf("fix %q, want %q", f, want)
		}
		b.fix(want, nil)
		b.healthy()
	})

	t.Run("units not installed", func(t *testing.T) {
		b, _ := dataBed(t)
		os.RemoveAll(filepath.Join(b.root, "etc/systemd"))
		const what = "tether-keyd.socket is not installed"
		fix := b.expect(what, "the drop-in systemd-cryptsetup@.service.d/tether.conf is missing")[what]
		if want := "tether install systemd --root " + b.root + " --bin /usr/bin/tether"; fix != want {
			t.Fatalf("fix %q, want %q", fix, want)
		}
		b.fix(fix, nil)
		b.healthy()
	})

	t.Run("keyfile-offset", func(t *testing.T) {
		b, img := dataBed(t)
		b.writeFile("etc/crypttab", "# data volume\ndata "+img+" /run/tether/keyd.sock luks,_netdev,nofail,keyfile-offset=4,keyfile-erase\n")
		fixes := b.expect("keyfile-offset= makes systemd-cryptsetup seek", "keyfile-erase makes systemd-cryptsetup delete")
		want := "tether crypttab -d " + img + " -n data --write " + b.root + "/etc/crypttab"
		for _, f := range fixes {
			if f != want {
				t.Fatalf("fix %q, want %q", f, want)
			}
		}
		b.fix(want, nil)
		b.healthy()
		if tab, _ := os.ReadFile(filepath.Join(b.root, "etc/crypttab")); !strings.HasPrefix(string(tab), "# data volume\n") {
			t.Errorf("the fix lost the comment:\n%s", tab)
		}
	})

	t.Run("no _netdev nofail", func(t *testing.T) {
		b, img := dataBed(t)
		b.writeFile("etc/crypttab", "data "+img+" /run/tether/keyd.sock luks,headless=true\n")
		fixes := b.expect("lacks _netdev", "lacks nofail")
		want := "tether crypttab -d " + img + " -n data --write " + b.root + "/etc/crypttab"
		for _, f := range fixes {
			if f != want {
				t.Fatalf("fix %q, want %q", f, want)
			}
		}
		b.fix(want, nil)
		b.healthy()
		if tab, _ := os.ReadFile(filepath.Join(b.root, "etc/crypttab")); !strings.Contains(string(tab), "headless=true") {
			t.Errorf("the fix lost the user's option:\n%s", tab)
		}
	})

	t.Run("tang key rotated", func(t *testing.T) {
		// A tangd of its own: the rotation must not touch the others'.
		own := testenv.StartTangd(t)
		b := newDoctorBed(t)
		img := b.image("data")
		b.bind(img, "tang", fmt.Sprintf(`{"url":%q}`, own.URL))
		b.crypttab(img, "data")
		b.healthy()
		b.run(nil, "/usr/libexec/tangd-rotate-keys", "-d", own.KeyDir)
		const what = "rotated its keys"
		fix := b.expect(what)[what]
		if want := "tether luks regen -d " + img + " -s 1"; fix != want {
			t.Fatalf("fix %q, want %q", fix, want)
		}
		b.fix(fix, nil)
		b.healthy()
	})

	t.Run("server unreachable", func(t *testing.T) {
		srv := testenv.StartServer(t, "")
		b := newDoctorBed(t)
		img := b.image("data")
		b.bind(img, "tang", fmt.Sprintf(`{"url":%q}`, srv.URL))
		b.crypttab(img, "data")
		b.healthy()
		srv.Cmd.Process.Kill()
		srv.Cmd.Wait()
		const what = "does not answer now"
		fix := b.expect(what)[what]
		if !strings.HasPrefix(fix, "tether adv "+srv.URL+"  # ") {
			t.Fatalf("fix %q does not check the server with tether adv", fix)
		}
	})

	t.Run("managed server down", func(t *testing.T) {
		f := startManagedFixture(t)
		b, _ := dataBed(t)
		b.env = append(b.env, f.devEnv...)
		img := b.image("managed")
		b.bind(img, "managed", "{}")
		b.crypttab(img, "managed")
		b.healthy()
		f.stop()
		const what = "does not answer now"
		fix := b.expect(what)[what]
		if want := "curl -sk https://" + f.addr + "/healthz  # "; !strings.HasPrefix(fix, want) {
			t.Fatalf("fix %q, want it to start with %q", fix, want)
		}
	})

	t.Run("tpm PCR changed", func(t *testing.T) {
		sw := tpmtest.Start(t)
		b, _ := dataBed(t)
		b.env = append(b.env, "TPM2TOOLS_TCTI="+sw.TCTI, "TETHER_TPM_TCTI=")
		img := b.image("vault")
		b.bind(img, "tpm2", `{"pcr_ids":"7"}`)
		b.crypttab(img, "vault", "--askpass")
		b.healthy()
		sw.Extend(t, "sha256", 7)
		const what = "sha256 PCR 7 no longer hold the values it was sealed to"
		fix := b.expect(what)[what]
		cmd, _, _ := strings.Cut(fix, "  # ")
		if want := "tether tpm heal -d " + img + " --allow-passphrase -k -"; cmd != want {
			t.Fatalf("fix %q, want %q", cmd, want)
		}
		b.fix(cmd, []byte(recoveryPass))
		b.healthy()
	})

	t.Run("tpm PCR changed in sss beside tang", func(t *testing.T) {
		sw := tpmtest.Start(t)
		b, _ := dataBed(t)
		b.env = append(b.env, "TPM2TOOLS_TCTI="+sw.TCTI, "TETHER_TPM_TCTI=")
		img := b.image("vault")
		b.bind(img, "sss", fmt.Sprintf(`{"t":1,"pins":{"tang":[%s],"tpm2":[{"pcr_ids":"7"}]}}`, tangCfg))
		b.crypttab(img, "vault", "--askpass")
		b.healthy()
		sw.Extend(t, "sha256", 7)
		const what = "sha256 PCR 7 no longer hold the values it was sealed to"
		fix := b.expect(what)[what]
		cmd, _, _ := strings.Cut(fix, "  # ")
		if want := "tether tpm heal -d " + img; cmd != want {
			t.Fatalf("fix %q, want %q", cmd, want)
		}
		b.fix(cmd, nil) // the tang server proves the secret: no passphrase
		b.healthy()
	})

	// A tpm2 binding "with_pin" under the askpass agent: nobody is asked
	// for its PIN at boot, so the volume does not unlock by itself. With a
	// network pin beside it in sss (t=1), the PIN is not needed and nothing
	// is wrong; with keyd, keyd asks for the PIN.
	t.Run("tpm with PIN", func(t *testing.T) {
		sw := tpmtest.Start(t)
		b, _ := dataBed(t)
		b.env = append(b.env, "TPM2TOOLS_TCTI="+sw.TCTI, "TETHER_TPM_TCTI=")
		pinFile := filepath.Join(b.dir, "pin")
		os.WriteFile(pinFile, []byte("2468\n"), 0o600)
		img := b.image("vault")
		b.run([]byte(recoveryPass), "tether", "luks", "bind", "-d", img, "-k", "-", "--pin-file", pinFile, "tpm2", `{"pcr_ids":"7","with_pin":true}`)
		b.crypttab(img, "vault", "--askpass")
		const what = "volume vault: every binding needs a TPM PIN"
		fix := b.expect(what)[what]
		cmd, _, _ := strings.Cut(fix, "  # ")
		if want := "tether luks bind -d " + img + " -k - PIN CONFIG"; cmd != want {
			t.Fatalf("fix %q, want %q", fix, want)
		}
		// The fix as a person completes it: a network pin beside the PIN.
		b.fix("tether luks bind -d "+img+" -k - -y tang '"+tangCfg+"'", []byte(recoveryPass))
		b.healthy()

		img2 := b.image("vault2")
		b.run([]byte(recoveryPass), "tether", "luks", "bind", "-d", img2, "-k", "-", "-y", "--pin-file", pinFile, "sss",
			fmt.Sprintf(`{"t":1,"pins":{"tang":[%s],"tpm2":[{"with_pin":true}]}}`, tangCfg))
		b.crypttab(img2, "vault2", "--askpass")
		b.healthy()
		// Both parts needed (t=2): the PIN is.
		img3 := b.image("vault3")
		b.run([]byte(recoveryPass), "tether", "luks", "bind", "-d", img3, "-k", "-", "-y", "--pin-file", pinFile, "sss",
			fmt.Sprintf(`{"t":2,"pins":{"tang":[%s],"tpm2":[{"with_pin":true}]}}`, tangCfg))
		b.crypttab(img3, "vault3", "--askpass")
		b.expect("volume vault3: every binding needs a TPM PIN")
		// The line names the switch to keyd, which asks for the PIN at
		// boot; made as it says, doctor is content.
		lines, _ := b.doctor()
		hint := "tether crypttab -d " + img3 + " -n vault3 --write " + b.root + "/etc/crypttab"
		if !strings.Contains(strings.Join(lines, "\n"), hint) {
			t.Fatalf("no %q in:\n%s", hint, strings.Join(lines, "\n"))
		}
		b.fix(hint, nil)
		b.healthy()
		out, _, _ := b.exec(nil, "tether", "doctor", "--root", b.root, "-v")
		if !strings.Contains(out, "volume vault3: every binding needs a TPM PIN: at boot keyd asks for it") {
			t.Errorf("doctor -v does not say keyd asks for vault3's PIN:\n%s", out)
		}
	})

	t.Run("tpm of another machine", func(t *testing.T) {
		sealer, here := tpmtest.Start(t), tpmtest.Start(t)
		b, _ := dataBed(t)
		env := b.env
		b.env = append(env, "TPM2TOOLS_TCTI="+sealer.TCTI, "TETHER_TPM_TCTI=")
		img := b.image("vault")
		b.bind(img, "tpm2", `{}`)
		b.crypttab(img, "vault", "--askpass")
		b.healthy()
		// The disk moved to another machine (or its TPM was cleared).
		b.env = append(env, "TPM2TOOLS_TCTI="+here.TCTI, "TETHER_TPM_TCTI=")
		const what = "tpm2 was sealed by another TPM"
		fix := b.expect(what)[what]
		cmd, _, _ := strings.Cut(fix, "  # ")
		if want := "tether luks regen -d " + img + " -s 1 -k -"; cmd != want {
			t.Fatalf("fix %q, want %q", fix, want)
		}
		b.fix(cmd, []byte(recoveryPass))
		b.healthy()
	})

	t.Run("unreadable token", func(t *testing.T) {
		b, img := dataBed(t)
		// A second keyslot whose clevis token holds no JWE.
		kf := filepath.Join(b.dir, "k2")
		os.WriteFile(kf, []byte("second"), 0o600)
		b.run([]byte(recoveryPass), "cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
			"--key-slot", "2", "--key-file", "-", img, kf)
		b.run([]byte(`{"type":"clevis","keyslots":["2"],"jwe":{"protected":"!"}}`), "cryptsetup", "token", "import", img)
		const what = "keyslot 2: its token cannot be read"
		fix := b.expect(what)[what]
		cmd, _, _ := strings.Cut(fix, "  # ")
		if want := "tether luks unbind -d " + img + " -s 2"; cmd != want {
			t.Fatalf("fix %q, want %q", fix, want)
		}
		b.fix(cmd, nil)
		b.healthy()
	})

	// The root volume: / on /dev/mapper/root, opened by the initramfs.
	rootBed := func(t *testing.T, initrd map[string]string) *doctorBed {
		b := newDoctorBed(t)
		img := b.image("root")
		b.bind(img, "tang", tangCfg)
		b.crypttab(img, "root", "--root")
		b.writeFile("etc/fstab", "/dev/mapper/root / ext4 errors=remount-ro 0 1\n")
		b.run(nil, "tether", "install", "initramfs-tools", "--root", b.root, "--bin", "/usr/bin/tether")
		writeInitrd(t, filepath.Join(b.root, "boot/initrd.img-6.1.0-test"), initrd)
		return b
	}
	full := map[string]string{
		"usr/sbin/tether":                    "bin",
		"usr/sbin/cryptsetup":                "bin",
		"scripts/local-top/tether":           "#!/bin/sh\n",
		"usr/lib/klibc/bin/ipconfig":         "bin",
		"scripts/local-top/cryptroot":        "#!/bin/sh\n",
		"conf/conf.d/cryptroot":              "target=root\n",
		"lib/modules/6.1.0-test/modules.dep": "",
	}
	t.Run("initramfs healthy", func(t *testing.T) {
		rootBed(t, full).healthy()
	})
	t.Run("initramfs without tether", func(t *testing.T) {
		img := map[string]string{}
		for k, v := range full {
			if k != "usr/sbin/tether" && k != "scripts/local-top/tether" {
				img[k] = v
			}
		}
		b := rootBed(t, img)
		fixes := b.expect("tether is not in it", "scripts/local-top/tether is not in it")
		want := "chroot " + b.root + " update-initramfs -u -k 6.1.0-test"
		for _, f := range fixes {
			if f != want {
				t.Fatalf("fix %q, want %q", f, want)
			}
		}
	})
	t.Run("initramfs without network", func(t *testing.T) {
		img := map[string]string{}
		for k, v := range full {
			if k != "usr/lib/klibc/bin/ipconfig" {
				img[k] = v
			}
		}
		b := rootBed(t, img)
		const what = "ipconfig is not in it: the root volume's bindings need the network"
		if fix := b.expect(what)[what]; fix != "chroot "+b.root+" update-initramfs -u -k 6.1.0-test" {
			t.Fatalf("fix %q", fix)
		}
	})
	t.Run("initramfs hook not installed", func(t *testing.T) {
		b := rootBed(t, full)
		os.Remove(filepath.Join(b.root, "etc/initramfs-tools/hooks/tether"))
		const what = "tether's initramfs-tools hook is not installed"
		fix := b.expect(what)[what]
		if want := "tether install initramfs-tools --root " + b.root + " --bin /usr/bin/tether && chroot " + b.root + " update-initramfs -u -k all"; fix != want {
			t.Fatalf("fix %q, want %q", fix, want)
		}
	})
}

// writeInitrd writes an initramfs as Debian's are laid out: an
// uncompressed early cpio archive (microcode), then a gzip-compressed
// one with files.
func writeInitrd(t *testing.T, path string, files map[string]string) {
	t.Helper()
	testenv.RequireCmd(t, "cpio")
	os.MkdirAll(filepath.Dir(path), 0o755)
	early := cpioOf(t, map[string]string{"kernel/x86/microcode/GenuineIntel.bin": "ucode"})
	main := cpioOf(t, files)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(main)
	zw.Close()
	if err := os.WriteFile(path, append(early, z.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cpioOf makes a newc archive with the real cpio.
func cpioOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	var list []string
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
		list = append(list, name)
	}
	cmd := exec.Command("cpio", "-o", "-H", "newc", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(strings.Join(list, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio: %v", err)
	}
	return out
}
