package eventlog_test

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-attestation/attest"
	"github.com/tether-nbde/tether/internal/tpm/eventlog"
	"github.com/tether-nbde/tether/internal/tpm/eventlog/eventlogtest"
)

// FuzzParse: no log, however it lies, makes Parse, Replay or Describe
// panic, and a description stays one bounded line; what go-attestation's
// parser takes, Parse takes alike (sameAsAttest). Seeded with logs
// written as firmware writes them and with real firmware's (realLog).
func FuzzParse(f *testing.F) {
	f.Add(bootLog(f).Bytes())
	b := eventlogtest.New("sha256")
	eventlogtest.Boot(b, false, testCert(f, "seed"))
	f.Add(b.Bytes())
	f.Add(legacyLog([]byte("grub_cmd: linux /vmlinuz"), []byte("/vmlinuz")))
	sm3 := eventlogtest.New("sha256", "sm3_256")
	eventlogtest.Boot(sm3, true, testCert(f, "seed"))
	f.Add(sm3.Bytes())
	for _, name := range []string{"ubuntu_2104_shielded_vm_no_secure_boot_eventlog", "sb_cert_eventlog"} {
		f.Add(realLog(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := eventlog.Parse(data)
		sameAsAttest(t, data, l, err)
		if err != nil {
			return
		}
		for _, e := range l.Events {
			d := e.Describe()
			if utf8.RuneCountInString(d) > 160 || strings.ContainsAny(d, "\n\r\x00") {
				t.Fatalf("event %d: description %q is not one short line", e.Num, d)
			}
			_ = e.TypeName()
		}
		for _, bank := range append(l.Banks, "sha256") {
			for _, p := range l.PCRs() {
				r, err := l.Replay(bank, p)
				if err != nil {
					continue
				}
				if len(r.Value) != eventlog.BankSize(bank) {
					t.Fatalf("%s PCR %d: %d-byte value", bank, p, len(r.Value))
				}
			}
		}
	})
}

// TestParseAllocation: length fields that claim more than the log holds
// (an event of 4 GiB, 2^31 digests, 2^32 algorithms) cost no more memory
// than the bytes that are there.
func TestParseAllocation(t *testing.T) {
	good := bootLog(t).Bytes()
	specData := bytes.Index(good, []byte("Spec ID Event03"))
	lies := map[string][]byte{}
	huge := append([]byte{}, good...)
	binary.LittleEndian.PutUint32(huge[specData+37+8+4+2+20+2+32:], 0xffffffff) // first event's data size
	lies["event size"] = huge
	digests := append([]byte{}, good...)
	binary.LittleEndian.PutUint32(digests[specData+37+8:], 0xffffffff) // first event's digest count
	lies["digest count"] = digests
	algs := append([]byte{}, good...)
	binary.LittleEndian.PutUint32(algs[specData+24:], 0xffffffff) // the Spec ID event's algorithm count
	lies["algorithm count"] = algs
	for name, data := range lies {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := eventlog.Parse(data)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%s: parsed", name)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Errorf("%s: parsing a %d-byte log allocated %d bytes", name, len(data), n)
		}
	}
}

// sameAsAttest holds Parse to go-attestation's parser, the reference
// (linked into the tests only, see the package documentation): a log it
// takes, Parse takes, with the same events, PCRs, types, data and digests,
// and Replay's values are those attest's own replay verifies. Parse may
// take more: digests of banks attest cannot hash (SM3), which it refuses.
func sameAsAttest(t *testing.T, data []byte, l *eventlog.Log, err error) {
	t.Helper()
	ref, refErr := attest.ParseEventLog(data)
	if refErr != nil {
		return
	}
	if err != nil {
		t.Fatalf("go-attestation parses the log, Parse does not: %v", err)
	}
	for _, b := range l.Banks {
		if eventlog.BankSize(b) == 0 {
			// attest truncates algorithm IDs to a byte: its banks
			// cannot be compared with the log's then.
			return
		}
	}
	algs := map[string]attest.HashAlg{"sha1": attest.HashSHA1, "sha256": attest.HashSHA256, "sha384": attest.HashSHA384, "sha512": attest.HashSHA512}
	for _, bank := range l.Banks {
		evs := ref.Events(algs[bank])
		if len(evs) != len(l.Events) {
			t.Fatalf("%d events, go-attestation %d", len(l.Events), len(evs))
		}
		for i, e := range evs {
			g := l.Events[i]
			if g.PCR != e.Index || g.Type != uint32(e.Type) || !bytes.Equal(g.Data, e.Data) || !bytes.Equal(g.Digest(bank), e.Digest) {
				t.Fatalf("event %d: PCR %d, type %#x, data %x, %s digest %x; go-attestation: %d, %#x, %x, %x",
					g.Num, g.PCR, g.Type, g.Data, bank, g.Digest(bank), e.Index, uint32(e.Type), e.Data, e.Digest)
			}
		}
		var pcrs []attest.PCR
		for _, p := range l.PCRs() {
			r, err := l.Replay(bank, p)
			if err != nil {
				continue
			}
			pcrs = append(pcrs, attest.PCR{Index: p, Digest: r.Value, DigestAlg: eventlogHash(bank)})
		}
		if len(pcrs) > 0 {
			if _, err := ref.Verify(pcrs); err != nil {
				t.Fatalf("go-attestation does not verify the %s values Replay gives: %v", bank, err)
			}
		}
	}
}

func eventlogHash(bank string) crypto.Hash {
	return map[string]crypto.Hash{"sha1": crypto.SHA1, "sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}[bank]
}
