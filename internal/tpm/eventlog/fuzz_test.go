package eventlog_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tether-nbde/tether/internal/tpm/eventlog"
	"github.com/tether-nbde/tether/internal/tpm/eventlog/eventlogtest"
)

// FuzzParse: no log, however it lies, makes Parse, Replay or Describe
// panic, and a description stays one bounded line. Seeded with logs
// written as firmware writes them and with real firmware's
// (testdata/README).
func FuzzParse(f *testing.F) {
	f.Add(bootLog(f).Bytes())
	b := eventlogtest.New("sha256")
	eventlogtest.Boot(b, false, testCert(f, "seed"))
	f.Add(b.Bytes())
	f.Add(legacyLog([]byte("grub_cmd: linux /vmlinuz"), []byte("/vmlinuz")))
	for _, name := range []string{"ubuntu_2104_shielded_vm_no_secure_boot_eventlog", "sb_cert_eventlog"} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := eventlog.Parse(data)
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
