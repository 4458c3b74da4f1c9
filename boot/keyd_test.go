package boot_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/testenv"
)

// askKey speaks the client side exactly as systemd-cryptsetup does
// (src/shared/... read_full_file with the socket flag): bind its end to the
// abstract name "@<16 hex>/cryptsetup/<volume>", connect, shutdown(SHUT_WR),
// read to EOF.
func askKey(t testing.TB, sock, volume string) ([]byte, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var r [8]byte
	rand.Read(r[:])
	// x/sys/unix maps a leading '@' to the abstract namespace (a NUL byte).
	local := fmt.Sprintf("@%016x/cryptsetup/%s", binary.BigEndian.Uint64(r[:]), volume)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: local}); err != nil {
		return nil, fmt.Errorf("bind %q: %w", local, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		return nil, err
	}
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			out = append(out, buf[:n]...)
		}
		if n == 0 && err == nil {
			return out, nil // EOF
		}
		if err != nil && err != unix.EINTR {
			return out, err
		}
	}
}

// fakeRecoverer answers per device: a key, a transient error (server
// down), or a permanent one (not bound).
type fakeRecoverer map[string]string

func (f fakeRecoverer) Recover(ctx context.Context, dev string) (boot.Key, error) {
	switch v := f[filepath.Base(dev)]; v {
	case "down":
		return boot.Key{}, errors.New("tang(http://10.9.9.9): connection refused")
	case "unbound":
		return boot.Key{}, &boot.PermanentError{Err: fmt.Errorf("%s: %w", dev, boot.ErrNotBound)}
	default:
		return boot.Key{Passphrase: []byte(v), Slot: 1, Token: 0}, nil
	}
}

func startKeyd(t *testing.T, s *boot.KeyServer) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "keyd.sock")
	l, err := boot.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

func writeCrypttab(t *testing.T, dir string, vols map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# a comment\n\n")
	for name := range vols {
		dev := filepath.Join(dir, name+".img")
		os.WriteFile(dev, nil, 0o600)
		fmt.Fprintf(&b, "%s %s /run/tether/keyd.sock luks,_netdev\n", name, dev)
	}
	tab := filepath.Join(dir, "crypttab")
	if err := os.WriteFile(tab, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestKeyServerProtocol: several volumes asking at once on one socket;
// the one whose server is down gets EOF without a key after the deadline
// while the others get theirs at once; an unbound volume and a volume not
// in crypttab get EOF at once; each failure is one log line saying why.
func TestKeyServerProtocol(t *testing.T) {
	dir := t.TempDir()
	fake := fakeRecoverer{"a.img": "key-of-a", "b.img": "key-of-b", "down.img": "down", "plain.img": "unbound"}
	tab := writeCrypttab(t, dir, map[string]string{"a": "", "b": "", "down": "", "plain": ""})
	var logs testenv.SyncBuffer
	const deadline = 1500 * time.Millisecond
	sock := startKeyd(t, &boot.KeyServer{
		Crypttab: tab, Recoverer: fake, Deadline: deadline,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Log: log.New(&logs, "", 0),
	})
	type answer struct {
		key  string
		err  error
		took time.Duration
	}
	vols := []string{"a", "b", "down", "plain", "stranger", "a", "b"}
	answers := make([]answer, len(vols))
	var wg sync.WaitGroup
	for i, v := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			k, err := askKey(t, sock, v)
			answers[i] = answer{string(k), err, time.Since(start)}
		}()
	}
	wg.Wait()
	for i, v := range vols {
		a := answers[i]
		if a.err != nil {
			t.Errorf("%s: %v", v, a.err)
			continue
		}
		switch v {
		case "a", "b":
			if a.key != "key-of-"+v {
				t.Errorf("%s: got key %q", v, a.key)
			}
			if a.took > deadline/2 {
				t.Errorf("%s: took %s: held up by the dead server?", v, a.took)
			}
		case "down":
			if a.key != "" {
				t.Errorf("down: got a key %q", a.key)
			}
			if a.took < deadline || a.took > deadline+time.Second {
				t.Errorf("down: EOF after %s, want just after the %s deadline", a.took, deadline)
			}
		case "plain", "stranger":
			if a.key != "" || a.took > deadline/2 {
				t.Errorf("%s: got %q after %s, want EOF at once", v, a.key, a.took)
			}
		}
	}
	l := logs.String()
	for _, want := range []string{
		`volume "down": no key sent after 1.`, // 1.5 s and what a loaded machine adds
		"gave up because the deadline passed; last error: tang(http://10.9.9.9): connection refused",
		`volume "plain": no key sent`, "no clevis or tether bindings",
		`volume "stranger": no key sent`, "is not in " + tab,
		`volume "a": key sent (token 0, keyslot 1)`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
	if n := strings.Count(l, `volume "down"`); n != 1 {
		t.Errorf("want one log line for the dead volume, got %d:\n%s", n, l)
	}
}

// TestKeyServerRefusesOthers: a peer that is not systemd-cryptsetup (no
// abstract name) gets nothing.
func TestKeyServerRefusesOthers(t *testing.T) {
	dir := t.TempDir()
	tab := writeCrypttab(t, dir, map[string]string{"a": ""})
	var logs testenv.SyncBuffer
	sock := startKeyd(t, &boot.KeyServer{Crypttab: tab, Recoverer: fakeRecoverer{"a.img": "k"}, Log: log.New(&logs, "", 0)})
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The *os.File owns fd from here on and alone closes it: closing the
	// number by hand as well left the File's finalizer to close it again
	// later, whatever it then was (another test's open directory: "unlinkat:
	// bad file descriptor" in CI).
	f := os.NewFile(uintptr(fd), "c")
	defer f.Close()
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	if len(data) != 0 {
		t.Fatalf("an anonymous peer got %q", data)
	}
	if !strings.Contains(logs.String(), "is not systemd-cryptsetup") {
		t.Errorf("log: %s", logs.String())
	}
}

func TestVolumeFromPeer(t *testing.T) {
	for in, want := range map[string]string{
		"@0123456789abcdef/cryptsetup/data":     "data",
		"@0123456789ABCDEF/cryptsetup/luks-x-y": "luks-x-y",
		"@123abc/cryptsetup/data":               "data", // %lx drops leading zeros
		"@/cryptsetup/data":                     "",
		"@0123456789abcdef0/cryptsetup/data":    "",
		"/run/x":                                "",
		"@0123456789abcdef/veritysetup/data":    "",
	} {
		got, err := boot.VolumeFromPeer(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("VolumeFromPeer(%q) = %q, %v", in, got, err)
		}
	}
}

func TestParseCrypttab(t *testing.T) {
	ents, err := boot.ParseCrypttab(bytes.NewBufferString("# c\n\ndata UUID=1234 /run/tether/keyd.sock luks,_netdev,discard\nswap /dev/sdb2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 || ents[0].Name != "data" || ents[0].Device != "UUID=1234" || ents[1].KeyFile != "none" {
		t.Fatalf("%+v", ents)
	}
	if _, ok := ents[0].Option("_netdev"); !ok {
		t.Error("_netdev not found")
	}
	if _, err := boot.ParseCrypttab(bytes.NewBufferString("lonely\n")); err == nil {
		t.Error("a line with one field parsed")
	}
}

// TestKeyServerStopsWhenAskerLeaves: if systemd-cryptsetup goes away
// (its unit stopped, it timed out), keyd stops retrying at once and says so.
func TestKeyServerStopsWhenAskerLeaves(t *testing.T) {
	dir := t.TempDir()
	tab := writeCrypttab(t, dir, map[string]string{"down": ""})
	var logs testenv.SyncBuffer
	sock := startKeyd(t, &boot.KeyServer{
		Crypttab: tab, Recoverer: fakeRecoverer{"down.img": "down"}, Deadline: time.Minute,
		MinBackoff: 50 * time.Millisecond, Log: log.New(&logs, "", 0),
	})
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	unix.Bind(fd, &unix.SockaddrUnix{Name: "@00000000000000ff/cryptsetup/down"})
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	unix.Shutdown(fd, unix.SHUT_WR)
	time.Sleep(600 * time.Millisecond) // still waiting: half-closed is normal
	if strings.Contains(logs.String(), "down") {
		t.Fatalf("gave up on a half-closed connection: %s", logs.String())
	}
	unix.Close(fd)
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(logs.String(), "gave up because systemd-cryptsetup closed the connection") {
		if time.Now().After(deadline) {
			t.Fatalf("keyd kept waiting for a peer that left; log: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKeyServerMissingContainerFile: a crypttab container file that is
// not there (or that keyd cannot see: ProtectHome= once hid /home from
// it) is reported at once, saying the file does not exist, instead of
// being retried until the deadline as "no such device". A missing /dev
// node may still appear and is waited for, and the log says what for.
func TestKeyServerMissingContainerFile(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home", "haadmin")
	os.MkdirAll(home, 0o700)
	img := filepath.Join(home, "cloud_container.img")
	tab := filepath.Join(dir, "crypttab")
	os.WriteFile(tab, []byte("cloud "+img+" /run/tether/keyd.sock luks,_netdev\n"+
		"late /dev/tether-test-not-yet /run/tether/keyd.sock luks,_netdev\n"), 0o644)
	var logs testenv.SyncBuffer
	const deadline = 20 * time.Second
	s := &boot.KeyServer{Crypttab: tab, Deadline: deadline, Log: log.New(&logs, "", 0)}
	sock := startKeyd(t, s)
	start := time.Now()
	key, err := askKey(t, sock, "cloud")
	took := time.Since(start)
	if err != nil || len(key) != 0 {
		t.Fatalf("got key %q, err %v; want EOF without a key", key, err)
	}
	if took > 10*time.Second {
		t.Errorf("took %v: a missing container file must be reported at once, not waited for (deadline %v)", took, deadline)
	}
	if l := logs.String(); !strings.Contains(l, "gave up at once") || !strings.Contains(l, "container file "+img+" does not exist") {
		t.Errorf("log does not say plainly that the file is missing:\n%s", l)
	}

	short := &boot.KeyServer{Crypttab: tab, Deadline: 1500 * time.Millisecond, Log: log.New(&logs, "", 0)}
	sock = startKeyd(t, short)
	start = time.Now()
	if key, err := askKey(t, sock, "late"); err != nil || len(key) != 0 {
		t.Fatalf("late: got key %q, err %v", key, err)
	}
	if took := time.Since(start); took < short.Deadline {
		t.Errorf("a missing /dev node was given up after %v, before the deadline %v", took, short.Deadline)
	}
	if l := logs.String(); !strings.Contains(l, "device /dev/tether-test-not-yet does not exist (yet)") || !strings.Contains(l, "deadline passed") {
		t.Errorf("log for the missing /dev node:\n%s", l)
	}
}
