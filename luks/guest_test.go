package luks_test

import (
	"crypto/md5"
	"encoding/json"
	"fmt"
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

	// A plain ext4 disk that the guest encrypts in place.
	plain, _, known := plainFS(t, "64M", "32M")

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
# Encrypt a block device in place, then open it.
tether luks encrypt -d /dev/vdc tang '` + cfg(port) + `' > /tmp/rec2
echo "@@ENCRYPT-STATUS $?"
tether luks unlock -d /dev/vdc -n enc && mount /dev/mapper/enc /mnt && echo "@@ENCRYPT-READ $(md5sum < /mnt/known.bin)"
umount /mnt
cryptsetup close enc
`
	mkfs := testenv.RequireCmd(t, "mkfs.ext4")
	// cryptsetup open of an image file attaches a loop device.
	vm.GuestModules = append(vm.GuestModules, "loop")
	res := vm.Boot(t, vm.Config{Kernel: k, Script: script, Disks: []string{img, made, plain}, Binaries: []string{mkfs}})
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
	sum := fmt.Sprintf("%x", md5.Sum(known))
	if got := res.Markers("ENCRYPT-READ"); len(got) == 0 || !strings.HasPrefix(got[0], sum) {
		t.Errorf("encrypt of a block device: status %q, read md5 %q, want %s", res.Markers("ENCRYPT-STATUS"), got, sum)
	}
	if t.Failed() {
		t.Logf("console:\n%s", res.Console)
	}
}
