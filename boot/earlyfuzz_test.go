package boot_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/boot"
)

// The initramfs reads files it did not write: ipconfig's net-*.conf and
// the boot settings an admin may have edited. Neither is ever sourced;
// whatever they hold, parsing must not panic and must only yield values
// that are safe to use (addresses that parse, a positive deadline).

func FuzzParseNetConf(f *testing.F) {
	f.Add([]byte(ipconfigConf))
	f.Add([]byte("DEVICE='../../etc'\nIPV4ADDR='$(reboot)'\n"))
	f.Add([]byte("IPV4DNS0=10.0.0.1\nDOMAINSEARCH='a b;c'\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := boot.ParseNetConf(b)
		if err != nil {
			return
		}
		if l.Addr != "" && net.ParseIP(l.Addr) == nil {
			t.Fatalf("address %q", l.Addr)
		}
		if strings.ContainsAny(l.Device, "/\x00") {
			t.Fatalf("device %q", l.Device)
		}
		rc := string(boot.ResolvConf([]boot.Lease{l}))
		for _, line := range strings.Split(strings.TrimSuffix(rc, "\n"), "\n") {
			if line != "" && !strings.HasPrefix(line, "nameserver ") && !strings.HasPrefix(line, "search ") {
				t.Fatalf("resolv.conf line %q", line)
			}
		}
	})
}

func FuzzParseInitramfsConfig(f *testing.F) {
	d := boot.DefaultInitramfsConfig()
	f.Add(boot.MarshalInitramfsConfig(d))
	f.Add([]byte("deadline=5\nretry=no\nip=dhcp\n"))
	f.Add([]byte("deadline=-1s\nretry=x\nip=a b\n=\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := boot.DefaultInitramfsConfig()
		boot.ParseInitramfsConfig(&c, b)
		if c.Deadline <= 0 || c.Deadline > 24*time.Hour {
			t.Fatalf("deadline %s", c.Deadline)
		}
		if strings.ContainsAny(c.IP, " \t\n'\"$`;\\") {
			t.Fatalf("ip %q", c.IP)
		}
		// What it accepted is written back and read the same.
		e := boot.DefaultInitramfsConfig()
		boot.ParseInitramfsConfig(&e, boot.MarshalInitramfsConfig(c))
		if e.Deadline != c.Deadline || e.Retry != c.Retry || e.IP != c.IP {
			t.Fatalf("round trip: %+v != %+v", e, c)
		}
	})
}
