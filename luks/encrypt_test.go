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
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if h, err := luks.ReadHeaderFile(img); err == nil && h.Reencrypting() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			interrupted = true
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
	// Running encrypt again on the finished volume refuses clearly.
	res = g.tether(nil, nil, "luks", "encrypt", "-d", img, "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "already a LUKS2 volume") {
		t.Errorf("encrypt twice: %d %s", res.code, res.stderr)
	}
}

// TestEncryptCrashSteps kills tether after each of encrypt's own steps;
// running it again must finish the job with the data intact.
func TestEncryptCrashSteps(t *testing.T) {
	g := newRig(t)
	for _, step := range []string{"encrypt:state", "encrypt:encrypted", "encrypt:recovery", "bind:addkey", "encrypt:killtemp", "encrypt:printed"} {
		t.Run(step, func(t *testing.T) {
			g.t = t
			img, fs, _ := plainFS(t, "72M", "40M")
			res := g.tether(nil, []string{"TETHER_TEST_CRASH_AT=" + step}, "luks", "encrypt", "-d", img, "-y", "tang", g.tangCfg())
			if !res.killed {
				t.Fatalf("not killed at %s: %d %s", step, res.code, res.stderr)
			}
			res = g.tether(nil, nil, "luks", "encrypt", "-d", img, "-y", "tang", g.tangCfg())
			if res.code != 0 {
				t.Fatalf("rerun: %d %s", res.code, res.stderr)
			}
			recovery := []byte(strings.TrimSpace(res.stdout))
			h := header(t, img)
			bs := luks.Bindings(h)
			if len(bs) != 1 || len(h.Slots()) != 2 || len(luks.Leftovers(h)) != 0 {
				t.Fatalf("slots %v bindings %v leftovers %v", h.Slots(), bs, luks.Leftovers(h))
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
		})
	}
}

func TestEncryptRefuses(t *testing.T) {
	g := newRig(t)
	// A filesystem that fills the device: the header would overwrite it.
	full, _, _ := plainFS(t, "72M", "72M")
	before := fileSum(t, full)
	res := g.tether(nil, nil, "luks", "encrypt", "-d", full, "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "last 32 MiB must be free") || !strings.Contains(res.stderr, "resize2fs") {
		t.Errorf("full filesystem: %d %s", res.code, res.stderr)
	}
	// Unknown content without --force.
	blob := filepath.Join(t.TempDir(), "blob.img")
	run(t, nil, "truncate", "-s", "72M", blob)
	res = g.tether(nil, nil, "luks", "encrypt", "-d", blob, "-y", "tang", g.tangCfg())
	if res.code == 0 || !strings.Contains(res.stderr, "cannot tell") {
		t.Errorf("unknown content: %d %s", res.code, res.stderr)
	}
	if fileSum(t, full) != before {
		t.Error("a refused encrypt changed the image")
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
