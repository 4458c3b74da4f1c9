package vm

import (
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestGuestSmoke proves the harness itself: the guest boots, reaches the
// host's tether server through 10.0.2.2, and opens a LUKS2 image with
// real dm-crypt using a passphrase.
func TestGuestSmoke(t *testing.T) {
	k := Require(t)
	testenv.RequireRoot(t)
	img := MakeLUKSImage(t, map[string]string{"hello.txt": "hello from the encrypted disk"}, "recovery")
	srv := testenv.StartServer(t, "")
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	script := `
wget -q -O - http://10.0.2.2:` + port + `/adv >/dev/null && echo "@@ADV ok"
echo -n recovery | cryptsetup open --key-file - --key-slot 0 /dev/vda smoke && echo "@@OPEN ok"
mount /dev/mapper/smoke /mnt && echo "@@READ $(cat /mnt/hello.txt)"
umount /mnt; cryptsetup close smoke && echo "@@CLOSED ok"
`
	res := Boot(t, Config{Kernel: k, Script: script, Disks: []string{img}})
	for _, m := range []string{"ADV", "OPEN", "CLOSED"} {
		if !res.Has(m) {
			t.Errorf("guest did not print @@%s; console:\n%s", m, res.Console)
		}
	}
	if r := res.Markers("READ"); len(r) == 0 || r[0] != "hello from the encrypted disk" {
		t.Errorf("guest read %q; console:\n%s", r, res.Console)
	}
	t.Logf("guest booted and finished in %s", res.Duration.Round(1e8))
}
