package heal_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/sss"
	_ "github.com/tether-nbde/tether/pin/tang" // for pin.Describe
	"github.com/tether-nbde/tether/pin/tpm2"
)

// The tests run the real tether binary against LUKS2 image files made by
// the real cryptsetup, a real swtpm (one per test) and a stock tangd,
// which they stop to show that a healed binding needs no network.

func TestMain(m *testing.M) { testenv.Main(m) }

const testPass = "correct horse"

type rig struct {
	t     *testing.T
	bin   string
	state string
	sw    *tpmtest.SWTPM
	tang  *testenv.Tangd
}

func newRig(t *testing.T) *rig {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCmd(t, "cryptsetup")
	testenv.RequireCmd(t, "tpm2_flushcontext")
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI) // for every tether run by the test
	t.Setenv(tpm.EnvTCTI, "")
	return &rig{t: t, bin: testenv.TetherBin(t), state: state, sw: sw, tang: testenv.StartTangd(t)}
}

// image makes a LUKS2 image file with testPass in keyslot 0 (PBKDF2 at
// 1000 iterations: argon2 would cost seconds per try).
func (g *rig) image() string {
	g.t.Helper()
	p := filepath.Join(g.t.TempDir(), "disk.img")
	g.run(nil, "truncate", "-s", "20M", p)
	g.run([]byte(testPass), "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", "-", p)
	return p
}

func (g *rig) run(stdin []byte, name string, args ...string) []byte {
	g.t.Helper()
	out, errb, code := testenv.Run(g.t, stdin, name, args...)
	if code != 0 {
		g.t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, errb)
	}
	return out
}

type result struct {
	stdout, stderr string
	code           int
	killed         bool
}

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

func (g *rig) ok(stdin []byte, args ...string) string {
	g.t.Helper()
	res := g.tether(stdin, nil, args...)
	if res.code != 0 {
		g.t.Fatalf("tether %s: exit %d\n%s%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	return res.stdout
}

// heal runs tether tpm heal on named volumes and files only (never this
// machine's crypttab or secrets).
func (g *rig) heal(stdin []byte, env []string, args ...string) result {
	g.t.Helper()
	res := g.tether(stdin, env, append([]string{"tpm", "heal"}, args...)...)
	g.t.Logf("tether tpm heal %s: exit %d\n%s%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
	return res
}

func (g *rig) bind(img string, stdin []byte, args ...string) int {
	g.t.Helper()
	g.ok(stdin, append([]string{"luks", "bind", "-d", img}, args...)...)
	bs := luks.Bindings(header(g.t, img))
	return bs[len(bs)-1].Slot
}

func (g *rig) sssCfg(tpm2Cfg string) string {
	return fmt.Sprintf(`{"t":1,"pins":{"tang":[{"url":%q}],"tpm2":[%s]}}`, g.tang.URL, tpm2Cfg)
}

func header(t testing.TB, img string) *luks.Header {
	t.Helper()
	h, err := luks.ReadHeaderFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func binding(t testing.TB, img string, slot int) *jose.JWE {
	t.Helper()
	b, err := luks.BindingFor(header(t, img), slot)
	if err != nil {
		t.Fatal(err)
	}
	return b.JWE
}

// parts returns the children of j by pin (j itself for a tpm2 JWE).
func parts(t testing.TB, j *jose.JWE, name string) []*jose.JWE {
	t.Helper()
	switch n, _ := j.Header.Pin(); n {
	case name:
		return []*jose.JWE{j}
	case "sss":
	default:
		return nil
	}
	kids, err := sss.Children(j)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jose.JWE
	for _, c := range kids {
		out = append(out, parts(t, c, name)...)
	}
	return out
}

// unseals reports whether every tpm2 part of j unseals with the TPM as it
// is now (and pinText for parts made with_pin): no network involved.
func (g *rig) unseals(j *jose.JWE, pinText string) error {
	g.t.Helper()
	ps := parts(g.t, j, "tpm2")
	if len(ps) == 0 {
		g.t.Fatal("no tpm2 part")
	}
	o := pin.Options{PIN: func(string, bool) ([]byte, error) { return []byte(pinText), nil }}
	for _, p := range ps {
		if _, err := (tpm2.Pin{TCTI: g.sw.TCTI}).Decrypt(context.Background(), p, o); err != nil {
			return err
		}
	}
	return nil
}

// mismatched fails the test unless every tpm2 part of j is refused for
// its PCRs.
func (g *rig) mismatched(j *jose.JWE, what string) {
	g.t.Helper()
	var pm *tpm.PCRMismatchError
	if err := g.unseals(j, "4711"); !errors.As(err, &pm) {
		g.t.Fatalf("%s: err = %v, want a PCR mismatch", what, err)
	}
}

// flush flushes what a tether process left loaded in swtpm. sss runs its
// children at once and returns with the first t: a tpm2 child still at
// work when tether exits leaves its objects loaded, as swtpm has no
// resource manager (/dev/tpmrm0 flushes them when the process closes it),
// and after three the TPM refuses to load more.
func (g *rig) flush() {
	g.sw.Command("tpm2_flushcontext", "-t").Run()
	g.sw.Command("tpm2_flushcontext", "-l").Run()
}

// opensAlone checks that keyslot slot's binding opens the volume now,
// with tang stopped: luks pass decrypts it, cryptsetup takes the result.
func (g *rig) opensAlone(img string, slot int) {
	g.t.Helper()
	res := g.tether(nil, nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(slot), "--timeout", "3s")
	g.flush()
	if res.code != 0 {
		g.t.Fatalf("luks pass of keyslot %d: exit %d: %s", slot, res.code, res.stderr)
	}
	if _, e, code := testenv.Run(g.t, []byte(res.stdout), "cryptsetup", "open", "--test-passphrase", "--key-slot", strconv.Itoa(slot), "--key-file", "-", img); code != 0 {
		g.t.Fatalf("the passphrase of keyslot %d does not open it: %s", slot, e)
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

func pcr16(t testing.TB, sw *tpmtest.SWTPM) string {
	t.Helper()
	tp := sw.Open(t)
	v, err := tp.ReadPCRs("sha256", []int{16})
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(v[0])
}

// clean checks what every heal must leave: no interrupted change, no
// header backup, the passphrase still opening keyslot 0, n bindings.
func (g *rig) clean(img string, n int) {
	g.t.Helper()
	h := header(g.t, img)
	if lo := luks.Leftovers(h); len(lo) != 0 {
		g.t.Fatalf("leftovers: %+v", lo)
	}
	if bs := luks.Bindings(h); len(bs) != n {
		g.t.Fatalf("%d bindings, want %d", len(bs), n)
	}
	if left, _ := filepath.Glob(filepath.Join(g.state, "*.header")); len(left) != 0 {
		g.t.Fatalf("header backups left: %v", left)
	}
	if _, e, code := testenv.Run(g.t, []byte(testPass), "cryptsetup", "open", "--test-passphrase", "--key-slot", "0", "--key-file", "-", img); code != 0 {
		g.t.Fatalf("the passphrase no longer opens keyslot 0: %s", e)
	}
}

// TestHealVolume: after PCR 16 changes, heal reseals a tpm2 part nested
// in sss (proved by its tang sibling, which is kept byte for byte) and a
// top-level tpm2 keyslot (proved by the tang keyslot beside it) to the
// value of now. A dry run before changes nothing. With the tang server
// stopped, each healed binding then opens the volume by itself, and heal
// again finds nothing to do, without the network.
func TestHealVolume(t *testing.T) {
	g := newRig(t)
	img := g.image()
	nested := g.bind(img, []byte(testPass), "-k", "-", "-y", "sss", g.sssCfg(`{"pcr_ids":"16"}`))
	top := g.bind(img, []byte(testPass), "-k", "-", "tpm2", `{"pcr_ids":"16"}`)
	g.bind(img, []byte(testPass), "-k", "-", "-y", "tang", fmt.Sprintf(`{"url":%q}`, g.tang.URL))
	tangChild := parts(t, binding(t, img, nested), "tang")[0].Compact()
	if res := g.heal(nil, nil, "-d", img); res.code != 0 || strings.Count(res.stdout, ": ok\n") != 2 {
		t.Fatalf("heal before any change: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	g.sw.Extend(t, "sha256", 16) // the "update"
	g.mismatched(binding(t, img, nested), "nested part after the update")
	g.mismatched(binding(t, img, top), "top-level part after the update")
	before := fileSum(t, img)
	res := g.heal(nil, nil, "-d", img, "--dry-run")
	if res.code != 0 || strings.Count(res.stdout, "would reseal") != 2 || fileSum(t, img) != before {
		t.Fatalf("dry run: exit %d, image changed: %v\n%s%s", res.code, fileSum(t, img) != before, res.stdout, res.stderr)
	}
	g.mismatched(binding(t, img, nested), "nested part after a dry run")

	now := pcr16(t, g.sw)
	res = g.heal(nil, nil, "-d", img)
	if res.code != 0 || strings.Count(res.stdout, "resealed as keyslot") != 2 {
		t.Fatalf("heal: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("keyslot %d %s: resealed as keyslot", nested, "sss(t=1; tang("+g.tang.URL+"); tpm2(sha256:16))"),
		"tpm2(sha256:16) in sss: PCR 16 changed; sealed to policy ",
		"; now sha256 16=" + now + "\n",
		"tpm2(sha256:16) in sss: resealed to sha256 16=" + now + " (policy ",
		"proved by its own network pins (tang(" + g.tang.URL + ")); its tpm2 parts were left out",
		fmt.Sprintf("keyslot %d tpm2(sha256:16): resealed as keyslot", top),
		"proved by keyslot ",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("heal's report lacks %q", want)
		}
	}
	bs := luks.Bindings(header(t, img))
	newNested, newTop := -1, -1
	for _, b := range bs {
		switch pin.Describe(b.JWE) {
		case "tpm2(sha256:16)":
			newTop = b.Slot
		case "sss(t=1; tang(" + g.tang.URL + "); tpm2(sha256:16))":
			newNested = b.Slot
		}
	}
	if newNested < 0 || newTop < 0 || newNested == nested || newTop == top {
		for _, b := range bs {
			t.Logf("keyslot %d: %s", b.Slot, pin.Describe(b.JWE))
		}
		t.Fatalf("bindings after heal: nested %d -> %d, top %d -> %d", nested, newNested, top, newTop)
	}
	if got := parts(t, binding(t, img, newNested), "tang")[0].Compact(); got != tangChild {
		t.Error("the tang child of the sss binding was not kept as it was")
	}
	g.clean(img, 3)

	g.tang.Stop()
	for _, s := range []int{newNested, newTop} {
		if err := g.unseals(binding(t, img, s), ""); err != nil {
			t.Fatalf("keyslot %d after heal: %v", s, err)
		}
		g.opensAlone(img, s)
	}
	before = fileSum(t, img)
	if res := g.heal(nil, nil, "-d", img); res.code != 0 || strings.Count(res.stdout, ": ok\n") != 2 || fileSum(t, img) != before {
		t.Fatalf("heal again, tang stopped: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// seal encrypts secret with the tether binary into a file of mode 0640.
func (g *rig) seal(path string, secret []byte, env []string, args ...string) {
	g.t.Helper()
	res := g.tether(secret, env, append([]string{"encrypt"}, args...)...)
	if res.code != 0 {
		g.t.Fatalf("encrypt %v: %s", args, res.stderr)
	}
	if err := os.WriteFile(path, []byte(res.stdout), 0o640); err != nil {
		g.t.Fatal(err)
	}
}

func readJWE(t testing.TB, path string) *jose.JWE {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j, err := jose.ParseCompact(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestHealSecretFiles: heal finds the sealed files of a secrets
// directory (tether-secret@'s); after PCR 16 changes it reseals the tpm2
// part of an sss file (its tang part proving it, kept as it was) and keeps
// the file's mode, and the file then decrypts with tang stopped. A file
// sealed to the TPM alone cannot be proved: it is reported with a fix and
// left as it is. A dry run changes no file.
func TestHealSecretFiles(t *testing.T) {
	g := newRig(t)
	dir := t.TempDir()
	sssFile, tpmFile := filepath.Join(dir, "pwenc_secret.jwe"), filepath.Join(dir, "token.jwe")
	secret := []byte("pwenc 0f1e2d3c4b5a6978")
	g.seal(sssFile, secret, nil, "sss", g.sssCfg(`{"pcr_ids":"16"}`), "-y")
	g.seal(tpmFile, secret, nil, "tpm2", `{"pcr_ids":"16"}`)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a JWE"), 0o600)
	tangChild := parts(t, readJWE(t, sssFile), "tang")[0].Compact()
	scan := []string{"--secrets", dir, "--crypttab", filepath.Join(dir, "no-crypttab")}

	g.sw.Extend(t, "sha256", 16)
	sums := map[string][32]byte{sssFile: fileSum(t, sssFile), tpmFile: fileSum(t, tpmFile)}
	res := g.heal(nil, nil, append(scan, "--dry-run")...)
	if res.code != 1 || !strings.Contains(res.stdout, sssFile+" sss(t=1; tang("+g.tang.URL+"); tpm2(sha256:16)): would reseal") ||
		!strings.Contains(res.stdout, tpmFile+" tpm2(sha256:16): not healed: sealed to the TPM alone") {
		t.Fatalf("dry run: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for f, sum := range sums {
		if fileSum(t, f) != sum {
			t.Fatalf("the dry run changed %s", f)
		}
	}

	res = g.heal(nil, nil, scan...)
	if res.code != 1 || !strings.Contains(res.stdout, sssFile+" sss(t=1; tang("+g.tang.URL+"); tpm2(sha256:16)): resealed\n") ||
		!strings.Contains(res.stdout, "fix: seal the secret again from its source") || !strings.Contains(res.stderr, "tether: error: 1 binding(s) or file(s) not healed") {
		t.Fatalf("heal: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if fileSum(t, tpmFile) != sums[tpmFile] {
		t.Error("the file sealed to the TPM alone changed")
	}
	if fi, err := os.Stat(sssFile); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("the healed file: %v, %v; want mode 0640", fi, err)
	}
	j := readJWE(t, sssFile)
	if parts(t, j, "tang")[0].Compact() != tangChild {
		t.Error("the tang child was not kept as it was")
	}
	g.tang.Stop()
	if err := g.unseals(j, ""); err != nil {
		t.Fatalf("the healed tpm2 part: %v", err)
	}
	f, _ := os.Open(sssFile)
	defer f.Close()
	cmd := exec.Command(g.bin, "decrypt")
	cmd.Stdin = f
	got, err := cmd.Output()
	g.flush()
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("decrypt of the healed file with tang stopped: %q, %v", got, err)
	}
}

// TestHealRefusals: what heal leaves alone, changing nothing: a tpm2
// keyslot that only the recovery passphrase can prove (until
// --allow-passphrase, and -k alone is a usage error); a part made with_pin
// when no PIN is given (with --pin-file it is resealed, keeping that
// PIN); a signed policy (noted, never resealed); a part sealed by another
// TPM.
func TestHealRefusals(t *testing.T) {
	g := newRig(t)

	// Only the passphrase proves this volume.
	img := g.image()
	slot := g.bind(img, []byte(testPass), "-k", "-", "tpm2", `{"pcr_ids":"16"}`)
	g.sw.Extend(t, "sha256", 16)
	before := fileSum(t, img)
	res := g.heal(nil, nil, "-d", img)
	if res.code != 1 || !strings.Contains(res.stdout, "not healed: nothing proves the machine is at home") ||
		!strings.Contains(res.stdout, "--allow-passphrase -k -") || fileSum(t, img) != before {
		t.Fatalf("passphrase only, not allowed: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := g.heal([]byte(testPass), nil, "-d", img, "-k", "-"); res.code != 2 || !strings.Contains(res.stderr, "--allow-passphrase") {
		t.Fatalf("-k without --allow-passphrase: exit %d\n%s", res.code, res.stderr)
	}
	res = g.heal([]byte(testPass), nil, "-d", img, "--allow-passphrase", "-k", "-")
	if res.code != 0 || !strings.Contains(res.stdout, "proved by a passphrase of the volume (keyslot 0), not a network pin") {
		t.Fatalf("--allow-passphrase: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	bs := luks.Bindings(header(t, img))
	if len(bs) != 1 || bs[0].Slot == slot {
		t.Fatalf("bindings after heal: %+v", bs)
	}
	if err := g.unseals(bs[0].JWE, ""); err != nil {
		t.Fatalf("the healed keyslot: %v", err)
	}
	g.clean(img, 1)

	// A part made with_pin.
	dir := t.TempDir()
	pinFile, wrong := filepath.Join(dir, "pin"), filepath.Join(dir, "wrong")
	os.WriteFile(pinFile, []byte("4711\n"), 0o600)
	os.WriteFile(wrong, []byte("4712\n"), 0o600)
	withPIN := filepath.Join(dir, "with-pin.jwe")
	g.seal(withPIN, []byte("s"), nil, "sss", g.sssCfg(`{"pcr_ids":"16","with_pin":true}`), "-y", "--pin-file", pinFile)
	g.sw.Extend(t, "sha256", 16)
	sum := fileSum(t, withPIN)
	res = g.heal(nil, nil, "-f", withPIN)
	if res.code != 1 || !strings.Contains(res.stdout, "not healed: a part to reseal was sealed with a PIN, and no PIN was given") ||
		!strings.Contains(res.stdout, "fix: tether tpm heal -f "+withPIN+" --pin-file FILE") || fileSum(t, withPIN) != sum {
		t.Fatalf("with_pin, no PIN: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res = g.heal(nil, nil, "-f", withPIN, "--pin-file", pinFile); res.code != 0 || !strings.Contains(res.stdout, ": resealed\n") {
		t.Fatalf("with_pin, --pin-file: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := g.unseals(readJWE(t, withPIN), "4711"); err != nil {
		t.Fatalf("the healed part with its PIN: %v", err)
	}
	if err := g.unseals(readJWE(t, withPIN), "4712"); !errors.Is(err, pin.ErrWrongPIN) {
		t.Fatalf("the healed part with another PIN: %v, want a wrong PIN", err)
	}

	// A signed policy follows its signatures: never resealed, said so.
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pub := filepath.Join(dir, "policy.pub.pem")
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	signed := filepath.Join(dir, "signed.jwe")
	g.seal(signed, []byte("s"), nil, "sss", g.sssCfg(`{"pcr_pubkey":"`+pub+`","pcr_signed_ids":"16","pcr_signatures":"`+filepath.Join(dir, "sigs.json")+`"}`), "-y")
	g.sw.Extend(t, "sha256", 16)
	sum = fileSum(t, signed)
	res = g.heal(nil, nil, "-f", signed)
	if res.code != 0 || !strings.Contains(res.stdout, ": ok\n") || fileSum(t, signed) != sum ||
		!strings.Contains(res.stdout, "note: tpm2(signed sha256:16) in sss: a signed policy follows its signatures, not resealed") {
		t.Fatalf("a signed policy: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// A part sealed by another TPM: not this TPM's to reseal.
	other := tpmtest.Start(t)
	foreign := filepath.Join(dir, "foreign.jwe")
	g.seal(foreign, []byte("s"), []string{tpm.EnvTools + "=" + other.TCTI}, "sss", g.sssCfg(`{"pcr_ids":"16"}`), "-y")
	sum = fileSum(t, foreign)
	res = g.heal(nil, nil, "-f", foreign)
	if res.code != 1 || !strings.Contains(res.stdout, "not healed: left alone: the TPM refuses tpm2(sha256:16) in sss for another reason than its PCRs") ||
		!strings.Contains(res.stdout, "sealed on another TPM") || fileSum(t, foreign) != sum {
		t.Fatalf("another TPM's part: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// TestHealInterrupted: heal killed at each step of its rewrite, of a
// binding proved by its own tang part (sss, the part sealed to PCR 16) and
// of one proved by another keyslot (a tpm2 keyslot sealed to PCR 23,
// proved through the tang part of another binding: regen's journal with
// the key of another keyslot): the volume opens all along, every binding listed opens its
// keyslot but the one being replaced, and the next heal finishes the job
// with no binding lost or doubled.
func TestHealInterrupted(t *testing.T) {
	g := newRig(t)
	img := g.image()
	g.bind(img, []byte(testPass), "-k", "-", "-y", "sss", g.sssCfg(`{"pcr_ids":"16"}`))
	g.bind(img, []byte(testPass), "-k", "-", "tpm2", `{"pcr_ids":"23"}`)
	g.bind(img, []byte(testPass), "-k", "-", "-y", "tang", fmt.Sprintf(`{"url":%q}`, g.tang.URL))
	for _, target := range []struct {
		name string
		pcr  int
	}{{"sss", 16}, {"tpm2", 23}} {
		for _, step := range []string{"regen:backup", "regen:txn", "regen:addkey", "regen:verified", "regen:token",
			"regen:killold", "regen:removeold", "regen:done"} {
			t.Run(target.name+"/"+step, func(t *testing.T) {
				g.t = t
				g.sw.Extend(t, "sha256", target.pcr) // only the target needs healing
				res := g.heal(nil, []string{"TETHER_TEST_CRASH_AT=" + step}, "-d", img)
				if !res.killed {
					t.Fatalf("heal was not killed at %s: exit %d", step, res.code)
				}
				broken := 0
				for _, b := range luks.Bindings(header(t, img)) {
					r := g.tether(nil, nil, "luks", "pass", "-d", img, "-s", strconv.Itoa(b.Slot))
					g.flush()
					if r.code != 0 {
						if target.name != "tpm2" || pin.Describe(b.JWE) != "tpm2(sha256:23)" {
							t.Fatalf("keyslot %d (%s) does not open after the crash: %s", b.Slot, pin.Describe(b.JWE), r.stderr)
						}
						broken++ // the old tpm2 keyslot, not yet replaced
						continue
					}
					g.opensAlone(img, b.Slot)
				}
				if broken > 1 {
					t.Fatalf("%d bindings do not open", broken)
				}
				if res := g.heal(nil, nil, "-d", img); res.code != 0 {
					t.Fatalf("heal after the crash: exit %d\n%s%s", res.code, res.stdout, res.stderr)
				}
				g.clean(img, 3)
				for _, b := range luks.Bindings(header(t, img)) {
					if len(parts(t, b.JWE, "tpm2")) > 0 {
						if err := g.unseals(b.JWE, ""); err != nil {
							t.Fatalf("keyslot %d after the second heal: %v", b.Slot, err)
						}
					}
				}
			})
		}
	}
}

// TestHealNested: a tpm2 part two levels down. When the inner sss opens
// through its own tang part, only its tpm2 part is replaced (its tang
// part kept); when it needs the tpm2 part (t=2), the outer tang part
// proves the secret and the inner sss is made anew. Either way the outer
// tang part is kept, the tpm2 part unseals, and the file decrypts.
func TestHealNested(t *testing.T) {
	g := newRig(t)
	dir := t.TempDir()
	inner := func(threshold int) string {
		return fmt.Sprintf(`{"t":%d,"pins":{"tpm2":{"pcr_ids":"16"},"tang":{"url":%q}}}`, threshold, g.tang.URL)
	}
	secret := []byte("nested")
	files := []struct {
		name, cfg string
		innerKept bool
	}{
		{"rewrapped.jwe", fmt.Sprintf(`{"t":2,"pins":{"sss":%s,"tang":{"url":%q}}}`, inner(1), g.tang.URL), true},
		{"made-anew.jwe", fmt.Sprintf(`{"t":1,"pins":{"sss":%s,"tang":{"url":%q}}}`, inner(2), g.tang.URL), false},
	}
	tangs := map[string][]string{}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		g.seal(p, secret, nil, "sss", f.cfg, "-y")
		for _, c := range parts(t, readJWE(t, p), "tang") {
			tangs[f.name] = append(tangs[f.name], c.Compact())
		}
	}
	g.sw.Extend(t, "sha256", 16)
	res := g.heal(nil, nil, "--secrets", dir, "--crypttab", filepath.Join(dir, "none"))
	if res.code != 0 || strings.Count(res.stdout, ": resealed\n") != 2 {
		t.Fatalf("heal: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		j := readJWE(t, p)
		if err := g.unseals(j, ""); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		var now []string
		for _, c := range parts(t, j, "tang") {
			now = append(now, c.Compact())
		}
		// parts lists the inner sss's children first (pins in name
		// order: sss, tang): [inner tang, outer tang].
		if len(now) != 2 || now[1] != tangs[f.name][1] || (now[0] == tangs[f.name][0]) != f.innerKept {
			t.Errorf("%s: inner tang part kept: %v, want %v; outer kept: %v", f.name, now[0] == tangs[f.name][0], f.innerKept, now[1] == tangs[f.name][1])
		}
		in, _ := os.Open(p)
		cmd := exec.Command(g.bin, "decrypt")
		cmd.Stdin = in
		got, err := cmd.Output()
		in.Close()
		g.flush()
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("%s: decrypt after heal: %q, %v", f.name, got, err)
		}
	}
}
