package luks_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/luks"
)

// The tests in this file run the real tether binary against image files
// formatted by the real cryptsetup, with a stock tangd and stock clevis as
// peers. Images use PBKDF2 at 1000 iterations for their passphrase slot
// to stay fast (argon2 costs seconds per slot).

const testPass = "correct horse"

type rig struct {
	t     *testing.T
	bin   string
	state string
	tang  *testenv.Tangd
	r     *luks.Runner
}

func newRig(t *testing.T) *rig {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCmd(t, "cryptsetup")
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, bin: testenv.TetherBin(t), state: state, tang: testenv.StartTangd(t), r: &luks.Runner{}}
}

// image makes a LUKS2 image file with testPass in keyslot 0.
func (g *rig) image(size string, extra ...string) string {
	g.t.Helper()
	p := filepath.Join(g.t.TempDir(), "disk.img")
	run(g.t, nil, "truncate", "-s", size, p)
	args := append([]string{"luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", "-"}, extra...)
	run(g.t, []byte(testPass), "cryptsetup", append(args, p)...)
	return p
}

func run(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	out, errb, code := testenv.Run(t, stdin, name, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, errb)
	}
	return out
}

type result struct {
	stdout, stderr string
	code           int
	killed         bool
}

// tether runs the tether binary with extra environment variables.
func (g *rig) tether(stdin []byte, env []string, args ...string) result {
	g.t.Helper()
	cmd := exec.Command(g.bin, args...)
	cmd.Env = append(append(os.Environ(), "TETHER_LUKS_STATE_DIR="+g.state), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	res := result{stdout: o.String(), stderr: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			res.killed = true
		}
	} else if err != nil {
		g.t.Fatal(err)
	}
	return res
}

// ok runs tether and fails the test unless it succeeds.
func (g *rig) ok(stdin []byte, args ...string) string {
	g.t.Helper()
	res := g.tether(stdin, nil, args...)
	if res.code != 0 {
		g.t.Fatalf("tether %s: exit %d\n%s", strings.Join(args, " "), res.code, res.stderr)
	}
	return res.stdout
}

func (g *rig) tangCfg() string { return fmt.Sprintf(`{"url":%q}`, g.tang.URL) }

func (g *rig) bind(img string) int {
	g.t.Helper()
	g.ok([]byte(testPass+"\n"), "luks", "bind", "-d", img, "-k", "-", "-y", "tang", g.tangCfg())
	return g.newestBinding(img)
}

func (g *rig) newestBinding(img string) int {
	g.t.Helper()
	h := header(g.t, img)
	bs := luks.Bindings(h)
	if len(bs) == 0 {
		g.t.Fatal("no binding")
	}
	return bs[len(bs)-1].Slot
}

func header(t testing.TB, img string) *luks.Header {
	t.Helper()
	h, err := luks.ReadHeaderFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// opens reports whether key opens keyslot slot.
func (g *rig) opens(img string, slot int, key []byte) bool {
	return g.r.TestKey(context.Background(), img, slot, key) == nil
}

// checkClean checks the invariants after any (completed or repaired)
// change: the passphrase slot still opens, every other keyslot has a
// binding whose passphrase opens it, no txn or dead tokens are left, and
// no header backup lingers.
func (g *rig) checkClean(img string) {
	g.t.Helper()
	if !g.opens(img, 0, []byte(testPass)) {
		g.t.Fatal("the original passphrase no longer opens keyslot 0")
	}
	h := header(g.t, img)
	if lo := luks.Leftovers(h); len(lo) != 0 {
		g.t.Fatalf("leftovers: %+v", lo)
	}
	bound := map[int]bool{}
	for _, b := range luks.Bindings(h) {
		bound[b.Slot] = true
		pass := g.ok(nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(b.Slot))
		if !g.opens(img, b.Slot, []byte(pass)) {
			g.t.Fatalf("the passphrase of binding %d does not open its keyslot", b.Slot)
		}
	}
	for _, s := range h.Slots() {
		if s != 0 && !bound[s] {
			g.t.Fatalf("orphan keyslot %d (no token)", s)
		}
	}
	if len(h.TokenIDs()) != len(bound) {
		g.t.Fatalf("tokens %v for bound slots %v", h.TokenIDs(), bound)
	}
	if left, _ := filepath.Glob(filepath.Join(g.state, "*.header")); len(left) != 0 {
		g.t.Fatalf("header backups left: %v", left)
	}
}

func TestBindInteropWithClevis(t *testing.T) {
	g := newRig(t)
	testenv.RequireCmd(t, "clevis")
	img := g.image("20M")

	// tether binds; cryptsetup opens the slot with what tether luks pass
	// prints; clevis reads the binding.
	slot := g.bind(img)
	pass := g.ok(nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(slot))
	if len(pass) != 54 {
		t.Errorf("passphrase %q: want the base64url of 40 bytes (54 chars)", pass)
	}
	run(t, []byte(pass), "cryptsetup", "open", "--test-passphrase", "--key-slot", strconv.Itoa(slot), "--key-file", "-", img)
	cpass := run(t, nil, "clevis", "luks", "pass", "-d", img, "-s", strconv.Itoa(slot))
	if string(cpass) != pass {
		t.Errorf("clevis luks pass = %q, tether luks pass = %q", cpass, pass)
	}
	tok, _ := header(t, img).Token(header(t, img).TokensFor(slot)[0])
	if tok.Type != "clevis" {
		t.Errorf("token type %q, want clevis", tok.Type)
	}
	if k, _ := header(t, img).Keyslot(slot); k.KDF.Type != "pbkdf2" || k.KDF.Iterations != 1000 || k.KDF.Hash != "sha256" {
		t.Errorf("new keyslot kdf %+v, want pbkdf2/1000/sha256", k.KDF)
	}

	// clevis binds; tether reads it.
	run(t, []byte(testPass), "clevis", "luks", "bind", "-y", "-d", img, "-k", "-", "-s", "5", "tang", g.tangCfg())
	tp := g.ok(nil, "luks", "pass", "-d", img, "-s", "5")
	if !g.opens(img, 5, []byte(tp)) {
		t.Fatal("tether luks pass of a clevis binding does not open its keyslot")
	}
	list := g.ok(nil, "luks", "list", "-d", img)
	if !strings.Contains(list, strconv.Itoa(slot)+": tang '") || !strings.Contains(list, "5: tang '") || !strings.Contains(list, g.tang.URL) {
		t.Errorf("list:\n%s", list)
	}
	res := g.tether(nil, nil, "luks", "unlock", "-d", img, "--test")
	if res.code != 0 || !strings.Contains(res.stderr, "unlocks") {
		t.Fatalf("unlock --test: %d %s", res.code, res.stderr)
	}
	g.checkClean(img)

	// unbind both: nothing left but the passphrase slot.
	g.ok(nil, "luks", "unbind", "-d", img, "-s", strconv.Itoa(slot))
	g.ok(nil, "luks", "unbind", "-d", img, "-s", "5")
	h := header(t, img)
	if len(h.Slots()) != 1 || len(h.TokenIDs()) != 0 {
		t.Fatalf("after unbind: slots %v tokens %v", h.Slots(), h.TokenIDs())
	}
	g.checkClean(img)
}

func TestRegenAfterRotation(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	slot := g.bind(img)
	sssCfg := fmt.Sprintf(`{"t":1,"pins":{"tang":[{"url":%q},{"url":%q}]}}`, g.tang.URL, g.tang.URL+"/")
	g.ok([]byte(testPass), "luks", "bind", "-d", img, "-k", "-", "-y", "sss", sssCfg)
	sssSlot := g.newestBinding(img)
	if out := g.ok(nil, "luks", "report", "-d", img); strings.Count(out, ": ok") != 2 {
		t.Fatalf("report before rotation: %s", out)
	}
	// Rotate the server's keys as the tang docs say: hide the old ones,
	// make new ones.
	old, _ := filepath.Glob(filepath.Join(g.tang.KeyDir, "*.jwk"))
	for _, f := range old {
		os.Rename(f, filepath.Join(g.tang.KeyDir, "."+filepath.Base(f)))
	}
	run(t, nil, "/usr/libexec/tangd-keygen", g.tang.KeyDir)
	res := g.tether(nil, nil, "luks", "report", "-d", img)
	if res.code != 1 || !strings.Contains(res.stdout, "rotated") || !strings.Contains(res.stderr, "regen") {
		t.Fatalf("report after rotation: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if strings.Count(res.stdout, "rotated") != 2 {
		t.Fatalf("report after rotation, want both bindings flagged:\n%s", res.stdout)
	}
	// No -y: the new advertisement is trusted through the old key, for
	// tang and for each tang child of sss.
	g.ok(nil, "luks", "regen", "-d", img, "-s", strconv.Itoa(slot))
	g.ok(nil, "luks", "regen", "-d", img, "-s", strconv.Itoa(sssSlot))
	h := header(t, img)
	if slotsNow := h.Slots(); len(slotsNow) != 3 || len(h.TokenIDs()) != 2 {
		t.Fatalf("after regen: slots %v tokens %v", slotsNow, h.TokenIDs())
	}
	if out := g.ok(nil, "luks", "report", "-d", img); strings.Count(out, ": ok") != 2 {
		t.Fatalf("report after regen: %s", out)
	}
	if list := g.ok(nil, "luks", "list", "-d", img); !strings.Contains(list, "sss '{\"pins\":{\"tang\":[") {
		t.Errorf("list after regen:\n%s", list)
	}
	g.checkClean(img)
}

// TestCrashAnywhere kills tether (SIGKILL, by itself at a named step) at
// every step of bind, regen and unbind. Afterwards the volume must still
// open with its passphrase, list must not be confused, and the next
// command must leave a clean volume.
func TestCrashAnywhere(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	steps := []struct{ op, step string }{
		{"bind", "bind:backup"}, {"bind", "bind:txn"}, {"bind", "bind:addkey"}, {"bind", "bind:verified"},
		{"bind", "bind:token"}, {"bind", "bind:done"},
		{"regen", "regen:backup"}, {"regen", "regen:txn"}, {"regen", "regen:addkey"}, {"regen", "regen:verified"},
		{"regen", "regen:token"}, {"regen", "regen:killold"}, {"regen", "regen:removeold"}, {"regen", "regen:done"},
		{"unbind", "unbind:txn"}, {"unbind", "unbind:killslot"}, {"unbind", "unbind:token"}, {"unbind", "unbind:done"},
	}
	for _, s := range steps {
		t.Run(s.step, func(t *testing.T) {
			g.t = t
			var bound int
			if s.op != "bind" {
				bound = g.bind(img)
			}
			crash := []string{"TETHER_TEST_CRASH_AT=" + s.step}
			var res result
			switch s.op {
			case "bind":
				res = g.tether([]byte(testPass), crash, "luks", "bind", "-d", img, "-k", "-", "-y", "tang", g.tangCfg())
			case "regen":
				res = g.tether(nil, crash, "luks", "regen", "-d", img, "-s", strconv.Itoa(bound), "-y")
			case "unbind":
				res = g.tether(nil, crash, "luks", "unbind", "-d", img, "-s", strconv.Itoa(bound))
			}
			if !res.killed {
				t.Fatalf("tether was not killed at %s: exit %d\n%s", s.step, res.code, res.stderr)
			}
			if !g.opens(img, 0, []byte(testPass)) {
				t.Fatal("after the crash the passphrase no longer opens the volume")
			}
			// Every binding that list shows must work right away.
			list := g.tether(nil, nil, "luks", "list", "-d", img)
			if list.code != 0 {
				t.Fatalf("list after crash: %s", list.stderr)
			}
			for _, b := range luks.Bindings(header(t, img)) {
				pass := g.ok(nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(b.Slot))
				if !g.opens(img, b.Slot, []byte(pass)) {
					t.Fatalf("binding %d listed after the crash does not open", b.Slot)
				}
			}
			g.ok(nil, "luks", "repair", "-d", img)
			g.checkClean(img)
			// Back to the passphrase slot alone for the next step.
			for _, b := range luks.Bindings(header(t, img)) {
				g.ok(nil, "luks", "unbind", "-d", img, "-s", strconv.Itoa(b.Slot))
			}
			if h := header(t, img); len(h.Slots()) != 1 || len(h.TokenIDs()) != 0 {
				t.Fatalf("reset: slots %v tokens %v", h.Slots(), h.TokenIDs())
			}
		})
	}
}

// TestCrashRegenFromOtherKeyslot: regen of a binding that no longer
// decrypts (its server silent) takes an existing passphrase, which opens
// another keyslot; killed at every step, the volume still opens and
// repair leaves exactly one binding: the old one (rolled back) or the new
// one (the old keyslot finished off), never both.
func TestCrashRegenFromOtherKeyslot(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	px := testenv.StartProxy(t, strings.TrimPrefix(g.tang.URL, "http://"))
	for _, step := range []string{"regen:backup", "regen:txn", "regen:addkey", "regen:verified", "regen:token",
		"regen:killold", "regen:removeold", "regen:done"} {
		t.Run(step, func(t *testing.T) {
			g.t = t
			px.Resume()
			g.ok([]byte(testPass), "luks", "bind", "-d", img, "-k", "-", "-y", "tang", fmt.Sprintf(`{"url":%q}`, px.URL))
			old := g.newestBinding(img)
			px.Silence()
			res := g.tether([]byte(testPass), []string{"TETHER_TEST_CRASH_AT=" + step}, "luks", "regen", "-d", img,
				"-s", strconv.Itoa(old), "-k", "-", "--timeout", "1s", "-y", "tang", g.tangCfg())
			if !res.killed {
				t.Fatalf("tether was not killed at %s: exit %d\n%s", step, res.code, res.stderr)
			}
			if !g.opens(img, 0, []byte(testPass)) {
				t.Fatal("after the crash the passphrase no longer opens the volume")
			}
			g.ok(nil, "luks", "repair", "-d", img)
			if bs := luks.Bindings(header(t, img)); len(bs) != 1 {
				t.Fatalf("after repair: %d bindings, want the old or the new one", len(bs))
			}
			px.Resume()
			g.checkClean(img)
			for _, b := range luks.Bindings(header(t, img)) {
				g.ok(nil, "luks", "unbind", "-d", img, "-s", strconv.Itoa(b.Slot))
			}
		})
	}
}

func fileSum(t testing.TB, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestBadInputsChangeNothing checks that each bad input gives a clear
// error and leaves the image byte for byte as it was.
func TestBadInputsChangeNothing(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	bound := g.bind(img)

	plain := filepath.Join(t.TempDir(), "plain.img")
	run(t, nil, "truncate", "-s", "20M", plain)
	luks1 := filepath.Join(t.TempDir(), "luks1.img")
	run(t, nil, "truncate", "-s", "20M", luks1)
	run(t, []byte(testPass), "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", "-", luks1)

	// A volume whose metadata area is almost full.
	full := g.image("20M")
	pad := strings.Repeat("x", 5500)
	for i := 0; i < 2; i++ {
		tok := fmt.Sprintf(`{"type":"example-padding","keyslots":[],"pad":%q}`, pad)
		run(t, []byte(tok), "cryptsetup", "token", "import", "--json-file", "-", full)
	}

	cases := []struct {
		name  string
		dev   string
		stdin string
		args  []string
		want  string
	}{
		{"wrong passphrase", img, "wrong\n", []string{"bind", "-k", "-", "-y", "tang", g.tangCfg()}, "does not open any keyslot"},
		{"wrong passphrase for slot", img, "wrong\n", []string{"bind", "--key-slot", "0", "-k", "-", "-y", "tang", g.tangCfg()}, "keyslot 0 rejects it"},
		{"not LUKS", plain, testPass, []string{"bind", "-k", "-", "-y", "tang", g.tangCfg()}, "not a LUKS device"},
		{"not LUKS list", plain, "", []string{"list"}, "not a LUKS device"},
		{"LUKS1", luks1, testPass, []string{"bind", "-k", "-", "-y", "tang", g.tangCfg()}, "supports LUKS2 only"},
		{"LUKS1 unlock", luks1, "", []string{"unlock", "--test"}, "supports LUKS2 only"},
		{"full token area", full, testPass, []string{"bind", "-k", "-", "-y", "tang", g.tangCfg()}, "metadata area is full"},
		{"missing slot unbind", img, "", []string{"unbind", "-s", "7"}, "keyslot 7 is not in use"},
		{"missing slot pass", img, "", []string{"pass", "-s", "7"}, "keyslot 7 is not in use"},
		{"unbound slot unbind", img, "", []string{"unbind", "-s", "0"}, "keyslot 0 has no clevis or tether binding"},
		{"missing key slot", img, testPass, []string{"bind", "--key-slot", "9", "-k", "-", "-y", "tang", g.tangCfg()}, "keyslot 9 is not in use"},
		{"slot in use", img, testPass, []string{"bind", "-s", strconv.Itoa(bound), "-k", "-", "-y", "tang", g.tangCfg()}, "already in use"},
		{"slot out of range", img, testPass, []string{"bind", "-s", "40", "-k", "-", "-y", "tang", g.tangCfg()}, "keyslots are 0 to 31"},
		{"untrusted server", img, testPass, []string{"bind", "-k", "-", "tang", g.tangCfg()}, "not trusted"},
		{"server down", img, testPass, []string{"bind", "-k", "-", "-y", "tang", `{"url":"` + testenv.ClosedPort(t) + `"}`}, "tang"},
		{"bad config", img, testPass, []string{"bind", "-k", "-", "tang", "{url"}, "not valid JSON"},
		{"unknown pin", img, testPass, []string{"bind", "-k", "-", "nope", "{}"}, "unknown pin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := fileSum(t, c.dev)
			args := append([]string{"luks", c.args[0], "-d", c.dev}, c.args[1:]...)
			res := g.tether([]byte(c.stdin), nil, args...)
			if res.code == 0 || !strings.Contains(res.stderr, c.want) || !strings.Contains(res.stderr, "tether: error: ") {
				t.Errorf("exit %d, stderr:\n%s\nwant an error containing %q", res.code, res.stderr, c.want)
			}
			if fileSum(t, c.dev) != before {
				t.Error("the image changed")
			}
		})
	}
	// The last keyslot is never removed, even when it is bound.
	only := g.image("20M")
	slot := g.bind(only)
	run(t, nil, "cryptsetup", "luksKillSlot", "--batch-mode", only, "0")
	before := fileSum(t, only)
	res := g.tether(nil, nil, "luks", "unbind", "-d", only, "-s", strconv.Itoa(slot))
	if res.code == 0 || !strings.Contains(res.stderr, "last keyslot") || fileSum(t, only) != before {
		t.Errorf("unbind of the last keyslot: exit %d %s", res.code, res.stderr)
	}
}

// TestUnlockSkipsArgon2 binds a volume whose passphrase slot 0 is an
// expensive argon2 slot: unlock must go straight to the bound slot.
func TestUnlockSkipsArgon2(t *testing.T) {
	g := newRig(t)
	p := filepath.Join(t.TempDir(), "argon.img")
	run(t, nil, "truncate", "-s", "20M", p)
	argon := []string{"--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "262144", "--pbkdf-parallel", "1"}
	run(t, []byte(testPass), "cryptsetup", append([]string{"luksFormat", "--batch-mode", "--type", "luks2", "--key-file", "-"}, append(argon, p)...)...)
	start := time.Now()
	if !g.opens(p, 0, []byte(testPass)) {
		t.Fatal("passphrase does not open slot 0")
	}
	argonCost := time.Since(start)
	g.ok([]byte(testPass), "luks", "bind", "-d", p, "--key-slot", "0", "-k", "-", "-y", "tang", g.tangCfg())
	start = time.Now()
	res := g.tether(nil, nil, "luks", "unlock", "-d", p, "--test")
	took := time.Since(start)
	if res.code != 0 {
		t.Fatalf("unlock: %s", res.stderr)
	}
	t.Logf("argon2 slot costs %v; unlock took %v", argonCost, took)
	if took >= argonCost {
		t.Errorf("unlock took %v, as long as one argon2 slot (%v): it tried the argon2 slot", took, argonCost)
	}
	// For contrast: cryptsetup without --key-slot pays for slot 0 first.
	slot := g.newestBinding(p)
	pass := g.ok(nil, "luks", "pass", "-d", p, "-s", strconv.Itoa(slot))
	start = time.Now()
	run(t, []byte(pass), "cryptsetup", "open", "--test-passphrase", "--key-file", "-", p)
	t.Logf("cryptsetup without --key-slot: %v", time.Since(start))
}

// TestUnlockParallel: a silent server in one binding costs nothing when
// another binding answers, and alone it costs one timeout, not minutes.
func TestUnlockParallel(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	px := testenv.StartProxy(t, strings.TrimPrefix(g.tang.URL, "http://"))
	g.ok([]byte(testPass), "luks", "bind", "-d", img, "-k", "-", "-y", "tang", fmt.Sprintf(`{"url":%q}`, px.URL))
	g.bind(img)
	px.Silence()
	start := time.Now()
	res := g.tether(nil, nil, "luks", "unlock", "-d", img, "--test", "--timeout", "5s")
	if took := time.Since(start); res.code != 0 || took > 3*time.Second {
		t.Fatalf("unlock with one silent server: exit %d in %v: %s", res.code, took, res.stderr)
	}
	// Only the silent binding left: a clear error after one timeout.
	g.ok(nil, "luks", "unbind", "-d", img, "-s", strconv.Itoa(g.newestBinding(img)))
	start = time.Now()
	res = g.tether(nil, nil, "luks", "unlock", "-d", img, "--test", "--timeout", "1s")
	if took := time.Since(start); res.code != 1 || took > 4*time.Second || !strings.Contains(res.stderr, "no binding unlocked") {
		t.Fatalf("unlock with a silent server only: exit %d in %v: %s", res.code, took, res.stderr)
	}
}

func TestListJSONUnchanged(t *testing.T) {
	// list and report never write: the header stays byte for byte.
	g := newRig(t)
	img := g.image("20M")
	g.bind(img)
	before := fileSum(t, img)
	g.ok(nil, "luks", "list", "-d", img)
	g.ok(nil, "luks", "report", "-d", img)
	if fileSum(t, img) != before {
		t.Fatal("list or report changed the image")
	}
	var x map[string]any
	_ = json.Unmarshal(header(t, img).JSON, &x)
}

// TestCryptsetupKilled kills cryptsetup itself, together with tether, at
// several moments while it changes the header (a wrapper started in place
// of cryptsetup kills both after a delay). cryptsetup writes its two
// header copies in turn, so the header is always the old one or the new
// one; tether's repair then has to make sense of it.
func TestCryptsetupKilled(t *testing.T) {
	g := newRig(t)
	real := testenv.RequireCmd(t, "cryptsetup")
	wrapper := filepath.Join(t.TempDir(), "cryptsetup")
	script := `#!/bin/sh
if [ "$1" = "$KILL_OP" ]; then
	` + real + ` "$@" 0<&0 &
	child=$!
	sleep "$KILL_DELAY"
	kill -9 $child $PPID
	exit 137
fi
exec ` + real + ` "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	img := g.image("20M")
	for _, c := range []struct{ cmd, op string }{
		{"bind", "luksAddKey"}, {"bind", "token"}, {"unbind", "luksKillSlot"}, {"regen", "luksAddKey"}, {"regen", "luksKillSlot"},
	} {
		for _, delay := range []string{"0", "0.02", "0.05", "0.1"} {
			t.Run(c.cmd+"/"+c.op+"/"+delay, func(t *testing.T) {
				g.t = t
				var bound int
				if c.cmd != "bind" {
					bound = g.bind(img)
				}
				env := []string{"TETHER_CRYPTSETUP=" + wrapper, "KILL_OP=" + c.op, "KILL_DELAY=" + delay}
				switch c.cmd {
				case "bind":
					g.tether([]byte(testPass), env, "luks", "bind", "-d", img, "-k", "-", "-y", "tang", g.tangCfg())
				case "unbind":
					g.tether(nil, env, "luks", "unbind", "-d", img, "-s", strconv.Itoa(bound))
				case "regen":
					g.tether(nil, env, "luks", "regen", "-d", img, "-s", strconv.Itoa(bound), "-y")
				}
				time.Sleep(50 * time.Millisecond) // let an orphaned cryptsetup finish or die
				if !g.opens(img, 0, []byte(testPass)) {
					t.Fatal("the passphrase no longer opens the volume")
				}
				g.ok(nil, "luks", "repair", "-d", img)
				g.checkClean(img)
				for _, b := range luks.Bindings(header(t, img)) {
					g.ok(nil, "luks", "unbind", "-d", img, "-s", strconv.Itoa(b.Slot))
				}
			})
		}
	}
}

// TestRegenServerGone: when a binding's server is gone for good, regen
// needs an existing passphrase and a new policy, and replaces the binding.
func TestRegenServerGone(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	px := testenv.StartProxy(t, strings.TrimPrefix(g.tang.URL, "http://"))
	g.ok([]byte(testPass), "luks", "bind", "-d", img, "-k", "-", "-y", "tang", fmt.Sprintf(`{"url":%q}`, px.URL))
	old := g.newestBinding(img)
	px.Silence()
	before := fileSum(t, img)
	res := g.tether(nil, nil, "luks", "regen", "-d", img, "-s", strconv.Itoa(old), "--timeout", "1s")
	if res.code == 0 || !strings.Contains(res.stderr, "-k") || fileSum(t, img) != before {
		t.Fatalf("regen with the server gone and no key: %d %s", res.code, res.stderr)
	}
	g.ok([]byte(testPass+"\n"), "luks", "regen", "-d", img, "-s", strconv.Itoa(old), "-k", "-", "--timeout", "1s", "-y", "tang", g.tangCfg())
	h := header(t, img)
	if bs := luks.Bindings(h); len(bs) != 1 || bs[0].Slot == old || slotActive(h, old) {
		t.Fatalf("after regen: bindings %+v slots %v", bs, h.Slots())
	}
	g.checkClean(img)
}

func slotActive(h *luks.Header, n int) bool { _, ok := h.Keyslot(n); return ok }

// TestConcurrentBinds: tether's lock serialises changes to one volume.
func TestConcurrentBinds(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	var wg sync.WaitGroup
	codes := make([]int, 3)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = g.tether([]byte(testPass), nil, "luks", "bind", "-d", img, "-k", "-", "-y", "tang", g.tangCfg()).code
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Errorf("bind %d: exit %d", i, c)
		}
	}
	if bs := luks.Bindings(header(t, img)); len(bs) != 3 {
		t.Fatalf("%d bindings, want 3", len(bs))
	}
	g.checkClean(img)
}

// TestUnbindFinishesWipedKeyslot reproduces what a crash inside
// luksKillSlot can leave: the keyslot's key material wiped while the
// metadata still lists the keyslot and its token. The unbind's intent
// token makes repair finish the removal, so no binding is left that
// nothing opens.
func TestUnbindFinishesWipedKeyslot(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	slot := g.bind(img)
	pass := []byte(g.ok(nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(slot)))
	if !g.opens(img, slot, pass) {
		t.Fatal("fresh binding does not open")
	}
	ks, ok := header(t, img).Keyslot(slot)
	if !ok {
		t.Fatal("no keyslot")
	}
	// The intent, as Unbind writes it before luksKillSlot.
	intent := fmt.Sprintf(`{"type":"tether-txn","keyslots":[],"op":"unbind","slot":"%d"}`, slot)
	cs := testenv.RequireCmd(t, "cryptsetup")
	if _, e, code := testenv.Run(t, []byte(intent), cs, "token", "import", "--token-id", "20", "--json-file", "-", img); code != 0 {
		t.Fatalf("token import: %s", e)
	}
	// What luksKillSlot does first: wipe the key material.
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, ks.Area.Size), int64(ks.Area.Offset)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if g.opens(img, slot, pass) {
		t.Fatal("the wiped keyslot still opens: the test does not reproduce the crash")
	}

	g.ok(nil, "luks", "repair", "-d", img)
	h := header(t, img)
	if _, ok := h.Keyslot(slot); ok {
		t.Fatalf("keyslot %d is still there after repair", slot)
	}
	if len(luks.Bindings(h)) != 0 || len(luks.Leftovers(h)) != 0 {
		t.Fatalf("repair left bindings %v or leftovers %v", luks.Bindings(h), luks.Leftovers(h))
	}
	if !g.opens(img, 0, []byte(testPass)) {
		t.Fatal("the original passphrase no longer opens")
	}
}

// TestRepairHostileTxn: a disk's header is not trusted. A txn token
// planted in it that names a file outside tether's state directory as its
// "backup" must not make luks repair (which every change runs first, as
// root) delete that file; a txn naming no keyslot id is refused with the
// header unchanged.
func TestRepairHostileTxn(t *testing.T) {
	g := newRig(t)
	img := g.image("20M")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	cs := testenv.RequireCmd(t, "cryptsetup")
	plant := func(id int, tok string) {
		if _, e, code := testenv.Run(t, []byte(tok), cs, "token", "import", "--token-id", strconv.Itoa(id), "--json-file", "-", img); code != 0 {
			t.Fatalf("token import: %s", e)
		}
	}
	uuid := header(t, img).UUID
	for _, backup := range []string{victim, g.state + "/../" + uuid + "-x.header", g.state + "/" + uuid + "-x.header/../../victim"} {
		plant(20, fmt.Sprintf(`{"type":"tether-txn","keyslots":[],"op":"bind","slot":"5","backup":%q}`, backup))
		res := g.tether(nil, nil, "luks", "repair", "-d", img)
		if res.code != 0 || !strings.Contains(res.stderr, "not deleted") {
			t.Fatalf("repair with backup %s: exit %d\n%s", backup, res.code, res.stderr)
		}
		if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
			t.Fatalf("repair deleted %s, named by a txn token on the disk: %v", victim, err)
		}
		g.checkClean(img)
	}
	// The backup tether itself would have written is still deleted.
	own := filepath.Join(g.state, uuid+"-20260101T000000.000000000.header")
	os.WriteFile(own, []byte("old header"), 0o600)
	plant(20, fmt.Sprintf(`{"type":"tether-txn","keyslots":[],"op":"bind","slot":"5","backup":%q}`, own))
	g.ok(nil, "luks", "repair", "-d", img)
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Fatalf("tether's own backup %s is left: %v", own, err)
	}
	// A slot that is no keyslot id: refused, nothing changed.
	plant(20, `{"type":"tether-txn","keyslots":[],"op":"unbind","slot":"0x1"}`)
	before := fileSum(t, img)
	if res := g.tether(nil, nil, "luks", "repair", "-d", img); res.code == 0 || !strings.Contains(res.stderr, "token 20") {
		t.Fatalf("repair of a txn with slot 0x1: exit %d\n%s", res.code, res.stderr)
	}
	if fileSum(t, img) != before || !g.opens(img, 0, []byte(testPass)) {
		t.Fatal("a refused repair changed the image")
	}
}
