package realboot

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// Debs downloads the named packages (apt-get download, the host's own
// sources) into a cached folder keyed by the names, and returns their
// contents by file name, for a guest to install with dpkg -i as an
// upgrade would. The guest has no network to a mirror; the packages come
// to it on the script disk.
func Debs(t testing.TB, names ...string) map[string][]byte {
	t.Helper()
	testenv.RequireCmd(t, "apt-get")
	sum := sha256.Sum256([]byte(strings.Join(names, ",")))
	dir := filepath.Join(CacheDir(), "debs-"+hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		os.RemoveAll(dir)
		os.MkdirAll(dir, 0o755)
		cmd := exec.Command("apt-get", append([]string{"download", "-q"}, names...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			// The package lists may be missing on a fresh machine.
			if up, err2 := exec.Command("apt-get", "update", "-q").CombinedOutput(); err2 != nil {
				t.Fatalf("apt-get update: %v\n%s", err2, up)
			}
			cmd = exec.Command("apt-get", append([]string{"download", "-q"}, names...)...)
			cmd.Dir = dir
			if out, err = cmd.CombinedOutput(); err != nil {
				t.Fatalf("apt-get download %s: %v\n%s", strings.Join(names, " "), err, out)
			}
		}
		os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".deb") {
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = data
		}
	}
	if len(out) == 0 {
		t.Fatalf("apt-get download %s gave no packages", strings.Join(names, " "))
	}
	return out
}

// KernelPackage is the versioned kernel package linux-image-amd64 depends
// on in the host's sources: newer than the base image's when the host has
// bookworm-updates or security, so installing it is a kernel upgrade.
func KernelPackage(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		t.Fatalf("apt-cache depends linux-image-amd64: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			return f[1]
		}
	}
	t.Fatalf("linux-image-amd64 depends on no linux-image-*:\n%s", out)
	return ""
}
