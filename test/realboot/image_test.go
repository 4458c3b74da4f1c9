package realboot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnmountUnder: mounts left in a stale build tree (a tmpfs, and one
// nested in it) are detached before the tree is removed, so removing it
// cannot reach what they show.
func TestUnmountUnder(t *testing.T) {
	tmp := filepath.Join(t.TempDir(), "base.building")
	for _, d := range []string{tmp + "/proc", tmp + "/dev"} {
		os.MkdirAll(d, 0o755)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", tmp+"/dev").CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	os.MkdirAll(tmp+"/dev/shm", 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", tmp+"/dev/shm").CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	// What removal must not reach: a file on the mounted filesystem.
	if err := os.WriteFile(tmp+"/dev/shm/keep", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unmountUnder(tmp); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(data), tmp) {
		t.Fatalf("mounts left under %s:\n%s", tmp, data)
	}
	if _, err := os.Stat(tmp + "/dev/shm/keep"); err == nil {
		t.Errorf("the mounted filesystem is still visible in the tree")
	}
	if err := unmountUnder(tmp); err != nil {
		t.Errorf("nothing mounted: %v", err)
	}
}
