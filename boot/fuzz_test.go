package boot_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/boot"
)

// The boot parsers read files and socket names that other programs write:
// crypttab (admin-edited), systemd's ask-password files and the peer
// names of connecting sockets. None may panic, and what they accept must
// be self-consistent.

func FuzzParseCrypttab(f *testing.F) {
	for _, s := range []string{
		"data UUID=1234 /run/tether/keyd.sock luks,_netdev\n",
		"# comment\n\nroot /dev/sda2 none luks,discard\n",
		"backup PARTUUID=ab-cd - luks,noauto,keyfile-timeout=10s\n",
		"x\ty\tz\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := boot.ParseCrypttab(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Name == "" || strings.ContainsAny(e.Name, " \t\n") {
				t.Fatalf("entry with a bad name %q from %q", e.Name, b)
			}
		}
	})
}

func FuzzParseAsk(f *testing.F) {
	for _, s := range []string{
		"[Ask]\nPID=1\nSocket=/run/systemd/ask-password/sck.1\nAcceptCached=1\nEcho=0\nNotAfter=0\nId=cryptsetup:/dev/vda\nMessage=Please enter passphrase\n",
		"[Ask]\nNotAfter=99999999999999999999\n",
		"[Other]\nId=x\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		boot.ParseAsk(bytes.NewReader(b))
	})
}

func FuzzVolumeFromPeer(f *testing.F) {
	for _, s := range []string{"@1a2b3c4d5e6f7a8b/cryptsetup/data", "@1/cryptsetup/x/y", "@/cryptsetup/", "/tmp/sock", "",
		"@0123456789abcdefA/cryptsetup/v", "@1/cryptsetup/a\nb", "@1/cryptsetup/\xff", "1/cryptsetup/x", "@g/cryptsetup/x", "@1/cryptsetup/cryptsetup/x"} {
		f.Add(s)
	}
	// The grammar as a regular expression: the hand parser must agree.
	re := regexp.MustCompile(`^@[0-9a-fA-F]{1,16}/cryptsetup/(.+)$`)
	f.Fuzz(func(t *testing.T, name string) {
		v, err := boot.VolumeFromPeer(name)
		if err == nil && (v == "" || !strings.HasSuffix(name, "/cryptsetup/"+v)) {
			t.Fatalf("%q gave volume %q", name, v)
		}
		m := re.FindStringSubmatch(name)
		switch {
		case m == nil && err == nil:
			t.Fatalf("%q accepted as volume %q, the grammar rejects it", name, v)
		case m != nil && err != nil:
			t.Fatalf("%q rejected (%v), the grammar gives volume %q", name, err, m[1])
		case m != nil && m[1] != v:
			t.Fatalf("%q gave volume %q, the grammar %q", name, v, m[1])
		}
	})
}
