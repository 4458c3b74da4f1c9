package luks_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/test/vm"
)

// TestGuestUnlock opens tether-bound volumes with real dm-crypt inside a
// QEMU guest (the host kernel has no device-mapper): an image bound by
// tether luks bind, with a first binding to a dead server (unlock must not
// wait for it), and a container made by tether luks create --fs ext4.
// The bindings carry the server's advertisement in their configuration,
// so the host binds for the guest's address of the server (10.0.2.2).
func TestGuestUnlock(t *testing.T) {
	k := vm.Require(t)
	testenv.RequireRoot(t)
	tangd := testenv.StartTangd(t)
	port := tangd.URL[strings.LastIndex(tangd.URL, ":")+1:]
	dead := testenv.FreePort(t)
	dead = dead[strings.LastIndex(dead, ":")+1:]
	adv := vm.FetchAdv(t, tangd.URL)
	cfg := func(port string) string {
		b, _ := json.Marshal(map[string]any{"url": "http://10.0.2.2:" + port, "adv": json.RawMessage(adv)})
		return string(b)
	}
	bin := testenv.TetherBin(t)
	state := filepath.Join(t.TempDir(), "state")
	os.Mkdir(state, 0o700)
	tether := func(stdin string, args ...string) string {
		t.Helper()
		out, errb, code := testenv.Run(t, []byte(stdin), "env", append([]string{"TETHER_LUKS_STATE_DIR=" + state, bin}, args...)...)
		if code != 0 {
			t.Fatalf("tether %v: %s", args, errb)
		}
		return string(out)
	}

	const file = "hello from a tether-bound disk"
	img := vm.MakeLUKSImage(t, map[string]string{"hello.txt": file}, "recovery")
	tether("recovery", "luks", "bind", "-d", img, "-k", "-", "tang", cfg(dead))
	tether("recovery", "luks", "bind", "-d", img, "-k", "-", "tang", cfg(port))

	made := filepath.Join(t.TempDir(), "made.img")
	tether("", "luks", "create", made, "--size", "64M", "--fs", "ext4", "tang", cfg(port))

	script := `
t0=$(date +%s)
tether luks unlock -d /dev/vda -n data --timeout 20s
echo "@@UNLOCK-STATUS $?"
echo "@@UNLOCK-SECONDS $(( $(date +%s) - t0 ))"
mount /dev/mapper/data /mnt && echo "@@READ $(cat /mnt/hello.txt)"
umount /mnt
cryptsetup close data
tether luks unlock -d /dev/vdb -n made
mount /dev/mapper/made /mnt && echo data > /mnt/new.txt && echo "@@MADE-WRITE $(cat /mnt/new.txt)"
umount /mnt
cryptsetup close made
# With device-mapper, create formats, binds, opens and runs mkfs.ext4 in
# the opened volume.
tether luks create /tmp/c.img --size 64M --fs ext4 tang '` + cfg(port) + `' > /tmp/recovery
echo "@@CREATE-STATUS $?"
tether luks unlock -d /tmp/c.img -n c && mount /dev/mapper/c /mnt && echo x > /mnt/x && echo "@@CREATE-WRITE $(cat /mnt/x)"
umount /mnt
cryptsetup close c
`
	mkfs := testenv.RequireCmd(t, "mkfs.ext4")
	// cryptsetup open of an image file attaches a loop device.
	vm.GuestModules = append(vm.GuestModules, "loop")
	res := vm.Boot(t, vm.Config{Kernel: k, Script: script, Disks: []string{img, made}, Binaries: []string{mkfs}})
	t.Logf("guest ran for %s", res.Duration.Round(100*time.Millisecond))
	if got := res.Markers("UNLOCK-STATUS"); len(got) == 0 || got[0] != "0" {
		t.Errorf("unlock exit status %q", got)
	}
	if got := res.Markers("READ"); len(got) == 0 || got[0] != file {
		t.Errorf("read %q from the unlocked disk, want %q", got, file)
	}
	// The dead server's binding is tried at the same time as the live
	// one; a dead binding must not hold up the unlock.
	if got := res.Markers("UNLOCK-SECONDS"); len(got) == 0 {
		t.Error("no unlock duration")
	} else if s, _ := strconv.Atoi(got[0]); s > 10 {
		t.Errorf("unlock took %ds", s)
	}
	if got := res.Markers("MADE-WRITE"); len(got) == 0 || got[0] != "data" {
		t.Errorf("the created container did not mount and take a file: %q", got)
	}
	if got := res.Markers("CREATE-WRITE"); len(got) == 0 || got[0] != "x" {
		t.Errorf("create with device-mapper: status %q, write %q", res.Markers("CREATE-STATUS"), got)
	}
	if t.Failed() {
		t.Logf("console:\n%s", res.Console)
	}
}
