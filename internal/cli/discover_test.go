package cli_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/server/announce"
	"github.com/tether-nbde/tether/tang"
)

// testLAN is a network of the test's own: two network namespaces joined
// by a veth pair, the key server's (10.213.0.1) and the client's
// (10.213.0.2). Multicast DNS sent in them never reaches this machine's
// own network.
type testLAN struct {
	t        *testing.T
	srv, cli string // namespace names
	srvIP    string
}

func newTestLAN(t *testing.T) *testLAN {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCmd(t, "ip")
	id := make([]byte, 3)
	rand.Read(id)
	x := hex.EncodeToString(id)
	n := &testLAN{t: t, srv: "tether-s-" + x, cli: "tether-c-" + x, srvIP: "10.213.0.1"}
	// Registered first, so it runs last: after every process in them
	// has been stopped. Deleting a namespace removes its veth end.
	t.Cleanup(func() {
		for _, ns := range []string{n.srv, n.cli} {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
				t.Errorf("ip netns del %s: %v %s", ns, err, out)
			}
		}
	})
	for _, args := range [][]string{
		{"netns", "add", n.srv},
		{"netns", "add", n.cli},
		{"link", "add", "tds" + x, "type", "veth", "peer", "name", "tdc" + x},
		{"link", "set", "tds" + x, "netns", n.srv},
		{"link", "set", "tdc" + x, "netns", n.cli},
		{"-n", n.srv, "addr", "add", n.srvIP + "/24", "dev", "tds" + x},
		{"-n", n.cli, "addr", "add", "10.213.0.2/24", "dev", "tdc" + x},
		{"-n", n.srv, "link", "set", "lo", "up"},
		{"-n", n.cli, "link", "set", "lo", "up"},
		{"-n", n.srv, "link", "set", "tds" + x, "up"},
		{"-n", n.cli, "link", "set", "tdc" + x, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	return n
}

// command runs name in the namespace ns.
func (n *testLAN) command(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// lanServer is a real tether-server running in the server's namespace.
type lanServer struct {
	url, data string
	logs      *testenv.SyncBuffer
}

// startServer runs tether-server in the server's namespace on port and
// waits until it listens and has decided whether to announce.
func (n *testLAN) startServer(t *testing.T, listen string, extra ...string) *lanServer {
	t.Helper()
	bin := filepath.Join(filepath.Dir(testenv.TetherBin(t)), "tether-server")
	s := &lanServer{data: t.TempDir(), logs: &testenv.SyncBuffer{}}
	_, port, _ := net.SplitHostPort(listen)
	s.url = "http://" + n.srvIP + ":" + port
	cmd := n.command(n.srv, bin, append([]string{"server", "--listen", listen, "--data", s.data}, extra...)...)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("tether-server %s log:\n%s", listen, s.logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	// Both "announcing on the local network" and "not announcing ...".
	for !strings.Contains(s.logs.String(), "announcing on the") {
		if time.Now().After(deadline) {
			t.Fatalf("tether-server did not start within 20s:\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// signing returns the thumbprints of the server's advertised signing keys.
func (s *lanServer) signing(t *testing.T) []string {
	t.Helper()
	keys, err := tang.LoadKeyDir(filepath.Join(s.data, "tang"))
	if err != nil {
		t.Fatal(err)
	}
	var tps []string
	for _, k := range keys {
		if k.Signing() && !k.Hidden {
			tp, _ := k.JWK.Thumbprint("S256")
			tps = append(tps, tp)
		}
	}
	return tps
}

type discoveredServer struct {
	Name        string   `json:"name"`
	URL         string   `json:"url"`
	Addresses   []string `json:"addresses"`
	Port        int      `json:"port"`
	Server      string   `json:"server"`
	Thumbprints []string `json:"thumbprints"`
	Check       string   `json:"check"`
	Error       string   `json:"error"`
}

// discover runs tether discover --json in the client's namespace.
func (n *testLAN) discover(t *testing.T, args ...string) ([]discoveredServer, string, int) {
	t.Helper()
	cmd := n.command(n.cli, testenv.TetherBin(t), append([]string{"discover", "--json", "--timeout", "2s"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var found []discoveredServer
	if err := json.Unmarshal(out, &found); err != nil {
		t.Fatalf("tether discover --json printed %q: %v (stderr %s)", out, err, stderr.String())
	}
	return found, stderr.String(), code
}

// TestDiscover: a tether server on a network of the test's own is found
// by tether discover from another host of that network, with the
// thumbprint of the key that signs its advertisement, also after a
// rotation; with --announce=false, or listening on loopback, it is not.
func TestDiscover(t *testing.T) {
	n := newTestLAN(t)
	srv := n.startServer(t, ":7500")
	want := srv.signing(t)
	if len(want) != 1 {
		t.Fatalf("a fresh server has %d signing keys", len(want))
	}

	found, stderr, code := n.discover(t)
	if code != 0 || len(found) != 1 {
		t.Fatalf("tether discover: exit %d, %d servers %+v\n%s", code, len(found), found, stderr)
	}
	f := found[0]
	if f.URL != srv.url || f.Port != 7500 || f.Check != "ok" || strings.Join(f.Thumbprints, ",") != want[0] {
		t.Errorf("found %+v, want %s with thumbprint %s, check ok", f, srv.url, want[0])
	}
	if !strings.HasPrefix(f.Server, "tether ") {
		t.Errorf("the server announces itself as %q", f.Server)
	}
	// The table for people says the same.
	out, err := n.command(n.cli, testenv.TetherBin(t), "discover", "--timeout", "2s").Output()
	if err != nil || !strings.Contains(string(out), srv.url) || !strings.Contains(string(out), want[0]) {
		t.Errorf("tether discover: %v\n%s", err, out)
	}

	t.Run("rotation", func(t *testing.T) {
		bin := filepath.Join(filepath.Dir(testenv.TetherBin(t)), "tether-server")
		if out, err := exec.Command(bin, "server", "keys", "rotate", "--data", srv.data).CombinedOutput(); err != nil {
			t.Fatalf("keys rotate: %v %s", err, out)
		}
		now := srv.signing(t)
		if len(now) != 1 || now[0] == want[0] {
			t.Fatalf("rotation left the signing keys %v", now)
		}
		time.Sleep(50 * time.Millisecond) // the server notices within 10 ms
		found, stderr, code := n.discover(t)
		if code != 0 || len(found) != 1 || found[0].Check != "ok" || strings.Join(found[0].Thumbprints, ",") != now[0] {
			t.Errorf("after a rotation: exit %d, found %+v, want thumbprint %s\n%s", code, found, now[0], stderr)
		}
	})

	t.Run("announce=false", func(t *testing.T) {
		off := n.startServer(t, ":7501", "--announce=false")
		// It serves: the client reaches its advertisement.
		if out, err := n.command(n.cli, testenv.TetherBin(t), "adv", off.url).CombinedOutput(); err != nil {
			t.Fatalf("tether adv %s: %v %s", off.url, err, out)
		}
		found, _, code := n.discover(t)
		for _, f := range found {
			if f.Port == 7501 {
				t.Errorf("a server started with --announce=false was found: %+v", f)
			}
		}
		if code != 0 || len(found) != 1 {
			t.Errorf("exit %d, found %+v: want only the announcing server", code, found)
		}
	})

	t.Run("two on one host", func(t *testing.T) {
		second := n.startServer(t, ":7503")
		found, stderr, code := n.discover(t)
		ports := map[int]discoveredServer{}
		for _, f := range found {
			ports[f.Port] = f
		}
		f := ports[7503]
		if code != 0 || len(found) != 2 || ports[7500].Check != "ok" || f.Check != "ok" ||
			f.URL != second.url || !strings.HasSuffix(f.Name, "-7503") || strings.Join(f.Thumbprints, ",") != second.signing(t)[0] {
			t.Errorf("exit %d, found %+v: want both servers, the second named HOST-7503\n%s", code, found, stderr)
		}
	})

	t.Run("loopback", func(t *testing.T) {
		lo := n.startServer(t, "127.0.0.1:7502")
		if !strings.Contains(lo.logs.String(), "not announcing on the network: listening on loopback only") {
			t.Errorf("a server on loopback does not say it does not announce:\n%s", lo.logs.String())
		}
	})
}

// TestDiscoverNothing: when no server announces, tether discover says so
// and exits 1, with an empty JSON array for scripts.
func TestDiscoverNothing(t *testing.T) {
	n := newTestLAN(t)
	n.startServer(t, ":7500", "--announce=false")
	found, stderr, code := n.discover(t)
	if code != 1 || len(found) != 0 || !strings.Contains(stderr, "no key server answered on the network within 2s") ||
		!strings.Contains(stderr, "tether: hint: ") {
		t.Errorf("exit %d, found %+v, stderr %q", code, found, stderr)
	}
}

// inNetns runs f on a thread that is in the namespace ns: sockets made
// there belong to it.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", ns, err)
	}
	f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so it ends with this goroutine
		// instead of serving others from the wrong namespace.
		t.Fatalf("setns back: %v", err)
	}
	runtime.UnlockOSThread()
}

// TestDiscoverSpoofRefused: something on the network announces the real
// server's thumbprint at the address of a server with other keys (as an
// attacker would, to be chosen instead). tether discover marks it
// MISMATCH, and tether setup names it and does not offer it, while it
// offers the real server.
func TestDiscoverSpoofRefused(t *testing.T) {
	n := newTestLAN(t)
	impostor := n.startServer(t, ":7500", "--announce=false")
	real := n.startServer(t, ":7501")
	realThp := real.signing(t)[0]
	var spoof *announce.Announcer
	inNetns(t, n.srv, func() {
		var err error
		spoof, err = announce.Start(announce.Config{
			Addr:        &net.TCPAddr{IP: net.ParseIP(n.srvIP), Port: 7500},
			Instance:    "spoof",
			Thumbprints: func() []string { return []string{realThp} },
		})
		if err != nil {
			t.Fatalf("start the spoofing announcement: %v", err)
		}
	})
	t.Cleanup(func() { spoof.Close() })

	found, stderr, code := n.discover(t)
	checks := map[string]string{}
	for _, f := range found {
		checks[f.Name] = f.Check
		if f.Name == "spoof" && (f.URL != impostor.url || !strings.Contains(f.Error, realThp) || !strings.Contains(f.Error, impostor.signing(t)[0])) {
			t.Errorf("the spoofed server: %+v", f)
		}
	}
	if code != 0 || len(found) != 2 || checks["spoof"] != "MISMATCH" {
		t.Fatalf("exit %d, found %+v\n%s", code, found, stderr)
	}
	if !strings.Contains(stderr, `tether: warning: "spoof" at `+impostor.url+": it announces the key "+realThp) {
		t.Errorf("no warning names the spoofed server: %s", stderr)
	}

	// tether setup at a terminal, in the client's namespace.
	dir := t.TempDir()
	cmd := fmt.Sprintf("ip netns exec %s %s setup --timeout 3s", n.cli, testenv.TetherBin(t))
	term := startTmux(t, os.Environ(), cmd)
	term.waitFor("Choose 1 or 2: ", 1)
	term.answer("1")
	term.waitFor("Path of the new container file", 1)
	term.answer(filepath.Join(dir, "vault.img"))
	term.waitFor("Size", 1)
	term.answer("64M")
	term.waitFor("Choose one, or two", 1)
	term.answer("1")
	s := term.waitFor("Choose 1 to 2: ", 1)
	for _, want := range []string{
		`Not offered: "spoof" at ` + impostor.url + ": it announces the key " + realThp,
		"Something on your network announces a server that is not what it claims: do not use it.",
		"1) ",
		" at " + real.url + " (key " + realThp + ")",
		"2) type an address",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the choice of servers lacks %q", want)
		}
	}
	if strings.Contains(s, impostor.url+" (key") {
		t.Errorf("the spoofed server is offered as a choice")
	}
	term.answer("1")
	s = term.waitFor("Is it the same? [y/N]: ", 1)
	if !strings.Contains(s, "Asking "+real.url+" for its identity") || !strings.Contains(s, "    "+realThp) {
		t.Errorf("choosing the server found does not show its identity to confirm")
	}
	term.answer("n")
	term.waitFor("Choose 1 to 2: ", 2)
}
