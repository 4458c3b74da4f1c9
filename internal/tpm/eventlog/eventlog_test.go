package eventlog_test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/tether-nbde/tether/internal/tpm/eventlog"
	"github.com/tether-nbde/tether/internal/tpm/eventlog/eventlogtest"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

func testCert(t testing.TB, cn string) []byte { return eventlogtest.Cert(t, cn) }

func bootLog(t testing.TB) *eventlogtest.Builder {
	b := eventlogtest.New()
	eventlogtest.Boot(b, true, testCert(t, "tether test platform key"))
	return b
}

// TestReplayEqualsTPM: the digests of a log written as firmware writes it,
// extended into a real TPM as firmware extends them, replay to the TPM's
// PCR values in both banks; a PCR the log does not touch replays to its
// reset value.
func TestReplayEqualsTPM(t *testing.T) {
	sw := tpmtest.Start(t)
	tp := sw.Open(t)
	b := bootLog(t)
	b.ExtendInto(t, tp)
	l, err := eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !l.Agile || strings.Join(l.Banks, ",") != "sha1,sha256" || len(l.Events) != len(b.Events()) {
		t.Fatalf("agile %v, banks %v, %d events; want crypto-agile sha1,sha256 with %d", l.Agile, l.Banks, len(l.Events), len(b.Events()))
	}
	if got := l.PCRs(); len(got) != 10 {
		t.Fatalf("PCRs %v, want 0 to 9", got)
	}
	for _, bank := range []string{"sha1", "sha256"} {
		pcrs := append(l.PCRs(), 10, 16)
		now, err := tp.ReadPCRs(bank, pcrs)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range pcrs {
			r, err := l.Replay(bank, p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Value, now[i]) {
				t.Errorf("%s PCR %d: replay %x, TPM %x", bank, p, r.Value, now[i])
			}
		}
	}
	// One more extend, which the log does not show: the replay no
	// longer equals the TPM.
	eventlogtest.Extend(t, tp, 7, b.Digests([]byte("not in the log")))
	now, _ := tp.ReadPCRs("sha256", []int{7})
	r, _ := l.Replay("sha256", 7)
	if bytes.Equal(r.Value, now[0]) {
		t.Fatal("the replay still equals PCR 7 after an extend the log does not show")
	}
}

// TestDescribe: what a person reads for each kind of event.
func TestDescribe(t *testing.T) {
	l, err := eventlog.Parse(bootLog(t).Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range l.Events {
		got = append(got, e.TypeName()+" "+e.Describe())
	}
	for _, want := range []string{
		"EV_S_CRTM_VERSION tether test firmware 1.0",
		"EV_EFI_PLATFORM_FIRMWARE_BLOB firmware volume at 0x0, 0 bytes",
		"EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot = 1 (on)",
		"EV_EFI_VARIABLE_DRIVER_CONFIG PK: 1 certificate(s) (CN=tether test platform key)",
		"EV_EFI_VARIABLE_DRIVER_CONFIG dbx: empty",
		"EV_SEPARATOR separator (end of this stage's measurements)",
		"EV_EFI_VARIABLE_BOOT BootOrder = Boot0001",
		"EV_EFI_ACTION Calling EFI Application from Boot Option",
		`EV_EFI_BOOT_SERVICES_APPLICATION \EFI\debian\shimx64.efi`,
		"EV_EFI_VARIABLE_AUTHORITY db: certificate CN=tether test platform key verified the next image",
		"EV_IPL grub_cmd: linux /vmlinuz-6.12.0 root=/dev/mapper/root ro",
	} {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("no event described as %q; got:\n%s", want, strings.Join(got, "\n"))
		}
	}
	if l.Events[0].Num != 1 {
		t.Errorf("first measurement is number %d, want 1 (the Spec ID event is 0)", l.Events[0].Num)
	}
}

// realLog reads an event log real firmware wrote, from go-attestation's
// test data in the module cache (go-attestation is this package's test
// reference, so "go mod download" fetched it): read in place, not copied
// into this repository. Its attest/testdata names the machines.
func realLog(t testing.TB, name string) []byte {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/google/go-attestation").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		t.Fatalf("find go-attestation's module (go mod download): %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "attest", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestRealLogs reads logs real firmware wrote: a Google Compute Engine
// shielded VM booting Ubuntu 21.04 with Secure Boot off, and a Secure
// Boot machine whose log names the certificates that verified each image
// (go-attestation's test data, realLog).
func TestRealLogs(t *testing.T) {
	for _, c := range []struct {
		file   string
		events int
		want   map[int]string // event number: description
		pcr7   string         // sha256 replay
	}{
		{"ubuntu_2104_shielded_vm_no_secure_boot_eventlog", 105, map[int]string{
			1:  "GCE Virtual Firmware v1",
			3:  "SecureBoot = 0 (off)",
			10: `Boot0003: ubuntu, \EFI\ubuntu\shimx64.efi`,
			23: `\EFI\ubuntu\shimx64.efi`,
			26: "SbatLevel = sbat,1,2021030218",
			96: "kernel_cmdline: /boot/vmlinuz-5.11.0-1006-gcp root=PARTUUID=6443a6ae-e5e9-4df7-9a06-d1329e50f33c ro console=ttyS0 panic=-1",
		}, "0d8847bc5eca06452df10e2f214363845c7ac11d47525a5474e225e72ce25dfe"},
		{"sb_cert_eventlog", 14, map[int]string{
			6:  "dbx: 77 SHA-256 hash(es)",
			8:  "db: certificate CN=Microsoft Corporation UEFI CA 2011 verified the next image",
			12: "Shim: certificate CN=Canonical Ltd. Master Certificate Authority verified the next image",
		}, "51b30488c9e6255d822bdc1b20d9a92c32bde6c3e7bc02bcdd32825eb5ef069a"},
	} {
		l, err := eventlog.Parse(realLog(t, c.file))
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Events) != c.events || !l.Agile {
			t.Errorf("%s: %d events, agile %v", c.file, len(l.Events), l.Agile)
		}
		for _, e := range l.Events {
			if want, ok := c.want[e.Num]; ok && e.Describe() != want {
				t.Errorf("%s: event %d is %q, want %q", c.file, e.Num, e.Describe(), want)
			}
		}
		r, err := l.Replay("sha256", 7)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex(r.Value); got != c.pcr7 {
			t.Errorf("%s: PCR 7 replays to %s, want %s", c.file, got, c.pcr7)
		}
	}
}

func hex(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

// TestStartupLocality: PCR 0 starts from the locality the log names.
func TestStartupLocality(t *testing.T) {
	b := eventlogtest.New("sha256")
	b.Add(eventlogtest.Event{PCR: 0, Type: eventlog.EvNoAction, Data: []byte("StartupLocality\x00\x03")})
	e := b.Measure(0, eventlog.EvSeparator, eventlogtest.Separator(), nil)
	l, err := eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Replay("sha256", 0)
	if err != nil {
		t.Fatal(err)
	}
	start := make([]byte, 32)
	start[31] = 3
	want := sha256.Sum256(append(start, e.Digests["sha256"]...))
	if !bytes.Equal(r.Value, want[:]) || r.Locality != 3 || len(r.Events) != 1 {
		t.Fatalf("replay %x (locality %d, %d events), want %x from locality 3", r.Value, r.Locality, len(r.Events), want)
	}
}

// legacyLog is a SHA1-only log as TPM 1.2 firmware writes it: TCG_PCR_EVENT
// entries and no Spec ID event.
func legacyLog(data ...[]byte) []byte {
	var out bytes.Buffer
	for _, d := range data {
		binary.Write(&out, binary.LittleEndian, [2]uint32{4, eventlog.EvIPL})
		h := sha1.Sum(d)
		out.Write(h[:])
		binary.Write(&out, binary.LittleEndian, uint32(len(d)))
		out.Write(d)
	}
	return out.Bytes()
}

// TestBadLogs: what is not a log, or cannot be replayed in a bank, is an
// error that says why; lying length fields are errors, not allocations.
func TestBadLogs(t *testing.T) {
	good := bootLog(t).Bytes()
	huge := append([]byte{}, good...)
	// The last event's data size, claiming 4 GiB.
	last := bytes.LastIndex(huge, []byte("Exit Boot Services Invocation"))
	binary.LittleEndian.PutUint32(huge[last-4:], 0xffffffff)
	manyDigests := bootLog(t).Bytes()
	// The first event follows the Spec ID event's 37 bytes of data
	// (two banks); its digest count follows its PCR and type.
	first := bytes.Index(manyDigests, []byte("Spec ID Event03")) + 37
	binary.LittleEndian.PutUint32(manyDigests[first+8:], 0x7fffffff)
	for name, data := range map[string][]byte{
		"empty":        nil,
		"text":         []byte("this is not an event log at all, just some text"),
		"truncated":    good[:len(good)-7],
		"huge event":   huge,
		"many digests": manyDigests,
		"spec ID only": good[:bytes.Index(good, []byte("Spec ID Event03"))+16],
	} {
		_, err := eventlog.Parse(data)
		if !errors.Is(err, eventlog.ErrNotLog) {
			t.Errorf("%s: err = %v, want ErrNotLog", name, err)
		}
		t.Logf("%s: %v", name, err)
	}

	l, err := eventlog.Parse(legacyLog([]byte("grub_cmd: linux /vmlinuz"), []byte("/vmlinuz")))
	if err != nil {
		t.Fatal(err)
	}
	if l.Agile || strings.Join(l.Banks, ",") != "sha1" || len(l.Events) != 2 || l.Events[0].Num != 0 {
		t.Fatalf("legacy log: agile %v, banks %v, %d events", l.Agile, l.Banks, len(l.Events))
	}
	if _, err := l.Replay("sha256", 4); err == nil || !strings.Contains(err.Error(), "SHA1-only format") || !strings.Contains(err.Error(), "--bank sha1") {
		t.Errorf("sha256 replay of a SHA1-only log: %v", err)
	}
	if _, err := l.Replay("sha1", 4); err != nil {
		t.Errorf("sha1 replay of a SHA1-only log: %v", err)
	}
	l, _ = eventlog.Parse(good)
	if _, err := l.Replay("sha384", 7); err == nil || !strings.Contains(err.Error(), "no sha384 digests (it has sha1, sha256)") {
		t.Errorf("sha384 replay: %v", err)
	}

	// An event without the bank's digest cannot be replayed in it.
	b := eventlogtest.New()
	b.Add(eventlogtest.Event{PCR: 7, Type: eventlog.EvSeparator, Data: eventlogtest.Separator(), Digests: b.Digests(nil)})
	b.Add(eventlogtest.Event{PCR: 7, Type: eventlog.EvSeparator, Data: eventlogtest.Separator(), Digests: map[string][]byte{"sha1": make([]byte, 20)}})
	l, err = eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Replay("sha256", 7); err == nil || !strings.Contains(err.Error(), "event 2 (PCR 7, EV_SEPARATOR) has no sha256 digest") {
		t.Errorf("replay with a missing digest: %v", err)
	}

	if _, err := eventlog.Read("testdata/no-such-log"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestSM3Bank: a log with an SM3-256 bank beside sha256 (firmware measures
// into every active bank) is read and replays in sha256; go-attestation
// refuses it whole, which is why the parser is tether's own.
func TestSM3Bank(t *testing.T) {
	b := eventlogtest.New("sha256", "sm3_256")
	eventlogtest.Boot(b, true, testCert(t, "k"))
	l, err := eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(l.Banks, ",") != "sha256,sm3_256" {
		t.Errorf("banks %v", l.Banks)
	}
	if _, err := l.Replay("sha256", 7); err != nil {
		t.Errorf("sha256 replay: %v", err)
	}
	if _, err := l.Replay("sm3_256", 7); err == nil || !strings.Contains(err.Error(), "cannot compute sm3_256 digests") {
		t.Errorf("sm3_256 replay: %v, want a refusal naming the bank", err)
	}
	if _, err := attest.ParseEventLog(b.Bytes()); err == nil {
		t.Error("go-attestation now reads SM3 banks: its parser could replace ours (docs/TPM2.md, section 6)")
	}
}
