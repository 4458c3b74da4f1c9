package luks_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/xts"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/luks"
)

// plainFS makes a size image holding an ext4 filesystem of fsSize with a
// known random file, and returns the image and the filesystem's bytes.
func plainFS(t *testing.T, size, fsSize string) (img string, fs []byte, file []byte) {
	t.Helper()
	testenv.RequireCmd(t, "mkfs.ext4")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	file = make([]byte, 3<<20+123)
	rand.Read(file)
	if err := os.WriteFile(filepath.Join(src, "known.bin"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(dir, "plain.img")
	run(t, nil, "truncate", "-s", size, img)
	run(t, nil, "mkfs.ext4", "-q", "-F", "-d", src, img, fsSize)
	all, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := parseMiB(fsSize)
	return img, all[:n], file
}

func parseMiB(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "M"))
	return n << 20, err
}

// decryptData decrypts the first n bytes of the data segment in userspace
// with the volume key (aes-xts-plain64), as dm-crypt would.
func decryptData(t *testing.T, img string, slot int, key []byte, n int) []byte {
	t.Helper()
	h := header(t, img)
	seg := h.Metadata.Segments["0"]
	if seg.Encryption != "aes-xts-plain64" {
		t.Fatalf("segment cipher %q", seg.Encryption)
	}
	vk, err := (&luks.Runner{}).VolumeKey(context.Background(), img, slot, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := xts.NewCipher(aes.NewCipher, vk)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	ct := data[seg.Offset : int(seg.Offset)+n]
	out := make([]byte, n)
	ss := seg.SectorSize
	for i := 0; i < n; i += ss {
		// plain64: the IV is the little-endian sector number, counted in
		// 512-byte units unless the segment has iv_large_sectors.
		sector := uint64(i / 512)
		for _, f := range seg.Flags {
			if f == "iv_large_sectors" {
				sector = uint64(i / ss)
			}
		}
		c.Decrypt(out[i:i+ss], ct[i:i+ss], sector+uint64(seg.IVTweak))
	}
	return out
}

// TestEncryptInPlace encrypts a 128 MiB image holding a 96 MiB ext4
// filesystem, kills tether and cryptsetup in the middle of the
// reencryption, resumes, and checks in userspace that the decrypted data is
// the original filesystem byte for byte.
func TestEncryptInPlace(t *testing.T) {
	g := newRig(t)
	img, fs, file := plainFS(t, "128M", "96M")

	cmd := exec.Command(g.bin, "luks", "encrypt", "-d", img, "-y", "tang", g.tangCfg())
	cmd.Env = append(os.Environ(), "TETHER_LUKS_STATE_DIR="+g.state)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the whole process group (tether and cryptsetup) as soon as
	// the header says that the encryption is under way.
	interrupted := false
	var temp []byte
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if h, err := luks.ReadHeaderFile(img); err == nil && h.Reencrypting() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			interrupted = true
			// The temporary key is in the header from its first write.
			k, ok := strings.CutPrefix(h.Subsystem, "tether-encrypt:")
			if !ok || len(k) != 32 {
				t.Fatalf("the header has no temporary key: subsystem %q", h.Subsystem)
			}
			temp = []byte(k)
			break
		}
	}
	cmd.Wait()
	if !interrupted {
		t.Fatalf("the encryption finished before it could be interrupted:\n%s", stderr.String())
	}
	if h := header(t, img); !h.Reencrypting() {
		t.Fatal("the header does not show an unfinished encryption after the kill")
	}
	// list says what is going on; bind refuses.
	res := g.tether([]byte(testPass), nil, "luks", "bind", "-d", img, "-k", "-", "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "unfinished") {
		t.Errorf("bind during an unfinished encryption: %d %s", res.code, res.stderr)
	}

	res = g.tether(nil, nil, "luks", "encrypt", "-d", img, "-y", "tang", g.tangCfg())
	if res.code != 0 {
		t.Fatalf("resume: exit %d\n%s", res.code, res.stderr)
	}
	t.Logf("resumed:\n%s", res.stderr)
	if !strings.Contains(res.stderr, "resuming") {
		t.Errorf("resume did not say it resumed:\n%s", res.stderr)
	}
	recovery := strings.TrimSpace(res.stdout)
	if len(recovery) != 39 {
		t.Fatalf("recovery passphrase %q", recovery)
	}
	h := header(t, img)
	if h.Reencrypting() || len(h.Slots()) != 2 || len(luks.Bindings(h)) != 1 {
		t.Fatalf("after encrypt: reencrypting %v slots %v bindings %v", h.Reencrypting(), h.Slots(), luks.Bindings(h))
	}
	recSlot := -1
	for _, s := range h.Slots() {
		if g.opens(img, s, []byte(recovery)) {
			recSlot = s
		}
	}
	if recSlot < 0 {
		t.Fatal("the recovery passphrase opens no keyslot")
	}
	if left, _ := filepath.Glob(filepath.Join(g.state, "*")); len(left) != 1 || !strings.Contains(left[0], "lock-") {
		t.Errorf("state left behind: %v", left)
	}
	// No temporary key anywhere: not in a keyslot, not in the header.
	for _, s := range h.Slots() {
		if g.opens(img, s, temp) {
			t.Errorf("the temporary key still opens keyslot %d", s)
		}
	}
	if h.Subsystem != "" {
		t.Errorf("subsystem label %q left", h.Subsystem)
	}
	if js := run(t, nil, "cryptsetup", "luksDump", "--dump-json-metadata", img); bytes.Contains(js, temp) || bytes.Contains(js, []byte("tether-encrypt")) {
		t.Errorf("the metadata still holds the temporary key:\n%s", js)
	}
	if res := g.tether(nil, nil, "luks", "unlock", "-d", img, "--test"); res.code != 0 {
		t.Fatalf("unlock: %s", res.stderr)
	}

	plain := decryptData(t, img, recSlot, []byte(recovery), len(fs))
	if !bytes.Equal(plain, fs) {
		t.Fatal("the decrypted data differs from the original filesystem")
	}
	// And the known file reads back from the decrypted filesystem.
	testenv.RequireCmd(t, "debugfs")
	dec := filepath.Join(t.TempDir(), "dec.img")
	os.WriteFile(dec, plain, 0o600)
	if got := run(t, nil, "debugfs", "-R", "cat /known.bin", dec); !bytes.Equal(got, file) {
		t.Fatal("known.bin differs after decryption")
	}
	// Running encrypt again on the finished volume changes nothing and
	// says so.
	before := fileSum(t, img)
	res = g.tether(nil, nil, "luks", "encrypt", "-d", img, "-y", "tang", g.tangCfg())
	if res.code != 0 || !strings.Contains(res.stderr, "already encrypted and bound") || res.stdout != "" || fileSum(t, img) != before {
		t.Errorf("encrypt twice: %d %s", res.code, res.stderr)
	}
	// A LUKS2 volume without a binding is refused.
	other := g.image("40M")
	res = g.tether(nil, nil, "luks", "encrypt", "-d", other, "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "already a LUKS2 volume") || !strings.Contains(res.stderr, "tether luks bind") {
		t.Errorf("encrypt a LUKS2 volume: %d %s", res.code, res.stderr)
	}
}

// TestEncryptCrashSteps kills tether after each of encrypt's own steps;
// running it again must finish the job with the data intact. The
// recovery passphrase is the last one printed (a run killed after
// printing it does not print it again once its keyslot is in use).
func TestEncryptCrashSteps(t *testing.T) {
	g := newRig(t)
	for _, step := range []string{"encrypt:state", "encrypt:encrypted", "encrypt:recovery", "bind:addkey", "bind:token",
		"encrypt:printed", "encrypt:killtemp", "encrypt:files"} {
		t.Run(step, func(t *testing.T) {
			g.t = t
			img, fs, _ := plainFS(t, "72M", "40M")
			res := g.tether(nil, []string{"TETHER_TEST_CRASH_AT=" + step}, "luks", "encrypt", "-d", img, "-y", "tang", g.tangCfg())
			if !res.killed {
				t.Fatalf("not killed at %s: %d %s", step, res.code, res.stderr)
			}
			printed := res.stdout
			// While the temporary key is in the header, list says so.
			if h, err := luks.ReadHeaderFile(img); err == nil && luks.EncryptUnfinished(h) && !h.Reencrypting() {
				if l := g.tether(nil, nil, "luks", "list", "-d", img); !strings.Contains(l.stderr, "temporary key is in the header") {
					t.Errorf("list during an unfinished encrypt: %d %s", l.code, l.stderr)
				}
			}
			res = g.tether(nil, nil, "luks", "encrypt", "-d", img, "-y", "tang", g.tangCfg())
			if res.code != 0 {
				t.Fatalf("rerun: %d %s", res.code, res.stderr)
			}
			printed += res.stdout
			if len(printed) < 39 {
				t.Fatalf("no recovery passphrase printed: %q", printed)
			}
			recovery := []byte(printed[len(printed)-39:])
			h := header(t, img)
			bs := luks.Bindings(h)
			if len(bs) != 1 || len(h.Slots()) != 2 || len(luks.Leftovers(h)) != 0 || h.Subsystem != "" {
				t.Fatalf("slots %v bindings %v leftovers %v subsystem %q", h.Slots(), bs, luks.Leftovers(h), h.Subsystem)
			}
			var rec int
			for _, s := range h.Slots() {
				if s != bs[0].Slot {
					rec = s
				}
			}
			if !bytes.Equal(decryptData(t, img, rec, recovery, len(fs)), fs) {
				t.Fatal("data differs")
			}
			if left, _ := filepath.Glob(filepath.Join(g.state, "*encrypt*")); len(left) != 0 {
				t.Errorf("left in the state directory: %v", left)
			}
		})
	}
}

// TestEncryptRecoveryChoices: a recovery file (0600, the bare passphrase,
// which cryptsetup --key-file takes), none at all, or stdout without a
// newline when it is not a terminal.
func TestEncryptRecoveryChoices(t *testing.T) {
	g := newRig(t)
	dir := t.TempDir()

	img, fs, _ := plainFS(t, "48M", "16M")
	keyFile := filepath.Join(dir, "sub", "img.key")
	os.Mkdir(filepath.Dir(keyFile), 0o755)
	// What killed atomic writes leave (secrets) goes on the next run.
	staleState := filepath.Join(g.state, ".encrypt-0f0f.json.tmp123")
	staleKey := filepath.Join(filepath.Dir(keyFile), ".img.key.tmp456")
	os.WriteFile(staleState, []byte(`{"recovery":"x"}`), 0o600)
	os.WriteFile(staleKey, []byte("x"), 0o600)
	res := g.tether(nil, nil, "luks", "encrypt", "-d", img, "--recovery-file", keyFile, "-y", "tang", g.tangCfg())
	if res.code != 0 || res.stdout != "" || !strings.Contains(res.stderr, keyFile) {
		t.Fatalf("--recovery-file: %d %q %s", res.code, res.stdout, res.stderr)
	}
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 39 {
		t.Fatalf("recovery file: %v %v", fi, err)
	}
	run(t, nil, "cryptsetup", "open", "--test-passphrase", "--key-file", keyFile, img)
	rec, _ := os.ReadFile(keyFile)
	recSlot := -1
	for _, s := range header(t, img).Slots() {
		if g.opens(img, s, rec) {
			recSlot = s
		}
	}
	if recSlot < 0 || !bytes.Equal(decryptData(t, img, recSlot, rec, len(fs)), fs) {
		t.Fatal("the recovery file does not open the data")
	}
	if left, _ := os.ReadDir(filepath.Dir(keyFile)); len(left) != 1 {
		t.Errorf("files beside the recovery file: %v", left)
	}
	if _, err := os.Stat(staleState); err == nil {
		t.Error("a temporary state file of a killed run is left")
	}
	// A recovery file in a directory that does not exist is refused
	// before anything is encrypted.
	imgNoDir, _, _ := plainFS(t, "48M", "16M")
	before := fileSum(t, imgNoDir)
	res = g.tether(nil, nil, "luks", "encrypt", "-d", imgNoDir, "--recovery-file", filepath.Join(dir, "nodir", "k"), "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "mkdir -p") || fileSum(t, imgNoDir) != before {
		t.Errorf("recovery file in a missing directory: %d %s", res.code, res.stderr)
	}
	// It never overwrites an existing file.
	img2, _, _ := plainFS(t, "48M", "16M")
	before = fileSum(t, img2)
	res = g.tether(nil, nil, "luks", "encrypt", "-d", img2, "--recovery-file", keyFile, "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "already exists") || fileSum(t, img2) != before {
		t.Errorf("existing recovery file: %d %s", res.code, res.stderr)
	}
	if b, _ := os.ReadFile(keyFile); !bytes.Equal(b, rec) {
		t.Error("the existing recovery file was changed")
	}

	// None: the binding is the only keyslot.
	res = g.tether(nil, nil, "luks", "encrypt", "-d", img2, "--no-recovery", "-y", "tang", g.tangCfg())
	if res.code != 0 || res.stdout != "" || !strings.Contains(res.stderr, "no recovery passphrase") {
		t.Fatalf("--no-recovery: %d %q %s", res.code, res.stdout, res.stderr)
	}
	if h := header(t, img2); len(h.Slots()) != 1 || len(luks.Bindings(h)) != 1 {
		t.Errorf("--no-recovery: slots %v", h.Slots())
	}
	if res := g.tether(nil, nil, "luks", "unlock", "-d", img2, "--test"); res.code != 0 {
		t.Errorf("unlock: %s", res.stderr)
	}

	// stdout, redirected: the bare passphrase.
	img3, _, _ := plainFS(t, "48M", "16M")
	res = g.tether(nil, nil, "luks", "encrypt", "-d", img3, "-y", "tang", g.tangCfg())
	if res.code != 0 || len(res.stdout) != 39 {
		t.Fatalf("stdout: %d %q %s", res.code, res.stdout, res.stderr)
	}
	out := filepath.Join(dir, "stdout.key")
	os.WriteFile(out, []byte(res.stdout), 0o600)
	run(t, nil, "cryptsetup", "open", "--test-passphrase", "--key-file", out, img3)

	// Both choices at once is a usage error.
	res = g.tether(nil, nil, "luks", "encrypt", "-d", img3, "--no-recovery", "--recovery-file", out, "-y", "tang", g.tangCfg())
	if res.code != 2 {
		t.Errorf("--no-recovery with --recovery-file: exit %d %s", res.code, res.stderr)
	}
}

// TestEncryptRefuses: what cannot be encrypted in place is refused with
// nothing changed, and the hint's command, run as printed, makes the
// same command work.
func TestEncryptRefuses(t *testing.T) {
	g := newRig(t)
	// A filesystem that fills the image: the header would overwrite it.
	// A file too small for a header at all.
	full, fs, _ := plainFS(t, "72M", "72M")
	small, smallFS, _ := plainFS(t, "40M", "40M")
	for _, c := range []struct {
		img, want string
		fs        []byte
	}{{full, "last 32 MiB must be free", fs}, {small, "too small", smallFS}} {
		before := fileSum(t, c.img)
		res := g.tether(nil, nil, "luks", "encrypt", "-d", c.img, "--no-recovery", "-y", "tang", g.tangCfg())
		if res.code == 0 || !strings.Contains(res.stderr, c.want) {
			t.Fatalf("%s: %d %s", c.img, res.code, res.stderr)
		}
		if fileSum(t, c.img) != before {
			t.Error("a refused encrypt changed the image")
		}
		_, hint, ok := strings.Cut(res.stderr, "tether: hint: ")
		cmdline := ""
		if ok {
			_, cmdline, _ = strings.Cut(strings.TrimSpace(hint), ": ")
		}
		if !strings.HasPrefix(cmdline, "truncate ") {
			t.Fatalf("hint names no command: %s", res.stderr)
		}
		run(t, nil, "sh", "-c", cmdline)
		res = g.tether(nil, nil, "luks", "encrypt", "-d", c.img, "--no-recovery", "-y", "tang", g.tangCfg())
		if res.code != 0 {
			t.Fatalf("after %q: %d %s", cmdline, res.code, res.stderr)
		}
		pass := g.ok(nil, "luks", "pass", "-d", c.img, "-s", strconv.Itoa(luks.Bindings(header(t, c.img))[0].Slot))
		if !bytes.Equal(decryptData(t, c.img, luks.Bindings(header(t, c.img))[0].Slot, []byte(pass), len(c.fs)), c.fs) {
			t.Errorf("after %q: the data differs", cmdline)
		}
	}
	// The binding fails (the server is down): found before anything is
	// written, and the same command works once the server is there.
	ok, okFS, _ := plainFS(t, "80M", "48M")
	before := fileSum(t, ok)
	res := g.tether(nil, nil, "luks", "encrypt", "-d", ok, "--no-recovery", "-y", "tang", `{"url":"`+testenv.ClosedPort(t)+`"}`)
	if res.code == 0 || !strings.Contains(res.stderr, "nothing was changed") || !strings.Contains(res.stderr, ok+" is untouched") {
		t.Errorf("server down: %d %s", res.code, res.stderr)
	}
	if strings.Contains(res.stderr, "encrypting") || fileSum(t, ok) != before {
		t.Errorf("server down: the image was changed:\n%s", res.stderr)
	}
	if res := g.tether(nil, nil, "luks", "encrypt", "-d", ok, "--no-recovery", "-y", "tang", g.tangCfg()); res.code != 0 {
		t.Fatalf("with the server up: %d %s", res.code, res.stderr)
	}
	slot := luks.Bindings(header(t, ok))[0].Slot
	if !bytes.Equal(decryptData(t, ok, slot, []byte(g.ok(nil, "luks", "pass", "-d", ok, "-s", strconv.Itoa(slot))), len(okFS)), okFS) {
		t.Error("with the server up: the data differs")
	}
	// Unknown content without --force.
	blob := filepath.Join(t.TempDir(), "blob.img")
	run(t, nil, "truncate", "-s", "72M", blob)
	res = g.tether(nil, nil, "luks", "encrypt", "-d", blob, "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "cannot tell") || !strings.Contains(res.stderr, "--force") {
		t.Errorf("unknown content: %d %s", res.code, res.stderr)
	}
}

func TestCreate(t *testing.T) {
	g := newRig(t)
	dir := t.TempDir()
	// Without a filesystem.
	c := filepath.Join(dir, "c.img")
	res := g.tether(nil, nil, "luks", "create", c, "--size", "80M", "-y", "tang", g.tangCfg())
	if res.code != 0 {
		t.Fatalf("create: %s", res.stderr)
	}
	recovery := []byte(strings.TrimSpace(res.stdout))
	if fi, _ := os.Stat(c); fi.Mode().Perm() != 0o600 || fi.Size() != 80<<20 {
		t.Errorf("file mode %v size %d", fi.Mode(), fi.Size())
	}
	if !g.opens(c, 0, recovery) {
		t.Error("the recovery passphrase does not open keyslot 0")
	}
	if res := g.tether(nil, nil, "luks", "unlock", "-d", c, "--test"); res.code != 0 {
		t.Errorf("unlock: %s", res.stderr)
	}
	// Never overwrites.
	before := fileSum(t, c)
	res = g.tether(nil, nil, "luks", "create", c, "--size", "80M", "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "exists") || fileSum(t, c) != before {
		t.Errorf("create over an existing file: %d %s", res.code, res.stderr)
	}
	// With ext4: the decrypted data is an ext4 filesystem.
	e := filepath.Join(dir, "e.img")
	res = g.tether(nil, nil, "luks", "create", e, "--size", "96M", "--fs", "ext4", "-y", "tang", g.tangCfg())
	if res.code != 0 {
		t.Fatalf("create --fs ext4: %s", res.stderr)
	}
	recovery = []byte(strings.TrimSpace(res.stdout))
	h := header(t, e)
	rec := -1
	for _, s := range h.Slots() {
		if g.opens(e, s, recovery) {
			rec = s
		}
	}
	if rec < 0 || len(luks.Bindings(h)) != 1 {
		t.Fatalf("slots %v, recovery slot %d", h.Slots(), rec)
	}
	sb := decryptData(t, e, rec, recovery, 4096)
	if binary.LittleEndian.Uint16(sb[1024+0x38:]) != 0xEF53 {
		t.Error("no ext4 filesystem inside")
	}
	// A failed create (server down) leaves no file behind.
	f := filepath.Join(dir, "f.img")
	res = g.tether(nil, nil, "luks", "create", f, "--size", "80M", "-y", "tang", `{"url":"`+testenv.ClosedPort(t)+`"}`)
	if _, err := os.Stat(f); res.code == 0 || err == nil {
		t.Errorf("failed create: exit %d, file left: %v", res.code, err == nil)
	}
}

// TestEncryptRefusesBlockDevice: on a block device (a loop device here)
// the filesystem, not the device, must shrink: the hint's resize2fs
// command, run as printed, makes the same encrypt command work.
func TestEncryptRefusesBlockDevice(t *testing.T) {
	g := newRig(t)
	testenv.RequireCmd(t, "losetup")
	testenv.RequireCmd(t, "resize2fs")
	img, _, _ := plainFS(t, "72M", "72M")
	out, _, code := testenv.Run(t, nil, "losetup", "-f", "--show", img)
	if code != 0 {
		t.Skip("no loop device available")
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { testenv.Run(t, nil, "losetup", "-d", dev) })
	args := []string{"luks", "encrypt", "-d", dev, "--no-recovery", "-y", "tang", g.tangCfg()}
	res := g.tether(nil, nil, args...)
	_, hint, _ := strings.Cut(res.stderr, "tether: hint: ")
	_, cmdline, _ := strings.Cut(strings.TrimSpace(hint), ": ")
	if res.code == 0 || !strings.HasPrefix(cmdline, "e2fsck -f -p "+dev+" && resize2fs "+dev+" ") {
		t.Fatalf("want a resize2fs hint: %d %s", res.code, res.stderr)
	}
	run(t, nil, "sh", "-c", cmdline)
	res = g.tether(nil, nil, args...)
	if res.code != 0 {
		t.Fatalf("after %q: %d %s", cmdline, res.code, res.stderr)
	}
	h := header(t, dev)
	if h.Reencrypting() || h.Subsystem != "" || len(luks.Bindings(h)) != 1 {
		t.Fatalf("after encrypt: reencrypting %v subsystem %q bindings %v", h.Reencrypting(), h.Subsystem, luks.Bindings(h))
	}
}
