package boot_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/tang"
)

// fakeNet is a /sys/class/net and /run as the kernel and ipconfig leave
// them.
func fakeNet(t *testing.T, cards map[string]string, leases map[string]string) boot.EarlyNet {
	t.Helper()
	dir := t.TempDir()
	n := boot.EarlyNet{SysNet: filepath.Join(dir, "sys"), RunDir: filepath.Join(dir, "run")}
	os.MkdirAll(n.RunDir, 0o755)
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(n.SysNet, "lo", "flags"), "0x9\n")
	for name, carrier := range cards {
		write(filepath.Join(n.SysNet, name, "flags"), "0x1003\n")
		if carrier != "" {
			write(filepath.Join(n.SysNet, name, "carrier"), carrier+"\n")
		}
	}
	for dev, conf := range leases {
		write(filepath.Join(n.RunDir, "net-"+dev+".conf"), conf)
	}
	return n
}

// ipconfigConf is what klibc's ipconfig writes after a DHCP lease (from a
// bookworm guest under QEMU user networking).
const ipconfigConf = `DEVICE='ens2'
PROTO='dhcp'
IPV4ADDR='10.0.2.15'
IPV4BROADCAST='10.0.2.255'
IPV4NETMASK='255.255.255.0'
IPV4GATEWAY='10.0.2.2'
IPV4DNS0='10.0.2.3'
IPV4DNS1='0.0.0.0'
HOSTNAME=''
DNSDOMAIN='lan'
NISDOMAIN=''
ROOTSERVER='10.0.2.2'
ROOTPATH=''
filename=''
UPTIME='12'
DHCPLEASETIME='86400'
DOMAINSEARCH='example.lan'
`

func TestEarlyNetProblem(t *testing.T) {
	for _, c := range []struct {
		name   string
		cards  map[string]string
		leases map[string]string
		want   string
	}{
		{"no card", nil, nil, "no network interface"},
		{"card down", map[string]string{"ens2": ""}, nil, "no link on ens2"},
		{"no cable", map[string]string{"ens2": "0"}, nil, "no link on ens2"},
		{"no dhcp", map[string]string{"ens2": "1"}, nil, "no DHCP lease on ens2 after 12s"},
		{"two cards", map[string]string{"ens2": "1", "ens3": "0"}, nil, "no DHCP lease on ens2 after 12s; no link on ens3"},
		{"lease", map[string]string{"ens2": "1"}, map[string]string{"ens2": ipconfigConf}, ""},
		{"broken lease file", map[string]string{"ens2": "1"}, map[string]string{"ens2": "IPV4ADDR='10.0.2.15\n$(reboot)\n"}, "no DHCP lease on ens2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := fakeNet(t, c.cards, c.leases)
			got := n.Problem(12 * time.Second)
			if c.want == "" && got != "" || !strings.HasPrefix(got, c.want) {
				t.Errorf("Problem() = %q, want %q", got, c.want)
			}
		})
	}
}

// TestEarlyNetKernelAddr: with HasAddr (dracut's systemd-networkd writes
// no lease files), a card the kernel has an address on is a configured
// network, and only the cards without one are named.
func TestEarlyNetKernelAddr(t *testing.T) {
	n := fakeNet(t, map[string]string{"ens2": "1", "ens3": "1"}, nil)
	n.HasAddr = func(card string) bool { return card == "ens3" }
	if got := n.Problem(5 * time.Second); got != "" {
		t.Errorf("ens3 has an address, Problem() = %q", got)
	}
	n.HasAddr = func(string) bool { return false }
	if got, want := n.Problem(5*time.Second), "no DHCP lease on ens2 after 5s; no DHCP lease on ens3 after 5s"; got != want {
		t.Errorf("Problem() = %q, want %q", got, want)
	}
	if boot.KernelHasAddr("lo") {
		t.Errorf("loopback's addresses are not a network")
	}
	if boot.KernelHasAddr("no-such-card0") {
		t.Errorf("a card that does not exist has an address")
	}
}

func TestLeasesAndResolvConf(t *testing.T) {
	n := fakeNet(t, map[string]string{"ens2": "1"}, map[string]string{"ens2": ipconfigConf})
	ls := n.Leases()
	if len(ls) != 1 || ls[0].Device != "ens2" || ls[0].Addr != "10.0.2.15" || len(ls[0].DNS) != 1 {
		t.Fatalf("leases: %+v", ls)
	}
	got := string(boot.ResolvConf(ls))
	want := "nameserver 10.0.2.3\nsearch example.lan lan\n"
	if got != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
}

// TestReason: the words for each failure come from real failures where one
// can be made here (a closed port, a server that never answers, a server
// that refuses), the others from the errors Go itself returns.
func TestReason(t *testing.T) {
	ctx := context.Background()
	rec := func(url string, timeout time.Duration) error {
		c := &tang.Client{HTTP: &http.Client{Timeout: timeout}}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := c.Advertisement(cctx, url, "")
		return &boot.RecoverError{Device: "/dev/vdb", Errs: []*boot.BindingError{{Token: 0, Desc: "tang", Err: err}}}
	}
	// A port nothing listens on.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()
	if got := boot.Reason(rec("http://"+closed, 2*time.Second)); got != closed+" refused the connection (server down?)" {
		t.Errorf("closed port: %q", got)
	}
	// A listener that never answers.
	bh, _ := net.Listen("tcp", "127.0.0.1:0")
	defer bh.Close()
	if got := boot.Reason(rec("http://"+bh.Addr().String(), 500*time.Millisecond)); got != bh.Addr().String()+" did not answer" {
		t.Errorf("silent server: %q", got)
	}
	// A server that accepts and hangs up (what a proxy with no server
	// behind it does).
	hup, _ := net.Listen("tcp", "127.0.0.1:0")
	defer hup.Close()
	go func() {
		for {
			c, err := hup.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if got := boot.Reason(rec("http://"+hup.Addr().String(), 2*time.Second)); !strings.HasPrefix(got, hup.Addr().String()+" closed the connection without answering") {
		t.Errorf("hang-up: %q", got)
	}
	// A server that answers 403 and 404.
	for code, want := range map[int]string{403: "answered 403 (refused: device revoked or not allowed)", 404: "answered 404 (its key was rotated away or deleted)"} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		go srv.Serve(ln)
		got := boot.Reason(rec("http://"+ln.Addr().String(), 2*time.Second))
		srv.Close()
		if got != "server "+ln.Addr().String()+" "+want {
			t.Errorf("%d: %q", code, got)
		}
	}
	dns := &net.DNSError{Err: "no such host", Name: "tang.example.lan", IsNotFound: true}
	if got := boot.Reason(&boot.BindingError{Err: &urlError{dns}}); got != "cannot resolve tang.example.lan" {
		t.Errorf("dns: %q", got)
	}
	// Two bindings failing alike are said once.
	e := errors.New("tang: unreachable")
	got := boot.Reason(&boot.RecoverError{Errs: []*boot.BindingError{{Token: 0, Err: e}, {Token: 1, Err: e}}})
	if got != "tang: unreachable" {
		t.Errorf("duplicates: %q", got)
	}
}

type urlError struct{ err error }

func (u *urlError) Error() string { return "Post: " + u.err.Error() }
func (u *urlError) Unwrap() error { return u.err }

func TestInitramfsConfig(t *testing.T) {
	c := boot.DefaultInitramfsConfig()
	boot.ParseInitramfsConfig(&c, []byte("# c\ndeadline=45s\nretry=10m\nip=192.0.2.10::192.0.2.1:255.255.255.0::eth0:off:192.0.2.1\nbogus\nfoo=bar\ndeadline=-3\nip=$(reboot)\n"))
	if c.Deadline != 45*time.Second || c.Retry != 10*time.Minute || c.IP != "192.0.2.10::192.0.2.1:255.255.255.0::eth0:off:192.0.2.1" {
		t.Errorf("config: %+v", c)
	}
	if len(c.Warnings) != 4 {
		t.Errorf("want 4 warnings (no '=', unknown, bad deadline, bad ip): %q", c.Warnings)
	}
	boot.ParseKernelCmdline(&c, "root=/dev/mapper/root ro tether.deadline=5 tether.retry=no ip=dhcp quiet")
	if c.Deadline != 5*time.Second || c.Retry != 0 || c.NetworkIP() != "dhcp" {
		t.Errorf("after the command line: %+v", c)
	}
	// What install writes reads back the same.
	d := boot.DefaultInitramfsConfig()
	d.Deadline, d.Retry, d.IP = 90*time.Second, -1, "dhcp"
	e := boot.DefaultInitramfsConfig()
	boot.ParseInitramfsConfig(&e, boot.MarshalInitramfsConfig(d))
	if e.Deadline != d.Deadline || e.Retry != d.Retry || e.IP != d.IP || len(e.Warnings) != 0 {
		t.Errorf("round trip: %+v", e)
	}
}
