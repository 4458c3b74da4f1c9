package realboot

import (
	"os"
	"path/filepath"
	"testing"
)

// TestBaseImages builds (or finds cached) both base trees at once, before
// any guest boots: the two mmdebstrap runs are mostly downloading and
// unpacking, so side by side they take little more than one, and a cold
// run's first guest and the first dracut guest no longer each wait for
// their own build in turn. It also checks that each tree holds what every
// guest of its flavor needs.
func TestBaseImages(t *testing.T) {
	Require(t)
	need := map[Flavor][]string{
		InitramfsTools: {"usr/sbin/update-initramfs", "usr/share/initramfs-tools/hooks/cryptroot"},
		Dracut:         {"usr/bin/dracut", "usr/lib/dracut/modules.d/90crypt"},
	}
	for _, flavor := range []Flavor{InitramfsTools, Dracut} {
		flavor := flavor
		t.Run(string(flavor), func(t *testing.T) {
			t.Parallel()
			tree := Base(t, flavor)
			kernels, _ := filepath.Glob(filepath.Join(tree, "boot/vmlinuz-*"))
			if len(kernels) == 0 {
				t.Errorf("the %s base has no kernel in /boot", flavor)
			}
			for _, p := range append([]string{"usr/sbin/cryptsetup", "lib/systemd/systemd"}, need[flavor]...) {
				if _, err := os.Stat(filepath.Join(tree, p)); err != nil {
					t.Errorf("the %s base has no /%s", flavor, p)
				}
			}
		})
	}
}
