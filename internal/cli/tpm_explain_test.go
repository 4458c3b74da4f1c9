package cli_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/eventlog/eventlogtest"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// explainJSON is what tether tpm explain --json prints, as far as the
// tests read it.
type explainJSON struct {
	EventLog string `json:"event_log"`
	Format   string `json:"format"`
	TPM      string `json:"tpm"`
	Bindings []struct {
		Source      string `json:"source"`
		Pin         string `json:"pin"`
		PCRs        []int  `json:"pcr_ids"`
		UnsealsNow  *bool  `json:"unseals_now"`
		LogHolds    *bool  `json:"log_satisfies_policy"`
		Changed     []int  `json:"changed"`
		Exact       bool   `json:"changed_exact"`
		TPMSays     string `json:"tpm_says"`
		Explanation string `json:"explanation"`
		Signed      string `json:"signed"`
	} `json:"bindings"`
	PCRs []struct {
		Bank     string `json:"bank"`
		PCR      int    `json:"pcr"`
		Replayed string `json:"replayed"`
		TPM      string `json:"tpm"`
		Match    *bool  `json:"match"`
		Why      string `json:"why_different"`
		Events   []struct {
			Num         int    `json:"num"`
			Type        string `json:"type"`
			Digest      string `json:"digest"`
			Description string `json:"description"`
		} `json:"events"`
	} `json:"pcrs"`
}

// bootedTPM is a swtpm that went through the boot an event log tells:
// the log's digests were extended into it, as firmware extends them.
type bootedTPM struct {
	sw  *tpmtest.SWTPM
	log *eventlogtest.Builder
	bin string
	dir string
	// logFile is the log, as the kernel would show it.
	logFile string
}

func bootTPM(t *testing.T) *bootedTPM {
	t.Helper()
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI)
	t.Setenv(tpm.EnvTCTI, "")
	b := eventlogtest.New()
	eventlogtest.Boot(b, true, eventlogtest.Cert(t, "tether test platform key"))
	tp := sw.Open(t)
	b.ExtendInto(t, tp)
	tp.Close()
	dir := t.TempDir()
	f := filepath.Join(dir, "binary_bios_measurements")
	if err := os.WriteFile(f, b.Bytes(), 0o400); err != nil {
		t.Fatal(err)
	}
	return &bootedTPM{sw: sw, log: b, bin: testenv.TetherBin(t), dir: dir, logFile: f}
}

// extend extends a PCR as the running system would: the log does not
// show it.
func (bt *bootedTPM) extend(t *testing.T, pcr int) {
	t.Helper()
	tp := bt.sw.Open(t)
	eventlogtest.Extend(t, tp, pcr, bt.log.Digests([]byte("after boot")))
	tp.Close()
}

func (bt *bootedTPM) explain(t *testing.T, stdin []byte, args ...string) (text string, j explainJSON) {
	t.Helper()
	args = append([]string{"tpm", "explain", "--event-log", bt.logFile}, args...)
	out, errOut, code := testenv.Run(t, stdin, bt.bin, args...)
	if code != 0 {
		t.Fatalf("tether %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	if len(errOut) > 0 {
		t.Errorf("tether %s wrote to stderr:\n%s", strings.Join(args, " "), errOut)
	}
	out2, errOut, code := testenv.Run(t, stdin, bt.bin, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("tether %s --json: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	if err := json.Unmarshal(out2, &j); err != nil {
		t.Fatalf("--json: %v\n%s", err, out2)
	}
	return string(out), j
}

func (bt *bootedTPM) encrypt(t *testing.T, pinName, cfg string) string {
	t.Helper()
	out, errOut, code := testenv.Run(t, []byte("secret"), bt.bin, "encrypt", pinName, cfg)
	if code != 0 {
		t.Fatalf("encrypt %s %s: %s", pinName, cfg, errOut)
	}
	f := filepath.Join(t.TempDir(), "secret.jwe")
	os.WriteFile(f, out, 0o600)
	return f
}

// TestExplainReplay: every PCR the log extends replays to the value the
// TPM holds, and the events that made it are listed with their types and
// what they measured; an extend the log does not show is reported as a
// mismatch, with what may have made it.
func TestExplainReplay(t *testing.T) {
	bt := bootTPM(t)
	text, j := bt.explain(t, nil)
	if j.Format != "crypto-agile" || j.TPM != bt.sw.TCTI || len(j.PCRs) != 10 {
		t.Fatalf("format %q, TPM %q, %d PCRs; want crypto-agile, %s, PCRs 0 to 9", j.Format, j.TPM, len(j.PCRs), bt.sw.TCTI)
	}
	tp := bt.sw.Open(t)
	for _, p := range j.PCRs {
		now, err := tp.ReadPCRs("sha256", []int{p.PCR})
		if err != nil {
			t.Fatal(err)
		}
		if p.Bank != "sha256" || p.Match == nil || !*p.Match || p.Replayed != hex.EncodeToString(now[0]) || p.TPM != p.Replayed {
			t.Errorf("PCR %d: %+v; want the replay to equal the TPM's %x", p.PCR, p, now[0])
		}
	}
	tp.Close()
	for _, want := range []string{
		"sha256 PCR 7: Secure Boot state and keys",
		"= the log",
		"EV_EFI_VARIABLE_DRIVER_CONFIG     ",
		"SecureBoot = 1 (on)",
		"db: certificate CN=tether test platform key verified the next image",
		`EV_EFI_BOOT_SERVICES_APPLICATION  `,
		`\EFI\debian\shimx64.efi`,
		"grub_cmd: linux /vmlinuz-6.12.0 root=/dev/mapper/root ro",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "differs") {
		t.Errorf("a PCR differs from the log:\n%s", text)
	}

	// The sha1 bank replays too.
	_, j1 := bt.explain(t, nil, "--bank", "sha1", "--pcr-ids", "0,7")
	for _, p := range j1.PCRs {
		if p.Bank != "sha1" || len(p.Replayed) != 40 || p.Match == nil || !*p.Match {
			t.Errorf("sha1 PCR %d: %+v", p.PCR, p)
		}
	}

	// Something the log does not show: PCR 7 and PCR 11 extended after
	// boot.
	bt.extend(t, 7)
	bt.extend(t, 11)
	text, j = bt.explain(t, nil, "--pcr-ids", "7,11")
	if len(j.PCRs) != 2 {
		t.Fatalf("%d PCRs, want 7 and 11", len(j.PCRs))
	}
	for _, p := range j.PCRs {
		if p.Match == nil || *p.Match || p.Why == "" {
			t.Errorf("PCR %d extended after boot: %+v; want a mismatch and why", p.PCR, p)
		}
	}
	if len(j.PCRs[1].Events) != 0 || !strings.Contains(j.PCRs[1].Why, "systemd") {
		t.Errorf("PCR 11: %+v; want no events and systemd named", j.PCRs[1])
	}
	if !strings.Contains(text, "differs from the log: something extended it that the log does not show") {
		t.Errorf("the report does not say PCR 7 differs:\n%s", text)
	}
	t.Logf("after extends the log does not show:\n%s", text)
}

// TestExplainJWE: for a tpm2 JWE sealed to PCR 7, explain shows PCR 7's
// events and says it unseals; after an extend the log does not show it
// names PCR 7 as what changed, also among two PCRs (the log's replay
// satisfies the policy); sealed to values nobody booted (pcr_digest) it
// says the one PCR, or that which of several cannot be known.
func TestExplainJWE(t *testing.T) {
	bt := bootTPM(t)
	jwe7 := bt.encrypt(t, "tpm2", `{"pcr_ids":"7"}`)
	jwe711 := bt.encrypt(t, "tpm2", `{"pcr_ids":"7,11"}`)
	// An sss JWE with a tpm2 child is explained through its child.
	sss := bt.encrypt(t, "sss", `{"t":1,"pins":{"tpm2":[{"pcr_ids":"4"}]}}`)
	zeros := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	future7 := bt.encrypt(t, "tpm2", `{"pcr_ids":"7","pcr_digest":"`+zeros+`"}`)
	future47 := bt.encrypt(t, "tpm2", `{"pcr_ids":"4,7","pcr_digest":"`+zeros+zeros+`"}`)

	text, j := bt.explain(t, nil, "--jwe", jwe7)
	if len(j.Bindings) != 1 || len(j.PCRs) != 1 || j.PCRs[0].PCR != 7 {
		t.Fatalf("bindings %+v, PCRs %+v; want one binding and PCR 7", j.Bindings, j.PCRs)
	}
	b := j.Bindings[0]
	if b.Pin != "tpm2(sha256:7)" || b.UnsealsNow == nil || !*b.UnsealsNow || b.LogHolds == nil || !*b.LogHolds || b.Changed != nil {
		t.Errorf("sealed now: %+v", b)
	}
	if len(j.PCRs[0].Events) != 7 || j.PCRs[0].Events[0].Description != "SecureBoot = 1 (on)" {
		t.Errorf("PCR 7's events: %+v", j.PCRs[0].Events)
	}
	for _, want := range []string{jwe7 + ": tpm2(sha256:7)", "TPM:  it unseals now", "the values the log replays satisfy its policy",
		"sha256 PCR 7: Secure Boot", "SecureBoot = 1 (on)", "PK: 1 certificate(s) (CN=tether test platform key)"} {
		if !strings.Contains(text, want) {
			t.Errorf("the report lacks %q:\n%s", want, text)
		}
	}
	// From stdin too; and the sss JWE's tpm2 child.
	if _, j := bt.explain(t, readFile(t, jwe7), "--jwe", "-"); len(j.Bindings) != 1 || j.Bindings[0].Source != "-" {
		t.Errorf("--jwe -: %+v", j.Bindings)
	}
	if _, j := bt.explain(t, nil, "--jwe", sss); len(j.Bindings) != 1 || j.Bindings[0].Pin != "tpm2(sha256:4)" || j.PCRs[0].PCR != 4 || !strings.HasSuffix(j.Bindings[0].Source, ", sss: tpm2 child 1 of 1") {
		t.Errorf("sss: bindings %+v, PCRs %+v", j.Bindings, j.PCRs)
	}

	// Values sealed to that this machine never had: neither the TPM nor
	// the log satisfies them. One PCR is named; of two, which one
	// cannot be known.
	_, j = bt.explain(t, nil, "--jwe", future7)
	b = j.Bindings[0]
	if *b.UnsealsNow || *b.LogHolds || !b.Exact || !equalInts(b.Changed, 7) || !strings.Contains(b.TPMSays, "PCR policy is not satisfied (sha256 PCR 7 is not in the state") {
		t.Errorf("pcr_digest of PCR 7: %+v", b)
	}
	text, j = bt.explain(t, nil, "--jwe", future47)
	b = j.Bindings[0]
	if *b.UnsealsNow || *b.LogHolds || b.Exact || !strings.Contains(b.Explanation, "which cannot be known") {
		t.Errorf("pcr_digest of PCRs 4,7: %+v", b)
	}
	t.Logf("sealed to values never booted:\n%s", text)

	// A PIN and a signed policy are part of the policy, not a broken PCR:
	// a PIN binding unseals (no PIN is asked), and explain says whether
	// the signature file allows the signed PCRs' values.
	pinFile := filepath.Join(bt.dir, "pin")
	os.WriteFile(pinFile, []byte("2468\n"), 0o600)
	out, errOut, code := testenv.Run(t, []byte("secret"), bt.bin, "encrypt", "tpm2", `{"with_pin":true,"pcr_ids":"7"}`, "--pin-file", pinFile)
	if code != 0 {
		t.Fatalf("encrypt with_pin: %s", errOut)
	}
	withPIN := filepath.Join(bt.dir, "pin.jwe")
	os.WriteFile(withPIN, out, 0o600)
	if _, j := bt.explain(t, nil, "--jwe", withPIN); !*j.Bindings[0].UnsealsNow || !*j.Bindings[0].LogHolds {
		t.Errorf("with_pin: %+v", j.Bindings[0])
	}
	key, pub := policyKey(t, bt.dir)
	sigs := filepath.Join(bt.dir, "sigs.json")
	signed := bt.encrypt(t, "tpm2", `{"pcr_ids":"7","pcr_pubkey":"`+pub+`","pcr_signed_ids":"4","pcr_signatures":"`+sigs+`"}`)
	_, j = bt.explain(t, nil, "--jwe", signed)
	if b := j.Bindings[0]; !*b.UnsealsNow || !strings.Contains(b.Signed, "has no signature by its key for the current values of PCR 4") {
		t.Errorf("signed, no signature yet: %+v", b)
	}
	if _, errOut, code := testenv.Run(t, nil, bt.bin, "tpm", "sign-pcrs", "--key", key, "--pcr-ids", "4", "--out", sigs); code != 0 {
		t.Fatalf("sign-pcrs: %s", errOut)
	}
	text, j = bt.explain(t, nil, "--jwe", signed)
	if b := j.Bindings[0]; !strings.Contains(b.Signed, sigs+" has a signature by its key for the current values of PCR 4") ||
		!strings.Contains(b.Signed, "has a signature by its key for the values the log replays for PCR 4") || len(j.PCRs) != 2 {
		t.Errorf("signed: %+v\n%s", b, text)
	}

	// After boot something extends PCR 7 (the log does not show it):
	// the log's replay still satisfies the policy, so PCR 7 is named,
	// also in a policy over PCRs 7 and 11.
	bt.extend(t, 7)
	for _, c := range []struct {
		jwe  string
		pcrs int
	}{{jwe7, 1}, {jwe711, 2}} {
		text, j = bt.explain(t, nil, "--jwe", c.jwe)
		b = j.Bindings[0]
		if *b.UnsealsNow || !*b.LogHolds || !b.Exact || !equalInts(b.Changed, 7) || len(j.PCRs) != c.pcrs {
			t.Errorf("%s after an extend of PCR 7: %+v", b.Pin, b)
		}
		if !strings.Contains(text, "why:  sha256 PCR 7 changed after the boot the log shows: the policy holds with the value the log replays for it") || !strings.Contains(text, "TPM:  it does not unseal now: its PCR policy is not satisfied") {
			t.Errorf("%s: the report does not name PCR 7:\n%s", b.Pin, text)
		}
	}
	t.Logf("PCR 7 extended after boot, policy on 7,11:\n%s", text)
}

// TestExplainLUKS: -d explains a volume's tpm2 bindings, read as tether
// luks list reads them.
func TestExplainLUKS(t *testing.T) {
	bt := bootTPM(t)
	b := newBed(t)
	img := b.image("vault")
	b.bind(img, "tpm2", `{"pcr_ids":"7"}`)
	bt.extend(t, 7)
	text, j := bt.explain(t, nil, "-d", img)
	if len(j.Bindings) != 1 || j.Bindings[0].Source != "keyslot 1" || !equalInts(j.Bindings[0].Changed, 7) || len(j.PCRs) != 1 {
		t.Fatalf("bindings %+v, PCRs %d", j.Bindings, len(j.PCRs))
	}
	if !strings.Contains(text, "keyslot 1: tpm2(sha256:7)") {
		t.Errorf("report:\n%s", text)
	}
	_, errOut, code := testenv.Run(t, nil, bt.bin, "tpm", "explain", "--event-log", bt.logFile, "-d", img, "-s", "0")
	if code != 1 || !strings.Contains(string(errOut), "keyslot 0 of "+img+" has no tpm2 binding") || !strings.Contains(string(errOut), "tether luks list -d") {
		t.Errorf("-s 0 (the passphrase): exit %d\n%s", code, errOut)
	}
}

// TestExplainErrors: what cannot be read is an error that says what to
// do; no TPM is not one (the log is shown alone).
func TestExplainErrors(t *testing.T) {
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	b := eventlogtest.New()
	eventlogtest.Boot(b, false, eventlogtest.Cert(t, "k"))
	logFile := filepath.Join(dir, "log.bin")
	os.WriteFile(logFile, b.Bytes(), 0o644)
	notLog := filepath.Join(dir, "log.yaml")
	os.WriteFile(notLog, []byte("---\nversion: 1\nevents:\n"), 0o644)
	tangJWE := filepath.Join(dir, "tang.jwe")
	// A tang JWE's header (the payload is never read).
	os.WriteFile(tangJWE, []byte("eyJhbGciOiJFQ0RILUVTIiwiY2xldmlzIjp7InBpbiI6InRhbmciLCJ0YW5nIjp7fX0sImVuYyI6IkEyNTZHQ00ifQ..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA"), 0o644)
	t.Setenv(tpm.EnvTools, "device:"+filepath.Join(dir, "no-tpm"))
	t.Setenv(tpm.EnvTCTI, "")

	for _, c := range []struct {
		args       []string
		code       int
		err, hint  string
		wantStdout string
	}{
		{[]string{"--event-log", filepath.Join(dir, "nonexistent")}, 1, "read the TCG event log: open " + dir + "/nonexistent: no such file or directory", "a copy of /sys/kernel/security/tpm0/binary_bios_measurements", ""},
		{[]string{"--event-log", notLog}, 1, notLog + ": not a TCG event log: ", "not tpm2_eventlog's YAML", ""},
		{[]string{"--event-log", logFile, "--jwe", tangJWE}, 1, tangJWE + " is a tang JWE with no tpm2 part", "--pcr-ids", ""},
		{[]string{"--event-log", logFile, "--bank", "md5"}, 2, `--bank "md5": want sha1, sha256, sha384 or sha512`, "tether tpm explain --help", ""},
		{[]string{"--event-log", logFile, "--pcr-ids", "24"}, 2, `--pcr-ids "24"`, "", ""},
		{[]string{"--event-log", logFile, "--jwe", "x", "-d", "y"}, 2, "give --jwe FILE or -d DEV, not both", "", ""},
		{[]string{"--event-log", logFile, "-s", "1"}, 2, "-s SLOT needs -d DEV", "", ""},
		{[]string{"--event-log", logFile, "--bank", "sha384"}, 0, "", "", "cannot be replayed: the event log has no sha384 digests (it has sha1, sha256)"},
		// No TPM here: the log alone, with a note.
		{[]string{"--event-log", logFile, "--pcr-ids", "7"}, 0, "", "", "SecureBoot = 0 (off)"},
	} {
		out, errOut, code := testenv.Run(t, nil, bin, append([]string{"tpm", "explain"}, c.args...)...)
		e := string(errOut)
		if code != c.code || (c.err != "" && !strings.Contains(e, "tether: error: "+c.err)) ||
			(c.hint != "" && !strings.Contains(e, "tether: hint: ") || !strings.Contains(e, c.hint)) ||
			!strings.Contains(string(out), c.wantStdout) || (c.code != 0 && len(out) > 0) {
			t.Errorf("tpm explain %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), code, out, e)
		}
		if c.code == 0 && c.wantStdout == "SecureBoot = 0 (off)" && !strings.Contains(e, "no TPM at device:") {
			t.Errorf("no TPM: stderr does not say so: %s", e)
		}
	}
	// --no-tpm: quietly.
	_, errOut, code := testenv.Run(t, nil, bin, "tpm", "explain", "--event-log", logFile, "--no-tpm")
	if code != 0 || len(errOut) != 0 {
		t.Errorf("--no-tpm: exit %d, stderr %s", code, errOut)
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func equalInts(got []int, want ...int) bool { return slices.Equal(got, want) }

// policyKey writes an ECDSA P-256 key for signed PCR policies, as openssl
// genpkey would, and its public half; it returns their file names.
func policyKey(t *testing.T, dir string) (key, pub string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	key, pub = filepath.Join(dir, "policy.pem"), filepath.Join(dir, "policy.pub.pem")
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
	return key, pub
}
