package boot_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/test/vm"
)

// checkOpener stands in for dm-crypt (the host has no device-mapper): it
// checks each key with cryptsetup --test-passphrase and records the open.
type checkOpener struct {
	t      *testing.T
	mu     sync.Mutex
	opened map[string]string
	mapper string
}

func (o *checkOpener) Open(ctx context.Context, dev, name string, key boot.Key) error {
	testKey(o.t, dev, key.Slot, key.Passphrase)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.opened[name] = dev
	return os.WriteFile(filepath.Join(o.mapper, name), nil, 0o644)
}

// TestEarlyUnlockFirstPhase: with real LUKS2 images and a real server, the
// first phase opens what answers, leaves a volume whose server is down to
// the prompt (with one line saying why, within the deadline), never starts
// the network for a volume whose bindings do not need it, and skips an
// unbound volume quietly.
func TestEarlyUnlockFirstPhase(t *testing.T) {
	dir := t.TempDir()
	srv := testenv.StartServer(t, "")
	adv := vm.FetchAdv(t, srv.URL)
	bin := testenv.TetherBin(t)
	live := newImage(t, dir, "live.img")
	vm.BindTang(t, bin, live, "recovery", srv.URL, adv, 1)
	dead := newImage(t, dir, "dead.img")
	closed := testenv.ClosedPort(t)
	vm.BindTang(t, bin, dead, "recovery", closed, adv, 1)
	plain := newImage(t, dir, "plain.img")
	tab, err := boot.ParseCrypttab(strings.NewReader(fmt.Sprintf("live %s none luks\ndead %s none luks\nplain %s none luks\n", live, dead, plain)))
	if err != nil {
		t.Fatal(err)
	}
	mapper := filepath.Join(dir, "mapper")
	os.MkdirAll(mapper, 0o755)
	var console bytes.Buffer
	// The network "setup" records that it ran; a lease is there already.
	started := filepath.Join(dir, "net-started")
	n := fakeNet(t, map[string]string{"ens2": "1"}, map[string]string{"ens2": ipconfigConf})
	r := boot.TokenRecoverer{Options: pin.Options{Timeout: time.Second}}
	u := &boot.EarlyUnlock{
		Crypttab: tab, Config: boot.InitramfsConfig{Deadline: 3 * time.Second, Retry: -1},
		Recoverer: r, Bindings: r, Opener: &checkOpener{t: t, opened: map[string]string{}, mapper: mapper},
		Console: &boot.Console{Out: &console}, Net: n, Mapper: mapper,
		ResolvConf: filepath.Join(dir, "resolv.conf"),
		Network: &boot.NetStarter{Dir: filepath.Join(dir, "run-tether"), Command: func() *exec.Cmd {
			return exec.Command("touch", started)
		}},
	}
	start := time.Now()
	pending := u.Run(context.Background())
	took := time.Since(start)
	if took > 5*time.Second {
		t.Errorf("the first phase took %s with a 3s deadline", took)
	}
	if len(pending) != 1 || pending[0].Name != "dead" || !pending[0].NeedsNet {
		t.Fatalf("pending: %+v", pending)
	}
	if _, err := os.Stat(filepath.Join(mapper, "live")); err != nil {
		t.Errorf("live was not opened:\n%s", console.String())
	}
	out := console.String()
	if !strings.Contains(out, "tether: dead ("+dead+") not unlocked within 3s: "+strings.TrimPrefix(closed, "http://")+" refused the connection") {
		t.Errorf("console:\n%s", out)
	}
	if strings.Contains(out, "plain") {
		t.Errorf("the unbound volume got a line:\n%s", out)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(started); err != nil {
		t.Errorf("the network was not started for tang bindings")
	}
	if rc, _ := os.ReadFile(filepath.Join(dir, "resolv.conf")); !strings.Contains(string(rc), "nameserver 10.0.2.3") {
		t.Errorf("resolv.conf: %q", rc)
	}

	// The plain volume alone: no network.
	os.Remove(started)
	u.Crypttab = tab[2:]
	u.Network = &boot.NetStarter{Dir: filepath.Join(dir, "run-tether2"), Command: func() *exec.Cmd { return exec.Command("touch", started) }}
	if p := u.Run(context.Background()); len(p) != 0 {
		t.Errorf("pending for an unbound volume: %+v", p)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(started); err == nil {
		t.Errorf("the network was started for a volume without bindings")
	}
}
