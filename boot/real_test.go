package boot_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/tang"
	"github.com/tether-nbde/tether/test/vm"
)

// newImage formats a small LUKS2 image with a PBKDF2 keyslot 0.
func newImage(t *testing.T, dir, name string) string {
	t.Helper()
	cs := testenv.RequireCmd(t, "cryptsetup")
	img := filepath.Join(dir, name)
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 20<<20)
	_, errOut, code := testenv.Run(t, []byte("recovery"), cs, "luksFormat", "--type", "luks2", "--batch-mode",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	if code != 0 {
		t.Fatalf("luksFormat: %s", errOut)
	}
	return img
}

func testKey(t *testing.T, img string, slot int, key []byte) {
	t.Helper()
	_, errOut, code := testenv.Run(t, key, "cryptsetup", "open", "--test-passphrase", "--key-slot", fmt.Sprint(slot), "--key-file", "-", img)
	if code != 0 {
		t.Errorf("the served key does not open keyslot %d of %s: %s", slot, img, errOut)
	}
}

// TestKeyServerRealBindings: keyd recovers keys from real clevis tokens
// through a real tether server; a volume bound to a server that is down is
// answered with EOF at the deadline; one without bindings at once.
func TestKeyServerRealBindings(t *testing.T) {
	dir := t.TempDir()
	srv := testenv.StartServer(t, "")
	adv := vm.FetchAdv(t, srv.URL)
	bin := testenv.TetherBin(t)
	live := newImage(t, dir, "live.img")
	vm.BindTang(t, bin, live, "recovery", srv.URL, adv, 1)
	dead := newImage(t, dir, "dead.img")
	vm.BindTang(t, bin, dead, "recovery", testenv.ClosedPort(t), adv, 1)
	plain := newImage(t, dir, "plain.img")
	tab := filepath.Join(dir, "crypttab")
	os.WriteFile(tab, []byte(fmt.Sprintf("live %s /run/tether/keyd.sock luks,_netdev\ndead %s /run/tether/keyd.sock luks,_netdev\nplain %s none luks\n", live, dead, plain)), 0o644)

	var logs testenv.SyncBuffer
	const deadline = 2 * time.Second
	sock := startKeyd(t, &boot.KeyServer{
		Crypttab: tab, Deadline: deadline,
		Recoverer: boot.TokenRecoverer{Options: pin.Options{Timeout: time.Second}},
		Log:       log.New(&logs, "", 0),
	})
	var wg sync.WaitGroup
	keys := map[string][]byte{}
	took := map[string]time.Duration{}
	var mu sync.Mutex
	for _, v := range []string{"live", "dead", "plain"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			k, err := askKey(t, sock, v)
			if err != nil {
				t.Errorf("%s: %v", v, err)
			}
			mu.Lock()
			keys[v], took[v] = k, time.Since(start)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("live %s, dead %s, plain %s", took["live"], took["dead"], took["plain"])
	testKey(t, live, 1, keys["live"])
	if took["live"] > deadline/2 {
		t.Errorf("live took %s", took["live"])
	}
	if len(keys["dead"]) != 0 || took["dead"] < deadline {
		t.Errorf("dead: %q after %s", keys["dead"], took["dead"])
	}
	if len(keys["plain"]) != 0 || took["plain"] > deadline/2 {
		t.Errorf("plain: %q after %s", keys["plain"], took["plain"])
	}
	l := logs.String()
	for _, want := range []string{`volume "live": key sent (token 0, keyslot 1)`, `volume "dead": no key sent after 2`, "connection refused", `volume "plain": no key sent`, "gave up at once"} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
}

// TestAgentAnswers: the password agent answers a systemd ask file for a
// bound volume with "+passphrase" on the request's datagram socket, and
// leaves an unbound volume's request alone.
func TestAgentAnswers(t *testing.T) {
	dir := t.TempDir()
	srv := testenv.StartServer(t, "")
	adv := vm.FetchAdv(t, srv.URL)
	live := newImage(t, dir, "live.img")
	vm.BindTang(t, testenv.TetherBin(t), live, "recovery", srv.URL, adv, 2)
	plain := newImage(t, dir, "plain.img")
	askDir := filepath.Join(dir, "ask-password")
	os.Mkdir(askDir, 0o755)
	ask := func(name, dev string) *net.UnixConn {
		sock := filepath.Join(dir, "sck."+name)
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		body := fmt.Sprintf("[Ask]\nPID=1\nSocket=%s\nAcceptCached=1\nEcho=0\nNotAfter=0\nMessage=Please enter passphrase for disk %s\nId=cryptsetup:%s\n", sock, name, dev)
		if err := os.WriteFile(filepath.Join(askDir, "ask."+name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return c
	}
	cl := ask("live", live)
	cp := ask("plain", plain)
	// A request that is not for a volume is someone else's.
	os.WriteFile(filepath.Join(askDir, "ask.other"), []byte("[Ask]\nSocket=/nonexistent\nId=sshd:x\n"), 0o644)
	var logs testenv.SyncBuffer
	a := &boot.Agent{Dir: askDir, Deadline: 3 * time.Second, Log: log.New(&logs, "", 0)}
	if err := a.Run(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	cl.SetReadDeadline(time.Now().Add(time.Second))
	n, err := cl.Read(buf)
	if err != nil {
		t.Fatalf("no answer for the bound volume: %v\n%s", err, logs.String())
	}
	if buf[0] != '+' {
		t.Fatalf("answer %q does not start with +", buf[:n])
	}
	testKey(t, live, 2, buf[1:n])
	cp.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := cp.Read(buf); err == nil {
		t.Errorf("the unbound volume got an answer %q", buf[:n])
	}
	if l := logs.String(); !strings.Contains(l, "cryptsetup:"+plain+": no answer sent") || !strings.Contains(l, "no clevis or tether bindings") {
		t.Errorf("log:\n%s", l)
	}
}

// TestAgentBehindPrompt: with Behind set, a request the server cannot
// answer within the deadline is not dropped. The reason is logged once,
// the agent keeps trying while the request stands, and it answers once the
// server is back. A request withdrawn meanwhile (the passphrase was typed)
// stops it.
func TestAgentBehindPrompt(t *testing.T) {
	dir := t.TempDir()
	srv := testenv.StartServer(t, "")
	adv := vm.FetchAdv(t, srv.URL)
	proxy := testenv.StartProxy(t, strings.TrimPrefix(srv.URL, "http://"))
	img := newImage(t, dir, "root.img")
	vm.BindTang(t, testenv.TetherBin(t), img, "recovery", proxy.URL, adv, 2)
	askDir := filepath.Join(dir, "ask-password")
	os.Mkdir(askDir, 0o755)
	ask := func(name string) (*net.UnixConn, string) {
		sock := filepath.Join(dir, "sck."+name)
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		file := filepath.Join(askDir, "ask."+name)
		body := fmt.Sprintf("[Ask]\nPID=1\nSocket=%s\nNotAfter=0\nId=cryptsetup:%s\n", sock, img)
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return c, file
	}
	run := func(logs *testenv.SyncBuffer) chan error {
		a := &boot.Agent{Dir: askDir, Deadline: time.Second, Behind: -1, Log: log.New(logs, "", 0),
			Recoverer: boot.TokenRecoverer{Options: pin.Options{Timeout: 300 * time.Millisecond}}}
		done := make(chan error, 1)
		go func() { done <- a.Run(context.Background(), true) }()
		return done
	}
	waitLog := func(logs *testenv.SyncBuffer, want string) {
		t.Helper()
		for i := 0; i < 100 && !strings.Contains(logs.String(), want); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("no %q in the agent's log:\n%s", want, logs.String())
		}
	}

	t.Run("server-returns", func(t *testing.T) {
		proxy.Silence()
		c, file := ask("back")
		var logs testenv.SyncBuffer
		done := run(&logs)
		waitLog(&logs, "still trying behind the prompt")
		if !strings.Contains(logs.String(), proxy.Addr+" did not answer") {
			t.Errorf("the log does not say why:\n%s", logs.String())
		}
		time.Sleep(2 * time.Second) // well past the deadline
		proxy.Resume()
		back := time.Now()
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer after the server came back: %v\n%s", err, logs.String())
		}
		t.Logf("answered %s after the server came back", time.Since(back).Round(100*time.Millisecond))
		testKey(t, img, 2, buf[1:n])
		os.Remove(file)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})

	// In an initramfs whose card has no address, the agent names the
	// network, not the server it could not reach.
	t.Run("no-network", func(t *testing.T) {
		proxy.Silence()
		defer proxy.Resume()
		sys := filepath.Join(dir, "sys")
		os.MkdirAll(filepath.Join(sys, "enp0s4"), 0o755)
		os.WriteFile(filepath.Join(sys, "enp0s4", "flags"), []byte("0x1003\n"), 0o644)
		os.WriteFile(filepath.Join(sys, "enp0s4", "carrier"), []byte("1\n"), 0o644)
		_, file := ask("nonet")
		var logs testenv.SyncBuffer
		a := &boot.Agent{Dir: askDir, Deadline: time.Second, Behind: -1, Log: log.New(&logs, "", 0),
			Recoverer: boot.TokenRecoverer{Options: pin.Options{Timeout: 300 * time.Millisecond}},
			Net:       &boot.EarlyNet{SysNet: sys, RunDir: t.TempDir(), HasAddr: func(string) bool { return false }}}
		done := make(chan error, 1)
		go func() { done <- a.Run(context.Background(), true) }()
		waitLog(&logs, "still trying behind the prompt")
		if !regexp.MustCompile(`not opened unattended within 1s: no DHCP lease on enp0s4 after 1\.?\d*s; still trying`).MatchString(logs.String()) {
			t.Errorf("the log does not name the network:\n%s", logs.String())
		}
		os.Remove(file)
		<-done
	})

	t.Run("typed-meanwhile", func(t *testing.T) {
		proxy.Silence()
		c, file := ask("typed")
		var logs testenv.SyncBuffer
		done := run(&logs)
		waitLog(&logs, "still trying behind the prompt")
		os.Remove(file) // what systemd does once the prompt is answered
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("the agent kept going after the request was withdrawn:\n%s", logs.String())
		}
		proxy.Resume()
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(make([]byte, 512)); err == nil {
			t.Errorf("an answer (%d bytes) was sent for a withdrawn request", n)
		}
		if !strings.Contains(logs.String(), "request withdrawn") {
			t.Errorf("log:\n%s", logs.String())
		}
	})
}
