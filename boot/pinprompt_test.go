package boot_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// pinAgent plays the person at the console: it answers the tether-pin
// questions systemd-ask-password posts in the real ask-password directory,
// in turn, with the answers given ("+PIN" types a PIN, "-" cancels), and
// keeps every question's message.
type pinAgent struct {
	mu       sync.Mutex
	answers  []string
	messages []string
	seen     map[string]bool
}

func startPINAgent(t *testing.T, device string, answers ...string) *pinAgent {
	t.Helper()
	if err := os.MkdirAll(boot.DefaultAskDir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := &pinAgent{answers: answers, seen: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			a.poll(t, device)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return a
}

func (a *pinAgent) poll(t *testing.T, device string) {
	files, _ := filepath.Glob(filepath.Join(boot.DefaultAskDir, "ask.*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || a.seen[f] {
			continue
		}
		q, err := boot.ParseAsk(strings.NewReader(string(data)))
		if err != nil || q.ID != "tether-pin:"+device {
			continue
		}
		a.mu.Lock()
		a.seen[f] = true
		a.messages = append(a.messages, q.Message)
		if len(a.answers) == 0 {
			a.mu.Unlock()
			continue // nobody types: the question stays up
		}
		answer := a.answers[0]
		a.answers = a.answers[1:]
		a.mu.Unlock()
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: q.Socket, Net: "unixgram"})
		if err != nil {
			t.Errorf("answer %s: %v", f, err)
			continue
		}
		c.Write([]byte(answer))
		c.Close()
	}
}

func (a *pinAgent) asked() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string{}, a.messages...)
}

// questionsUp lists the tether-pin questions still posted for device.
func questionsUp(device string) []string {
	var up []string
	files, _ := filepath.Glob(filepath.Join(boot.DefaultAskDir, "ask.*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if q, err := boot.ParseAsk(strings.NewReader(string(data))); err == nil && q.ID == "tether-pin:"+device {
			up = append(up, f)
		}
	}
	return up
}

// noQuestionsLeft fails unless device's questions are withdrawn within a
// few seconds (systemd-ask-password removes its file when it ends).
func noQuestionsLeft(t *testing.T, device string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		up := questionsUp(device)
		if len(up) == 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("questions still posted after the request ended: %v", up)
		}
	}
}

// TestPINPrompt: a volume whose only binding is a tpm2 binding made
// "with_pin" (a real swtpm, a real LUKS2 image) opens at boot once the
// PIN is typed into systemd-ask-password's question, which a boot service
// posts without blocking its retries; wrong PINs are asked again (3 at
// most), a cancelled question gives up at once, and a question nobody
// answers is withdrawn with its request.
func TestPINPrompt(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCmd(t, "systemd-ask-password")
	dir := t.TempDir()
	bin := testenv.TetherBin(t)
	pinFile := filepath.Join(dir, "pin")
	os.WriteFile(pinFile, []byte("2468\n"), 0o600)
	// bindPIN binds img to a fresh swtpm: each case has its own TPM (and
	// its own dictionary-attack counter).
	bindPIN := func(t *testing.T, img string) {
		t.Helper()
		t.Setenv("TETHER_TPM_TCTI", tpmtest.Start(t).TCTI)
		_, errOut, code := testenv.Run(t, []byte("recovery"), bin, "luks", "bind", "-d", img, "-k", "-", "--pin-file", pinFile,
			"tpm2", `{"pcr_ids":"","with_pin":true}`)
		if code != 0 {
			t.Fatalf("luks bind tpm2 with_pin: %s", errOut)
		}
	}
	// recoverKey is one request for img's key, as keyd makes it: retries
	// until the deadline, asking through prompt (nil: a new PINPrompt).
	recoverKey := func(t *testing.T, img string, within time.Duration, prompt *boot.PINPrompt) (boot.Key, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		if prompt == nil {
			prompt = &boot.PINPrompt{}
		}
		r := boot.TokenRecoverer{PINs: prompt}
		return boot.Retry(ctx, 100*time.Millisecond, 500*time.Millisecond, func(ctx context.Context) (boot.Key, error) {
			return r.Recover(ctx, img)
		})
	}

	t.Run("typed after a wrong one", func(t *testing.T) {
		img := newImage(t, dir, "wrong-then-right.img")
		bindPIN(t, img)
		agent := startPINAgent(t, img, "+1111", "+2468")
		key, err := recoverKey(t, img, time.Minute, nil)
		if err != nil {
			t.Fatalf("not recovered with the typed PIN: %v (asked: %q)", err, agent.asked())
		}
		testKey(t, img, key.Slot, key.Passphrase)
		asked := agent.asked()
		if len(asked) != 2 || !strings.Contains(asked[0], img) || !strings.Contains(asked[1], "Wrong PIN (2 tries left)") {
			t.Errorf("want a question naming %s, then one saying the PIN was wrong; got %q", img, asked)
		}
		noQuestionsLeft(t, img)
	})

	t.Run("three wrong", func(t *testing.T) {
		img := newImage(t, dir, "three-wrong.img")
		bindPIN(t, img)
		agent := startPINAgent(t, img, "+1", "+2", "+3", "+2468")
		start := time.Now()
		_, err := recoverKey(t, img, time.Minute, nil)
		if err == nil || !boot.IsPermanent(err) || !strings.Contains(err.Error(), "3 wrong PINs") {
			t.Fatalf("after 3 wrong PINs: want a permanent error naming them, got %v", err)
		}
		if n := len(agent.asked()); n != 3 {
			t.Errorf("asked %d times, want 3: %q", n, agent.asked())
		}
		t.Logf("gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
		noQuestionsLeft(t, img)
	})

	t.Run("cancelled", func(t *testing.T) {
		img := newImage(t, dir, "cancelled.img")
		bindPIN(t, img)
		agent := startPINAgent(t, img, "-", "+2468")
		prompt := &boot.PINPrompt{} // one keyd: both requests below ask through it
		start := time.Now()
		_, err := recoverKey(t, img, time.Minute, prompt)
		if err == nil || !boot.IsPermanent(err) || !strings.Contains(err.Error(), "cancelled") {
			t.Fatalf("a cancelled question: want a permanent error, got %v", err)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("gave up after %v: a cancel should end the wait at once", took)
		}
		noQuestionsLeft(t, img)
		// The cancel ended that request only: the next one (the unit
		// started again) asks again, and the PIN typed then opens it.
		key, err := recoverKey(t, img, time.Minute, prompt)
		if err != nil {
			t.Fatalf("the request after a cancelled one: %v (asked: %q)", err, agent.asked())
		}
		testKey(t, img, key.Slot, key.Passphrase)
		if n := len(agent.asked()); n != 2 {
			t.Errorf("asked %d times over the two requests, want 2: %q", n, agent.asked())
		}
	})

	t.Run("nobody types", func(t *testing.T) {
		img := newImage(t, dir, "unanswered.img")
		bindPIN(t, img)
		agent := startPINAgent(t, img)
		_, err := recoverKey(t, img, 3*time.Second, nil)
		if err == nil || boot.IsPermanent(err) || !errors.Is(err, boot.ErrPINPending) {
			t.Fatalf("unanswered until the deadline: want the pending PIN as the last error, got %v", err)
		}
		if n := len(agent.asked()); n != 1 {
			t.Errorf("the question was posted %d times during one request, want once", n)
		}
		noQuestionsLeft(t, img)
	})

	t.Run("tether keyd", func(t *testing.T) {
		// The keyd command as tether-keyd.service runs it: the PIN typed
		// into its question reaches systemd-cryptsetup as the key.
		img := newImage(t, dir, "keyd.img")
		bindPIN(t, img)
		tab := filepath.Join(dir, "crypttab")
		sock := filepath.Join(dir, "keyd.sock")
		os.WriteFile(tab, []byte("vault "+img+" "+sock+" luks,_netdev,nofail\n"), 0o644)
		var logs testenv.SyncBuffer
		cmd := exec.Command(bin, "keyd", "--socket", sock, "--crypttab", tab, "--deadline", "60s")
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("keyd did not listen on %s:\n%s", sock, logs.String())
			}
		}
		agent := startPINAgent(t, img, "+2468")
		key, err := askKey(t, sock, "vault")
		if err != nil || len(key) == 0 {
			t.Fatalf("no key from keyd (%v); asked %q; keyd log:\n%s", err, agent.asked(), logs.String())
		}
		testKey(t, img, 1, key) // keyslot 0 is the passphrase
		if asked := agent.asked(); len(asked) != 1 || !strings.Contains(asked[0], "for disk vault ("+img+")") {
			t.Errorf("the question should name the crypttab volume and its device: %q", asked)
		}
		noQuestionsLeft(t, img)
	})

	t.Run("opens by itself", func(t *testing.T) {
		// A binding without a PIN that opens: nobody is asked anything.
		img := newImage(t, dir, "no-question.img")
		bindPIN(t, img)
		_, errOut, code := testenv.Run(t, []byte("recovery"), bin, "luks", "bind", "-d", img, "-k", "-", "tpm2", `{"pcr_ids":""}`)
		if code != 0 {
			t.Fatalf("luks bind tpm2: %s", errOut)
		}
		agent := startPINAgent(t, img)
		key, err := recoverKey(t, img, time.Minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		testKey(t, img, key.Slot, key.Passphrase)
		time.Sleep(200 * time.Millisecond) // a question would have been seen by now
		if asked := agent.asked(); len(asked) != 0 {
			t.Errorf("a PIN was asked for although a binding without one opened the volume: %q", asked)
		}
	})
}
