package luks_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/luks"
)

// TestEncryptKill runs tether luks encrypt on a 48 MiB image holding a
// 16 MiB ext4 filesystem and kills it with SIGKILL at a random moment of
// its run: tether alone (cryptsetup, if running, carries on as an orphan)
// or its whole process group (tether and cryptsetup at once, as a power
// cut would). Then the same command runs again and must finish: the
// decrypted data is the original filesystem byte for byte, the volume
// unlocks with its binding, and no temporary key is left in a keyslot, the
// header or the state directory. TETHER_KILL_TRIALS sets the number of
// trials (default 40, 10 with -short).
func TestEncryptKill(t *testing.T) {
	g := newRig(t)
	trials := 40
	if testing.Short() {
		trials = 10
	}
	if s := os.Getenv("TETHER_KILL_TRIALS"); s != "" {
		trials, _ = strconv.Atoi(s)
	}
	// The delays come from a logged seed (TETHER_KILL_SEED repeats them;
	// the moments they hit still vary with the machine's speed).
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TETHER_KILL_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("TETHER_KILL_SEED=%d", seed)
	tmpl, fs, _ := plainFS(t, "48M", "16M")
	fsSum := sha256.Sum256(fs)
	dir := t.TempDir()

	// Calibrate: how long a whole run takes here.
	img := filepath.Join(dir, "calib.img")
	copyFile(t, tmpl, img)
	start := time.Now()
	if res := g.tether(nil, nil, "luks", "encrypt", "-d", img, "--no-recovery", "-y", "tang", g.tangCfg()); res.code != 0 {
		t.Fatalf("calibration run: %s", res.stderr)
	}
	whole := time.Since(start)
	t.Logf("a whole run takes %v", whole)

	modes := [][]string{{"--no-recovery"}, {"--recovery-file", ""}, nil}
	states := map[string]int{}
	finished, failed := 0, 0
	for i := 0; i < trials; i++ {
		img := filepath.Join(dir, fmt.Sprintf("t%02d.img", i))
		copyFile(t, tmpl, img)
		rec := ""
		args := []string{"luks", "encrypt", "-d", img}
		mode := modes[i%len(modes)]
		if len(mode) == 2 {
			rec = filepath.Join(dir, fmt.Sprintf("t%02d.key", i))
			mode = []string{"--recovery-file", rec}
		}
		args = append(append(args, mode...), "-y", "tang", g.tangCfg())
		group := i%2 == 1
		delay := time.Duration(rng.Int64N(int64(whole)))

		cmd := exec.Command(g.bin, args...)
		cmd.Env = append(os.Environ(), "TETHER_LUKS_STATE_DIR="+g.state)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var out1, err1 bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out1, &err1
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		if group {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		} else {
			cmd.Process.Kill()
		}
		cmd.Wait()
		// The temporary key, if the header has it by now: afterwards it
		// must open nothing.
		var temp []byte
		state := "no LUKS header"
		if h, err := luks.ReadHeaderFile(img); err == nil {
			state = "finishing"
			if k, ok := strings.CutPrefix(h.Subsystem, "tether-encrypt:"); ok {
				temp = []byte(k)
			}
			switch {
			case finalStep(h):
				state = "cryptsetup's final step"
			case h.Reencrypting():
				state = "encrypting"
			case temp == nil:
				state = "done"
			}
		}
		if left, _ := filepath.Glob(filepath.Join(g.state, "encrypt-*.d", "LUKS2-temp-*")); len(left) > 0 && state == "no LUKS header" {
			state = "no LUKS header, cryptsetup's temporary header left"
		}
		who := "tether"
		if group {
			who = "group"
		}
		states[state]++

		// Rerun the same command (it waits for an orphaned cryptsetup).
		res := g.tether(nil, nil, args...)
		if res.code != 0 {
			failed++
			t.Errorf("trial %d (%s killed after %v, %s): rerun: exit %d\n%s", i, who, delay, state, res.code, res.stderr)
			continue
		}
		if msg := checkEncrypted(g, img, fsSum, len(fs), temp, mode, rec, out1.String()+res.stdout); msg != "" {
			failed++
			t.Errorf("trial %d (%s killed after %v, %s): %s\nfirst run:\n%s\nrerun:\n%s", i, who, delay, state, msg, err1.String(), res.stderr)
			continue
		}
		finished++
		how := "finished the remaining steps"
		switch {
		case strings.Contains(res.stderr, "completing the header"):
			how = "completed cryptsetup's final step"
		case strings.Contains(res.stderr, "resuming"):
			how = "resumed the encryption"
		case strings.Contains(res.stderr, "in place"):
			how = "started over"
		case strings.Contains(res.stderr, "nothing to do"):
			how = "found it done"
		}
		t.Logf("trial %d: %s killed after %v (%s): rerun %s, data intact", i, who, delay.Round(time.Millisecond), state, how)
	}
	var names []string
	for s := range states {
		names = append(names, s)
	}
	sort.Strings(names)
	var sum []string
	for _, s := range names {
		sum = append(sum, fmt.Sprintf("%s: %d", s, states[s]))
	}
	t.Logf("%d trials: %d finished with the data intact, %d failed; killed in: %s", trials, finished, failed, strings.Join(sum, ", "))
	if left, _ := os.ReadDir(g.state); true {
		for _, e := range left {
			if !strings.HasPrefix(e.Name(), "lock-") {
				t.Errorf("left in the state directory: %s", e.Name())
			}
		}
	}
}

// checkEncrypted checks a finished tether luks encrypt: the header, the
// keyslots, the data, and that no temporary key is left. stdout is what
// both runs printed (the recovery passphrase, if printed).
func checkEncrypted(g *rig, img string, fsSum [32]byte, n int, temp []byte, mode []string, recFile, stdout string) string {
	h, err := luks.ReadHeaderFile(img)
	if err != nil {
		return err.Error()
	}
	if h.Reencrypting() || h.Subsystem != "" {
		return fmt.Sprintf("unfinished: reencrypting %v, subsystem %q", h.Reencrypting(), h.Subsystem)
	}
	js := string(run(g.t, nil, "cryptsetup", "luksDump", "--dump-json-metadata", img))
	if strings.Contains(js, "tether-encrypt") || strings.Contains(js, "tether-txn") {
		return "the metadata still names tether-encrypt or a txn:\n" + js
	}
	bs := luks.Bindings(h)
	if len(bs) != 1 || len(luks.Leftovers(h)) != 0 {
		return fmt.Sprintf("bindings %v leftovers %v", bs, luks.Leftovers(h))
	}
	for _, s := range h.Slots() {
		if temp != nil && g.opens(img, s, temp) {
			return fmt.Sprintf("the temporary key still opens keyslot %d", s)
		}
	}
	var recovery []byte
	switch {
	case len(mode) == 0:
		// Printed on stdout: the last passphrase printed is the one.
		recovery = []byte(stdout[max(0, len(stdout)-39):])
	case mode[0] == "--recovery-file":
		b, err := os.ReadFile(recFile)
		if err != nil {
			return err.Error()
		}
		if fi, _ := os.Stat(recFile); fi.Mode().Perm() != 0o600 {
			return fmt.Sprintf("recovery file mode %v", fi.Mode())
		}
		recovery = b
	}
	wantSlots := 2
	if recovery == nil {
		wantSlots = 1
	}
	if len(h.Slots()) != wantSlots {
		return fmt.Sprintf("keyslots %v, want %d", h.Slots(), wantSlots)
	}
	slot, key := bs[0].Slot, []byte(g.ok(nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(bs[0].Slot)))
	if recovery != nil {
		rs := -1
		for _, s := range h.Slots() {
			if s != slot && g.opens(img, s, recovery) {
				rs = s
			}
		}
		if rs < 0 {
			return fmt.Sprintf("the recovery passphrase %q opens no keyslot", recovery)
		}
		slot, key = rs, recovery
	}
	if sha256.Sum256(decryptData(g.t, img, slot, key, n)) != fsSum {
		return "the decrypted data differs from the original filesystem"
	}
	if res := g.tether(nil, nil, "luks", "unlock", "-d", img, "--test"); res.code != 0 {
		return "unlock --test: " + res.stderr
	}
	if left, _ := filepath.Glob(filepath.Join(g.state, "*encrypt*")); len(left) != 0 {
		return fmt.Sprintf("left in the state directory: %v", left)
	}
	if recFile != "" {
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(recFile), ".*tmp*")); len(left) != 0 {
			return fmt.Sprintf("temporary recovery files left: %v", left)
		}
	}
	return ""
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
