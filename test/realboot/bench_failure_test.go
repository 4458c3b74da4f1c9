package realboot

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestBootFailureBenchmark (bench/boot.sh, TETHER_BENCH_BOOT=1) boots the
// guest of TestBootBenchmark with its three initramfs images — stock
// (cryptsetup-initramfs alone), clevis-initramfs and tether's hook, tether
// with its default settings — under the failures of issue 23 and times
// what an owner waits for: power-on to the passphrase prompt, and for a
// server that comes back, its return to the root mounted with nothing
// typed. Medians of RUNS boots each; a Markdown table goes to
// $TETHER_BENCH_FAILURE_OUT.
func TestBootFailureBenchmark(t *testing.T) {
	if os.Getenv("TETHER_BENCH_BOOT") != "1" {
		t.Skip("a benchmark: run bench/boot.sh (TETHER_BENCH_BOOT=1)")
	}
	testenv.RequireCmd(t, "swtpm")
	runs := benchRuns()
	g, initrds := benchGuest(t)
	g.MakeDisks()
	srv := testenv.StartServer(t, "")
	adv := fetchAdv(t, srv.URL)
	fwd := map[string]string{ServerAddr: hostPort(srv.URL)}

	// boot starts one image; clevis-initramfs 19 needs the card named
	// (see TestBootBenchmark).
	boot := func(who string, o Options, log string) *Machine {
		o.Initrd = initrds[who]
		if who == "clevis" && o.NIC != NICNone {
			o.Append += " ip=:::::" + benchNIC + ":dhcp"
		}
		o.Log = log
		return g.Boot(o)
	}
	const prompt = `Please unlock disk root`
	// toPrompt is power-on to the passphrase prompt.
	toPrompt := func(o func() Options) func(who, log string) (time.Duration, error) {
		return func(who, log string) (time.Duration, error) {
			m := boot(who, o(), log)
			defer m.Kill()
			_, _, at, err := m.Expect(prompt, 0, 8*time.Minute)
			// What tether said on the console, for the record.
			for _, l := range strings.Split(m.Console(), "\n") {
				if i := strings.Index(l, "tether: root"); i >= 0 {
					t.Logf("%s: %s", who, strings.TrimSpace(l[i:]))
				}
			}
			return at, err
		}
	}
	// lateServer: the server is down at power-on (the port is closed) and
	// comes back 40 s after the prompt; the time is from its return to
	// systemd's first line in the real root.
	lateServer := func(who, log string) (time.Duration, error) {
		late := newLateServer(t, hostPort(srv.URL))
		defer late.Stop()
		m := boot(who, Options{Forward: map[string]string{ServerAddr: late.addr}}, log)
		defer m.Kill()
		if _, _, _, err := m.Expect(prompt, 0, 8*time.Minute); err != nil {
			return 0, err
		}
		time.Sleep(40 * time.Second)
		late.Start()
		back := m.Since()
		_, _, at, err := m.Expect(`systemd\[1\]: `, 0, 5*time.Minute)
		return at - back, err
	}
	withFwd := func() Options { return Options{Forward: fwd} }
	type row struct {
		name, timed string
		setup       func()
		who         []string
		measure     func(who, log string) (time.Duration, error)
	}
	rows := []row{
		{"tang binding, no network card", "power-on to prompt", func() {
			g.Host("", "luks", "bind", "-d", g.RootImg, "-k", g.PassphraseFile(), "-s", "1", "tang", tangConfig(ServerAddr, adv))
		}, []string{"clevis", "tether"}, toPrompt(func() Options { return Options{NIC: NICNone} })},
		{"tang binding, card with no DHCP answer", "power-on to prompt", nil,
			[]string{"clevis", "tether"}, toPrompt(func() Options { return Options{NIC: NICNoDHCP} })},
		{"tang binding, server's address blackholed", "power-on to prompt", nil,
			[]string{"clevis", "tether"}, toPrompt(func() Options { return Options{} })},
		{"tang binding, server down at power-on, back 40 s after the prompt", "server's return to root mounted, nothing typed", nil,
			[]string{"clevis", "tether"}, lateServer},
		{"no binding (passphrase only)", "power-on to prompt", func() {
			g.Host("", "luks", "unbind", "-d", g.RootImg, "-s", "1")
		}, []string{"stock", "clevis", "tether"}, toPrompt(withFwd)},
		{"tpm2 binding only, another machine's TPM", "power-on to prompt", func() {
			bindTPMOnHost(t, g)
		}, []string{"stock", "tether"}, toPrompt(func() Options {
			return Options{Forward: fwd, TPM: startSWTPM(t, t.TempDir())}
		})},
	}
	var table strings.Builder
	table.WriteString("| case | timed | stock initramfs | clevis-initramfs | tether | tether − stock |\n|---|---|---|---|---|---|\n")
	for ri, r := range rows {
		if r.setup != nil {
			r.setup()
		}
		times := map[string][]time.Duration{}
		failed := map[string]string{}
		for i := 0; i < runs; i++ {
			for _, who := range r.who {
				d, err := r.measure(who, fmt.Sprintf("fail-%d-%s-%d.log", ri, who, i))
				if err != nil {
					failed[who] = err.Error()
					t.Logf("%s, %s, run %d: %v", r.name, who, i+1, err)
					continue
				}
				times[who] = append(times[who], d)
				t.Logf("%s, %s, run %d: %.1f s", r.name, who, i+1, d.Seconds())
			}
		}
		cell := func(who string) string {
			switch {
			case len(times[who]) > 0:
				return fmt.Sprintf("%.1f s (%s)", median(times[who]).Seconds(), secs(times[who]))
			case failed[who] != "":
				return "none within the wait"
			}
			return "—"
		}
		diff := "—"
		if len(times["stock"]) > 0 && len(times["tether"]) > 0 {
			diff = fmt.Sprintf("%+.1f s", (median(times["tether"]) - median(times["stock"])).Round(100*time.Millisecond).Seconds())
		}
		fmt.Fprintf(&table, "| %s | %s | %s | %s | %s | %s |\n", r.name, r.timed, cell("stock"), cell("clevis"), cell("tether"), diff)
	}
	t.Logf("\n%s", table.String())
	if out := os.Getenv("TETHER_BENCH_FAILURE_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
