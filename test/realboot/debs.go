package realboot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	dir := cached(t, "debs-"+hex.EncodeToString(sum[:8]), func(tmp string) error {
		download := func() ([]byte, error) {
			cmd := exec.Command("apt-get", append([]string{"download", "-q"}, names...)...)
			cmd.Dir = tmp
			return cmd.CombinedOutput()
		}
		if _, err := download(); err != nil {
			// The package lists may be missing on a fresh machine.
			if up, err := exec.Command("apt-get", "update", "-q").CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get update: %v\n%s", err, up)
			}
			if out, err := download(); err != nil {
				return fmt.Errorf("apt-get download %s: %v\n%s", strings.Join(names, " "), err, out)
			}
		}
		return nil
	})
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
