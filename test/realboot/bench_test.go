package realboot

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// rootMounted is the guest's uptime when systemd started in the real root:
// the kernel timestamp of its first console line, the moment the
// initramfs handed over a mounted root.
var systemdLine = regexp.MustCompile(`^\[\s*(\d+\.\d+)\] systemd\[1\]: `)

func rootMounted(m *Machine) (time.Duration, error) {
	for _, l := range strings.Split(m.Console(), "\n") {
		if s := systemdLine.FindStringSubmatch(strings.TrimRight(l, "\r")); s != nil {
			f, _ := strconv.ParseFloat(s[1], 64)
			return time.Duration(f * float64(time.Second)), nil
		}
	}
	return 0, fmt.Errorf("no systemd line on the console")
}

// TestBootBenchmark (run by bench/boot.sh with TETHER_BENCH_BOOT=1) boots
// one guest image with two initramfs images built in it from the same
// tree: one by Debian's clevis-initramfs (clevis, clevis-luks), one by
// tether's hook, against the same tether server, with the same LUKS2
// binding (a clevis token, which both read). It measures the time from
// kernel start to the root mounted, alternating the two, for a healthy
// server and for sss(t=1) whose first server never answers, and writes a
// Markdown table to $TETHER_BENCH_OUT.
func TestBootBenchmark(t *testing.T) {
	if os.Getenv("TETHER_BENCH_BOOT") != "1" {
		t.Skip("a benchmark: run bench/boot.sh (TETHER_BENCH_BOOT=1)")
	}
	runs := benchRuns()
	g, initrds := benchGuest(t)
	g.MakeDisks()
	srv := testenv.StartServer(t, "")
	adv := fetchAdv(t, srv.URL)
	fwd := map[string]string{ServerAddr: hostPort(srv.URL)}

	cases := []struct{ name, pin, cfg string }{
		{"healthy server", "tang", tangConfig(ServerAddr, adv)},
		{"first server down (sss t=1 of 2)", "sss", fmt.Sprintf(`{"t":1,"pins":{"tang":[%s,%s]}}`, tangConfig(Server2Addr, adv), tangConfig(ServerAddr, adv))},
	}
	var table strings.Builder
	table.WriteString("| case | clevis-initramfs | tether | ratio (tether/clevis) |\n|---|---|---|---|\n")
	for ci, c := range cases {
		if ci > 0 {
			g.Host("", "luks", "unbind", "-d", g.RootImg, "-s", "1")
		}
		g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "-s", "1", c.pin, c.cfg)
		times := map[string][]time.Duration{}
		for i := 0; i < runs; i++ {
			for _, who := range []string{"clevis", "tether"} {
				o := Options{Forward: fwd, Initrd: initrds[who], Log: fmt.Sprintf("bench-%d-%s-%d.log", ci, who, i)}
				if who == "clevis" {
					// clevis-initramfs 19 reads ip=dhcp (the harness's
					// default) as an interface named "dhcp", waits for it
					// to appear and gives up at the prompt: it needs the
					// card named.
					o.Append = "ip=:::::" + benchNIC + ":dhcp"
				}
				m := g.Boot(o)
				m.WaitReady(0, 12*time.Minute, "/dev/mapper/root")
				m.WaitExit(2 * time.Minute)
				d, err := rootMounted(m)
				if err != nil {
					t.Fatal(err)
				}
				times[who] = append(times[who], d)
				t.Logf("%s, %s, run %d: root mounted %.1f s after kernel start", c.name, who, i+1, d.Seconds())
			}
		}
		cm, tm := median(times["clevis"]), median(times["tether"])
		fmt.Fprintf(&table, "| %s | %.1f s (%s) | %.1f s (%s) | **%.2f** |\n", c.name,
			cm.Seconds(), secs(times["clevis"]), tm.Seconds(), secs(times["tether"]), tm.Seconds()/cm.Seconds())
	}
	t.Logf("\n%s", table.String())
	if out := os.Getenv("TETHER_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func benchRuns() int {
	if n, err := strconv.Atoi(os.Getenv("RUNS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// benchGuest is one guest tree with three initramfs images built in it,
// kept as host files for Options.Initrd: "stock" (Debian's
// cryptsetup-initramfs alone), "clevis" (Debian's clevis-initramfs added)
// and "tether" (clevis's hook moved aside, tether's installed).
func benchGuest(t *testing.T) (*Guest, map[string]string) {
	g := New(t, InitramfsTools)
	initrds := map[string]string{}
	copyInitrd := func(name string) {
		t.Helper()
		ms, _ := filepath.Glob(filepath.Join(g.Tree, "boot/initrd.img-*"))
		if len(ms) != 1 {
			t.Fatalf("want one initrd in the tree, have %v", ms)
		}
		initrds[name] = filepath.Join(g.Dir, "initrd-"+name)
		if err := os.WriteFile(initrds[name], mustRead(t, ms[0]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	g.Chroot("update-initramfs -u -k all 2>&1 | tail -3\n")
	copyInitrd("stock")
	// clevis from Debian, in the guest's own tree.
	g.Write("/etc/resolv.conf", mustRead(t, "/etc/resolv.conf"), 0o644)
	g.Chroot("apt-get update -q >/dev/null\nDEBIAN_FRONTEND=noninteractive apt-get install -y -q clevis clevis-luks clevis-initramfs >/dev/null\nupdate-initramfs -u -k all 2>&1 | tail -3\n")
	copyInitrd("clevis")
	// tether's initramfs holds no clevis: its hook and scripts move aside.
	g.Chroot(`mkdir -p /root/clevis-aside
for f in hooks/clevis scripts/local-top/clevis scripts/local-bottom/clevis; do
    mv /usr/share/initramfs-tools/$f /root/clevis-aside/${f##*/}-${f%%/*}
done
`)
	installInitramfsTools(g)
	copyInitrd("tether")
	return g, initrds
}

// benchNIC is the guest's network card as udev names it in the initramfs
// (virtio-net at PCI slot 4).
const benchNIC = "enp0s4"

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func secs(ds []time.Duration) string {
	var p []string
	for _, d := range ds {
		p = append(p, fmt.Sprintf("%.1f", d.Seconds()))
	}
	return strings.Join(p, ", ")
}
