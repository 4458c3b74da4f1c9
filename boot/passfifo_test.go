package boot_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-nbde/tether/boot"
)

// askpassHelper does what Debian's /lib/cryptsetup/askpass does with its
// FIFO: open it non-blocking for reading (so the process holds it open at
// once, before any writer), wait for data, read until the writer closes,
// and print what came as the passphrase.
func askpassHelper(fifo string) int {
	fd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return 3
	}
	var got []byte
	buf := make([]byte, 512)
	for {
		unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		n, err := unix.Read(fd, buf)
		switch {
		case n > 0:
			got = append(got, buf[:n]...)
			continue
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case n == 0 && len(got) == 0:
			// Linux reports EOF before any writer came; askpass polls on.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		break
	}
	os.Stdout.Write(got)
	return 0
}

// fileOut is what an askpass stand-in printed.
type fileOut struct{ path string }

func (o *fileOut) String() string { b, _ := os.ReadFile(o.path); return string(b) }
func (o *fileOut) Bytes() []byte  { return []byte(o.String()) }
func (o *fileOut) Len() int       { return len(o.String()) }

// startAsker starts an askpass stand-in for volume name on a FIFO under
// dir/cryptsetup/passfifo, as cryptroot would (CRYPTTAB_* in its
// environment), and waits until it holds the FIFO.
func startAsker(t *testing.T, dir, name, source string) (*exec.Cmd, *fileOut, string) {
	t.Helper()
	fifo := filepath.Join(dir, "cryptsetup", "passfifo")
	os.MkdirAll(filepath.Dir(fifo), 0o700)
	if err := unix.Mkfifo(fifo, 0o600); err != nil && !errors.Is(err, unix.EEXIST) {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TETHER_TEST_ASKPASS="+fifo, "CRYPTTAB_NAME="+name, "CRYPTTAB_SOURCE="+source, "CRYPTTAB_TRIED=0")
	// A file, not a pipe: Wait then never waits on a copy.
	f, err := os.Create(filepath.Join(dir, "askpass-"+name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := &fileOut{path: f.Name()}
	cmd.Stdout = f
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 200; i++ {
		if _, ok := boot.FindAsker("", name, ""); ok {
			return cmd, out, fifo
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the askpass stand-in for %s never showed up in /proc", name)
	return nil, nil, ""
}

// TestFindAndFeedAsker: the askpass process of a volume is found by its
// environment and the FIFO it holds, the key written is exactly what it
// reads, and a FIFO nobody reads any more gives ErrNoReader instead of a
// writer stuck forever.
func TestFindAndFeedAsker(t *testing.T) {
	dir := t.TempDir()
	cmd, out, _ := startAsker(t, dir, "root", "/dev/vdb")
	// Another process with another FIFO open is not an asker.
	other := filepath.Join(dir, "other-fifo")
	unix.Mkfifo(other, 0o600)
	ofd, _ := unix.Open(other, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	defer unix.Close(ofd)

	if _, ok := boot.FindAsker("", "data", ""); ok {
		t.Fatal("found an asker for a volume nobody asks for")
	}
	a, ok := boot.FindAsker("", "other-name", "/dev/vdb")
	if !ok || a.PID != cmd.Process.Pid || a.Name != "root" || a.Tried != "0" {
		t.Fatalf("asker by device: %+v %v (want pid %d)", a, ok, cmd.Process.Pid)
	}
	n := 0
	for _, x := range boot.FindAskers("") {
		if x.PID == os.Getpid() {
			t.Errorf("the test process itself (holding another FIFO) was taken for an asker")
		}
		n++
	}
	if n == 0 {
		t.Fatal("FindAskers found nothing")
	}
	key := []byte("c2VjcmV0LWtleS13aXRoLWEtbmV3bGluZQo\nand more")
	if err := a.Feed(key); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), key) {
		t.Fatalf("askpass read %q, want %q", out.Bytes(), key)
	}
	if err := a.Feed(key); !errors.Is(err, boot.ErrNoReader) {
		t.Fatalf("feeding a prompt that ended: %v, want ErrNoReader", err)
	}
}

// flakyRecoverer fails until its time comes, then gives key.
type flakyRecoverer struct {
	mu    sync.Mutex
	calls int
	okAt  int
	key   string
	err   error
}

func (f *flakyRecoverer) Recover(ctx context.Context, dev string) (boot.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.okAt > 0 && f.calls >= f.okAt {
		return boot.Key{Passphrase: []byte(f.key), Slot: 1}, nil
	}
	return boot.Key{}, f.err
}

// TestRetryFeedsThePrompt: behind the prompt, a key that comes late goes
// to the asker of its volume (not another one), once; the retry ends when
// the mapping appears.
func TestRetryFeedsThePrompt(t *testing.T) {
	dir := t.TempDir()
	mapper := filepath.Join(dir, "mapper")
	os.MkdirAll(mapper, 0o755)
	other, otherOut, _ := startAsker(t, filepath.Join(dir, "o"), "data", "/dev/vdc")
	asker, out, _ := startAsker(t, dir, "root", "/dev/vdb")
	var console bytes.Buffer
	u := &boot.EarlyUnlock{
		Config:    boot.InitramfsConfig{Deadline: time.Second, Retry: -1},
		Recoverer: &flakyRecoverer{okAt: 3, key: "the-key", err: errors.New("server 10.0.2.100:7500 did not answer")},
		Console:   &boot.Console{Out: &console},
		Mapper:    mapper,
	}
	done := make(chan struct{})
	go func() {
		u.Retry(context.Background(), []boot.Pending{{Name: "root", Device: "/dev/vdb"}})
		close(done)
	}()
	if err := asker.Wait(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "the-key" {
		t.Fatalf("the prompt of root read %q", out.String())
	}
	// cryptroot opens the volume with it.
	os.WriteFile(filepath.Join(mapper, "root"), nil, 0o644)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the retry did not end once root was open")
	}
	if otherOut.Len() != 0 || other.ProcessState != nil {
		t.Errorf("the prompt of another volume was fed: %q", otherOut.String())
	}
	if !strings.Contains(console.String(), "root unlocked by its binding behind the prompt") {
		t.Errorf("console:\n%s", console.String())
	}
}

// TestRetryStopsWhenTyped: the passphrase typed at the prompt opens the
// volume; the retry notices, says so and ends without feeding anything.
func TestRetryStopsWhenTyped(t *testing.T) {
	dir := t.TempDir()
	mapper := filepath.Join(dir, "mapper")
	os.MkdirAll(mapper, 0o755)
	var console bytes.Buffer
	rec := &flakyRecoverer{err: errors.New("no answer")}
	u := &boot.EarlyUnlock{
		Config:    boot.InitramfsConfig{Deadline: time.Second, Retry: -1},
		Recoverer: rec,
		Console:   &boot.Console{Out: &console},
		Mapper:    mapper,
	}
	done := startRetry(u)
	time.Sleep(1500 * time.Millisecond)
	os.WriteFile(filepath.Join(mapper, "root"), nil, 0o644)
	waitRetry(t, done, 3*time.Second, "the retry went on after the passphrase opened root")
	if !strings.Contains(console.String(), "root was opened at the prompt") {
		t.Errorf("console:\n%s", console.String())
	}
}

// TestRetryPermanent: a refusal that cannot change ends the retries and
// says so.
func TestRetryPermanent(t *testing.T) {
	var console bytes.Buffer
	u := &boot.EarlyUnlock{
		Config:    boot.InitramfsConfig{Deadline: time.Second, Retry: -1},
		Recoverer: &flakyRecoverer{err: &boot.PermanentError{Err: errors.New("device revoked")}},
		Console:   &boot.Console{Out: &console},
		Mapper:    t.TempDir(),
	}
	waitRetry(t, startRetry(u), 5*time.Second, "the retry went on after a permanent refusal")
	if !strings.Contains(console.String(), "refused for good: device revoked") {
		t.Errorf("console:\n%s", console.String())
	}
}

// TestRetryChecksTheKey: a key that does not open its keyslot never
// reaches the prompt (cryptroot would count it as one of the person's
// tries); the retry says so and ends.
func TestRetryChecksTheKey(t *testing.T) {
	dir := t.TempDir()
	_, out, fifo := startAsker(t, dir, "root", "/dev/vdb")
	var console bytes.Buffer
	u := &boot.EarlyUnlock{
		Config:    boot.InitramfsConfig{Deadline: time.Second, Retry: -1},
		Recoverer: &flakyRecoverer{okAt: 1, key: "stale-key"},
		Check: func(ctx context.Context, dev string, k boot.Key) error {
			return errors.New("no key available with this passphrase")
		},
		Console: &boot.Console{Out: &console},
		Mapper:  t.TempDir(),
	}
	waitRetry(t, startRetry(u), 5*time.Second, "the retry went on after a key that does not open the volume")
	if !strings.Contains(console.String(), "does not open keyslot 1") {
		t.Errorf("console:\n%s", console.String())
	}
	// The prompt is still waiting and got nothing.
	if a, ok := boot.FindAsker("", "root", ""); !ok || a.FIFO == "" || out.Len() != 0 {
		t.Errorf("the prompt was fed or ended: %q (fifo %s)", out.String(), fifo)
	}
}

// startRetry runs u's retry for the volume root (/dev/vdb) and returns a
// channel closed when it ends.
func startRetry(u *boot.EarlyUnlock) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		u.Retry(context.Background(), []boot.Pending{{Name: "root", Device: "/dev/vdb"}})
		close(done)
	}()
	return done
}

// waitRetry fails the test with why unless the retry ends within d.
func waitRetry(t *testing.T, done <-chan struct{}, d time.Duration, why string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal(why)
	}
}
