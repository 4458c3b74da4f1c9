package luks_test

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/luks"
)

// TestEncryptTornHeaderLostWorkDir: a cut while cryptsetup writes its
// header over the start of the device (one 16 MiB write), in an initramfs
// whose work directory (a tmpfs, with cryptsetup's temporary header file)
// is gone at the next boot. Nothing is encrypted yet, and the first 16 MiB
// are in cryptsetup's copy at the end of the device: the rerun must put
// them back and start over, with no manual step and the data intact. Made
// with cryptsetup's own first step (--init-only, tether's label and key),
// then torn three ways:
//
//   - keyslot: the header reads, its keyslot 0 area is lost;
//   - json: both header copies fail their checksums;
//   - putback: as json, and tether's own putting back was cut before its
//     last write (the first 4 KiB).
func TestEncryptTornHeaderLostWorkDir(t *testing.T) {
	const key = "AbCdEfGhIjKlMnOpQrStUvWxYz012345"
	for _, torn := range []string{"keyslot", "json", "putback"} {
		t.Run(torn, func(t *testing.T) {
			g := newRig(t)
			img, fs, _ := plainFS(t, "64M", "32M")
			run(t, []byte(key), "cryptsetup", "reencrypt", "-q", "--encrypt", "--init-only", "--type", "luks2",
				"--reduce-device-size", "32M", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
				"--subsystem", "tether-encrypt:"+key, "--key-file", "-", img)
			h := header(t, img)
			moved := false
			for _, s := range h.Metadata.Segments {
				for _, f := range s.Flags {
					if f == "backup-moved-segment" {
						moved = s.Offset == 48<<20 && s.Size == strconv.Itoa(16<<20)
					}
				}
			}
			if !moved {
				t.Fatalf("cryptsetup did not move the first 16 MiB to the last 16 MiB: %s", h.JSON)
			}
			dev, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			zero := func(off, n int64) {
				if _, err := dev.WriteAt(make([]byte, n), off); err != nil {
					t.Fatal(err)
				}
			}
			switch torn {
			case "keyslot":
				zero(int64(h.Metadata.Keyslots["0"].Area.Offset), 4096)
			case "json", "putback":
				zero(4096, 4096) // the JSON of each copy
				zero(h.HdrSize+4096, 4096)
			}
			if torn == "putback" {
				buf := make([]byte, 16<<20)
				dev.ReadAt(buf, 48<<20)
				dev.WriteAt(buf[4096:], 4096)
			}
			dev.Close()
			res := g.tether(nil, nil, "luks", "encrypt", "-d", img, "--no-recovery", "-y", "tang", g.tangCfg())
			if res.code != 0 {
				t.Fatalf("rerun: exit %d\n%s", res.code, res.stderr)
			}
			if !strings.Contains(res.stderr, "putting back") {
				t.Errorf("the rerun did not say it put the start back:\n%s", res.stderr)
			}
			h = header(t, img)
			if luks.EncryptUnfinished(h) || h.Reencrypting() {
				t.Fatalf("unfinished after the rerun:\n%s", h.JSON)
			}
			bs := luks.Bindings(h)
			pass := g.ok(nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(bs[0].Slot))
			if !bytes.Equal(decryptData(t, img, bs[0].Slot, []byte(pass), len(fs)), fs) {
				t.Fatal("the decrypted data differs from the original filesystem")
			}
		})
	}
}
