package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/test/vm"
)

// TestInstallBootSettings: --deadline, --retry and --ip are written to
// /etc/tether/initramfs.conf (what the initramfs reads), a second install
// changes only what it is given, and a bad value writes nothing.
func TestInstallBootSettings(t *testing.T) {
	bin := testenv.TetherBin(t)
	root := t.TempDir()
	conf := filepath.Join(root, "etc/tether/initramfs.conf")
	if _, e, c := testenv.Run(t, nil, bin, "install", "initramfs-tools", "--root", root, "--bin", "/usr/bin/tether"); c != 0 {
		t.Fatal(string(e))
	}
	if _, err := os.Stat(conf); err == nil {
		t.Fatal("install without settings wrote the settings file")
	}
	ip := "192.0.2.10::192.0.2.1:255.255.255.0::eth0:off:192.0.2.1"
	out, e, c := testenv.Run(t, nil, bin, "install", "initramfs-tools", "--root", root, "--bin", "/usr/bin/tether", "--deadline", "45s", "--ip", ip)
	if c != 0 || !strings.Contains(string(out), conf) || !strings.Contains(string(e), "/etc/tether/initramfs.conf") {
		t.Fatalf("exit %d\n%s\n%s", c, out, e)
	}
	testenv.Run(t, nil, bin, "install", "initramfs-tools", "--root", root, "--bin", "/usr/bin/tether", "--retry", "10m")
	data, _ := os.ReadFile(conf)
	for _, want := range []string{"deadline=45s\n", "retry=10m0s\n", "ip=" + ip + "\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("%s has no %q:\n%s", conf, want, data)
		}
	}
	for _, bad := range [][]string{{"--deadline", "soon"}, {"--retry", "sometimes"}, {"--ip", "dhcp; reboot"}} {
		_, e, c := testenv.Run(t, nil, bin, append([]string{"install", "initramfs-tools", "--root", root, "--bin", "/usr/bin/tether"}, bad...)...)
		if c != 2 || !strings.Contains(string(e), bad[0]) {
			t.Errorf("%v: exit %d: %s", bad, c, e)
		}
		if now, _ := os.ReadFile(conf); string(now) != string(data) {
			t.Errorf("%v changed the settings", bad)
		}
	}
	if _, e, c := testenv.Run(t, nil, bin, "install", "systemd", "--root", root, "--deadline", "5s"); c != 2 {
		t.Errorf("install systemd --deadline: exit %d: %s", c, e)
	}
}

// TestCrypttabNeedsNetwork: a tang-bound volume needs the network, an
// unbound one does not; the exit status answers.
func TestCrypttabNeedsNetwork(t *testing.T) {
	testenv.RequireCmd(t, "cryptsetup")
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	srv := testenv.StartServer(t, "")
	var lines []string
	for _, name := range []string{"plain", "net"} {
		img := filepath.Join(dir, name+".img")
		os.WriteFile(img, nil, 0o600)
		os.Truncate(img, 20<<20)
		if _, e, c := testenv.Run(t, []byte("recovery"), "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
			"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img); c != 0 {
			t.Fatal(string(e))
		}
		if name == "net" {
			vm.BindTang(t, bin, img, "recovery", srv.URL, vm.FetchAdv(t, srv.URL), 1)
		}
		lines = append(lines, name+" "+img+" none luks")
	}
	tab := filepath.Join(dir, "crypttab")
	os.WriteFile(tab, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	out, e, c := testenv.Run(t, nil, bin, "crypttab", "needs-network", "--crypttab", tab)
	if c != 0 || string(out) != "plain\tno bindings\nnet\tnetwork\n" {
		t.Errorf("all: exit %d\n%s%s", c, out, e)
	}
	out, e, c = testenv.Run(t, nil, bin, "crypttab", "needs-network", "--crypttab", tab, "plain")
	if c != 1 || len(e) != 0 {
		t.Errorf("plain: exit %d\n%s%s", c, out, e)
	}
}
