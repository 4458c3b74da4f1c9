package realboot

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// installDracut runs tether's own install and Debian's dracut in the
// tree. The image is generic (--no-hostonly): a chroot cannot show dracut
// the root device it would detect on the machine itself, so the root is
// named on the kernel command line (rd.luks.name=), as a generic image's
// bootloader entry does.
func installDracut(g *Guest) {
	g.t.Helper()
	out := g.Chroot(`tether install dracut
kver=$(ls /lib/modules | sort -V | tail -1)
dracut -q -f --no-hostonly --kver "$kver" --add "crypt tether" --add-drivers "virtio_blk virtio_pci virtio_net dm_crypt" 2>&1 | grep -v 'could not be found' || true
lsinitrd /boot/initrd.img-$kver | grep -E 'bin/tether$|tether-askpass' || true
`)
	for _, want := range []string{"usr/bin/tether", "tether-askpass.path"} {
		if !strings.Contains(out, want) {
			g.t.Fatalf("the dracut initramfs has no %s:\n%s", want, out)
		}
	}
}

// TestDracut boots a real Debian 12 whose initramfs was built by Debian's
// dracut (systemd inside the initramfs) with tether's module, three times:
//
//   - tang: the root volume, bound to a tether server, is opened by
//     tether's password agent with nothing typed, on a static address
//     from the kernel command line (no DHCP request before the root opens);
//   - late-server: the server hangs at power-on (DHCP) and comes back after
//     the deadline: systemd's prompt is on screen, and the agent, still
//     trying behind it, opens the root with nothing typed;
//   - no-dhcp: no network at all: the prompt comes at the deadline, the
//     console says why, the passphrase is typed and the boot completes.
//
// The server simply down (the prompt at the deadline, answered) is the
// union of the last two; TestDataVolumes boots that case on initramfs-tools.
func TestDracut(t *testing.T) {
	g := New(t, Dracut)
	installDracut(g)
	g.MakeDisks()
	srv := testenv.StartServer(t, "")
	adv := fetchAdv(t, srv.URL)
	fwd := map[string]string{ServerAddr: hostPort(srv.URL)}
	g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "tang", tangConfig(ServerAddr, adv))
	cmdline := "rd.luks.name=" + luksUUID(t, g.RootImg) + "=root " + slowSystemd

	// A static address on the kernel command line (dracut's ip=; the
	// generic DHCP fallback of tether's module must not win over it): the
	// root opens with nothing typed and no DHCP request sent before it.
	// The DHCP path is late-server's.
	t.Run("tang", func(t *testing.T) {
		pcap := filepath.Join(t.TempDir(), "static.pcap")
		m := g.Boot(Options{Forward: fwd, Capture: pcap, Log: "dracut-tang.log",
			Append: cmdline + " ip=10.0.2.50::10.0.2.2:255.255.255.0::enp0s4:none"})
		_, idx, at := m.WaitFor(`askpass: .*: answered`, 0, 8*time.Minute)
		_, ready := m.WaitReady(idx, 6*time.Minute, "/dev/mapper/root")
		m.WaitExit(2 * time.Minute)
		after := noDHCPBefore(t, pcap, m, at)
		t.Logf("static ip=: root opened %s after power-on, multi-user.target at %s, nothing typed, no DHCP request before it (%d after)",
			at.Round(time.Second), ready.Round(time.Second), after)
	})

	t.Run("late-server", func(t *testing.T) {
		// The server hangs at power-on and comes back after the
		// deadline: the prompt is on screen, nothing is typed, and
		// tether's agent, still trying behind it, opens the root.
		proxy := testenv.StartProxy(t, hostPort(srv.URL))
		proxy.Silence()
		m := g.Boot(Options{Forward: map[string]string{ServerAddr: proxy.Addr}, Append: cmdline + " tether.deadline=20s", Log: "dracut-late.log"})
		_, idx, _ := m.WaitFor(`still trying behind the prompt`, 0, 8*time.Minute)
		if !strings.Contains(m.Console(), "Please enter passphrase for disk") {
			t.Errorf("no passphrase prompt on the console while tether retries")
		}
		if !strings.Contains(m.Console(), ServerAddr+" did not answer") {
			t.Errorf("the console does not say why the root was not opened")
		}
		// Down a while longer behind the prompt: the attempts now in
		// flight fail too, and the one that succeeds is a retry.
		time.Sleep(15 * time.Second)
		proxy.Resume()
		back := m.Since()
		_, _, opened := m.WaitFor(`askpass: .*: answered`, idx, 3*time.Minute)
		m.WaitReady(idx, 6*time.Minute, "/dev/mapper/root")
		m.WaitExit(3 * time.Minute)
		t.Logf("root opened %s after the server came back, nothing typed", (opened - back).Round(time.Second))
	})

	// A card with no DHCP server behind it: the prompt at the deadline,
	// the console names the network (not the server), and the typed
	// passphrase completes the boot.
	t.Run("no-dhcp", func(t *testing.T) {
		m := g.Boot(Options{NIC: NICNoDHCP, Append: cmdline + " tether.deadline=20s", Log: "dracut-nodhcp.log"})
		line, idx, _ := m.WaitFor(`still trying behind the prompt`, 0, 8*time.Minute)
		if !regexp.MustCompile(`not opened unattended within 20s: no DHCP lease on \w+ after`).MatchString(line) {
			t.Errorf("the console does not name the network: %s", line)
		}
		_, idx, _ = m.WaitFor(`Please enter passphrase for disk`, 0, 2*time.Minute)
		m.Type(Passphrase + "\n")
		m.WaitReady(idx, 6*time.Minute, "/dev/mapper/root")
		m.WaitExit(2 * time.Minute)
		t.Logf("no DHCP: %s", line[strings.Index(line, "askpass:"):])
	})
}
