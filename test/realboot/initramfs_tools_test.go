package realboot

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestMain removes the binaries testenv.TetherBin builds.
func TestMain(m *testing.M) { testenv.Main(m) }

// fetchAdv returns a server's advertisement (the JWS), so a binding can be
// made on the host for a URL only the guest reaches.
func fetchAdv(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/adv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s/adv: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}

// hostPort is the host:port of a server URL.
func hostPort(url string) string {
	return url[strings.Index(url, "//")+2:]
}

// tangConfig is a tang pin config for a guest address, with the
// advertisement inline (the host cannot reach the guest's address).
func tangConfig(guestAddr, adv string) string {
	return fmt.Sprintf(`{"url":"http://%s","adv":%s}`, guestAddr, adv)
}

// installInitramfsTools runs tether's own install and Debian's
// update-initramfs in the tree, as an owner would on the machine.
func installInitramfsTools(g *Guest) {
	g.t.Helper()
	out := g.Chroot("tether install initramfs-tools\nupdate-initramfs -u -k all\nlsinitramfs /boot/initrd.img-* | grep -E 'sbin/tether$|local-top/tether$'\n")
	for _, want := range []string{"sbin/tether", "scripts/local-top/tether"} {
		if !strings.Contains(out, want) {
			g.t.Fatalf("the initramfs has no %s:\n%s", want, out)
		}
	}
}

// TestInitramfsTools boots a real Debian 12 whose root is on LUKS2 and
// whose initramfs was built by Debian's initramfs-tools with tether's hook:
//
//   - tang: bound to a tether server, the guest reaches multi-user.target
//     with nothing typed, root on /dev/mapper/root;
//   - sss: bound to any 1 of 2 servers, the first one down (it never
//     answers), the same.
//
// The server-down fallback to cryptroot's prompt is TestDataVolumes/down.
func TestInitramfsTools(t *testing.T) {
	g := New(t, InitramfsTools)
	installInitramfsTools(g)
	g.MakeDisks()
	srv := testenv.StartServer(t, "")
	adv := fetchAdv(t, srv.URL)
	fwd := map[string]string{ServerAddr: hostPort(srv.URL)}

	t.Run("tang", func(t *testing.T) {
		g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "tang", tangConfig(ServerAddr, adv))
		m := g.Boot(Options{Forward: fwd, Log: "tang.log"})
		_, _, opened := m.WaitFor(`tether: opened /dev/vdb as /dev/mapper/root`, 0, 10*time.Minute)
		_, ready := m.WaitReady(0, 10*time.Minute, "/dev/mapper/root")
		m.WaitExit(3 * time.Minute)
		t.Logf("root unlocked %s after power-on, multi-user.target at %s", opened.Round(time.Second), ready.Round(time.Second))
		g.Host("", "luks", "unbind", "-d", g.RootImg, "-s", "1")
	})

	t.Run("sss-one-down", func(t *testing.T) {
		// Server2Addr has no forward: nothing answers there.
		cfg := fmt.Sprintf(`{"t":1,"pins":{"tang":[%s,%s]}}`, tangConfig(Server2Addr, adv), tangConfig(ServerAddr, adv))
		g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "sss", cfg)
		m := g.Boot(Options{Forward: fwd, Log: "sss.log"})
		_, _, opened := m.WaitFor(`tether: opened /dev/vdb as /dev/mapper/root`, 0, 10*time.Minute)
		m.WaitReady(0, 10*time.Minute, "/dev/mapper/root")
		m.WaitExit(3 * time.Minute)
		t.Logf("root unlocked %s after power-on with the first server down", opened.Round(time.Second))
	})
}

// modulesDep is a guest script line that makes initramfs-tools include only
// the modules the running guest uses (MODULES=dep), as many small machines
// are configured. A rebuild inside the guest then takes a few minutes under
// emulation instead of a quarter of an hour, and the boots that follow
// prove that tether's hook adds what it needs (network, TPM, crypto
// drivers) without relying on MODULES=most. Only a rebuild inside the
// guest may use it: in the host's chroot, dep would pick the host's modules.
const modulesDep = `sed -i 's/^MODULES=.*/MODULES=dep/' /etc/initramfs-tools/initramfs.conf`
