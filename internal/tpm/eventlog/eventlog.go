// Package eventlog reads the TCG event log that the firmware, and the boot
// loaders after it, leave beside the TPM, replays it per PCR, and says in
// words what each event measured: which events made a PCR's value, and so
// why a PCR policy broke (tether tpm explain).
//
// The log is parsed by go-attestation (attest.ParseEventLog), which reads
// the crypto-agile TCG_PCR_EVENT2 format that TPM 2.0 firmware writes and
// the SHA1-only format of TPM 1.2 firmware; this package adds the replay
// (which must not stop at a mismatch, as attest's Verify does) and the
// descriptions (UEFI variables, boot applications' paths, text).
//
// The log is untrusted bytes, possibly from another machine: nothing here
// panics on it, trusts a length field beyond the bytes that are there, or
// allocates more than a small multiple of its size (FuzzParse).
package eventlog

import (
	"bytes"
	"crypto"
	_ "crypto/sha1" // the banks' hashes, registered for crypto.Hash.New
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/google/go-attestation/attest"
)

// DefaultPath is where Linux shows the firmware's event log of the first
// TPM, with securityfs mounted.
const DefaultPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// MaxSize bounds what Read reads: real logs are tens of kilobytes, a few
// hundred with many boot loader events.
const MaxSize = 8 << 20

// Event types named in the TCG PC Client Platform Firmware Profile
// (section 10.4.1) that this package treats specially.
const (
	EvNoAction                   = 0x00000003
	EvSeparator                  = 0x00000004
	EvEFIVariableDriverConfig    = 0x80000001
	EvEFIVariableBoot            = 0x80000002
	EvEFIBootServicesApplication = 0x80000003
	EvEFIBootServicesDriver      = 0x80000004
	EvEFIRuntimeServicesDriver   = 0x80000005
	EvEFIGPTEvent                = 0x80000006
	EvEFIPlatformFirmwareBlob    = 0x80000008
	EvEFIPlatformFirmwareBlob2   = 0x8000000A
	EvEFIVariableBoot2           = 0x8000000C
	EvEFIVariableAuthority       = 0x800000E0
	EvEventTag                   = 0x00000006
	EvIPL                        = 0x0000000D
)

// Event is one measurement of the log.
type Event struct {
	// Num is the event's place in the log, counted as tpm2_eventlog
	// counts it: in a crypto-agile log the Spec ID event is 0 and the
	// first measurement 1.
	Num  int
	PCR  int
	Type uint32
	// Digests are the event's digests, one per bank; an event may
	// lack a bank the log declares.
	Digests []Digest
	// Data is the event data: what was measured, or a description of
	// it. Firmware does not always hash Data itself (a boot
	// application's digest is the image's, its data the image's path),
	// and nothing checks that the two agree.
	Data []byte
}

// Log is a parsed event log.
type Log struct {
	// Agile says the log is in the crypto-agile format (TCG_PCR_EVENT2,
	// after a Spec ID Event03); otherwise it is the SHA1-only format of
	// TPM 1.2 firmware.
	Agile bool
	// Banks are the digest algorithms the log declares, e.g. sha1,
	// sha256 (just sha1 for a SHA1-only log).
	Banks []string
	// Events are the measurements, in log order, without the Spec ID
	// event.
	Events []Event
}

var bankNames = map[attest.HashAlg]string{
	attest.HashSHA1:   "sha1",
	attest.HashSHA256: "sha256",
	attest.HashSHA384: "sha384",
	attest.HashSHA512: "sha512",
}

var bankAlgs = map[string]attest.HashAlg{
	"sha1":   attest.HashSHA1,
	"sha256": attest.HashSHA256,
	"sha384": attest.HashSHA384,
	"sha512": attest.HashSHA512,
}

var bankHashes = map[string]crypto.Hash{
	"sha1":   crypto.SHA1,
	"sha256": crypto.SHA256,
	"sha384": crypto.SHA384,
	"sha512": crypto.SHA512,
}

// specID is the signature of the crypto-agile log's first event, at
// offset 32 of the log (after a TCG_PCR_EVENT header with a SHA-1
// digest and the event size).
var specID = []byte("Spec ID Event03\x00")

// ErrNotLog is returned for bytes that are not an event log.
var ErrNotLog = errors.New("not a TCG event log")

// Parse parses an event log.
func Parse(data []byte) (*Log, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: it is empty", ErrNotLog)
	}
	el, err := attest.ParseEventLog(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotLog, err)
	}
	l := &Log{Agile: len(data) >= 48 && bytes.Equal(data[32:48], specID)}
	for _, a := range el.Algs {
		name, ok := bankNames[a]
		if !ok {
			name = fmt.Sprintf("alg%#x", uint8(a))
		}
		if !slices.Contains(l.Banks, name) {
			l.Banks = append(l.Banks, name)
		}
	}
	first := 0
	if l.Agile {
		first = 1
	}
	// attest gives each bank's digests in a list of its own, in log
	// order (every event, with or without that bank's digest): zip
	// them into one event each.
	for i, e := range el.Events(attest.HashSHA1) {
		l.Events = append(l.Events, Event{Num: first + i, PCR: e.Index, Type: uint32(e.Type), Data: e.Data})
	}
	for _, bank := range l.Banks {
		a, ok := bankAlgs[bank]
		if !ok {
			continue
		}
		for i, e := range el.Events(a) {
			if i < len(l.Events) && e.Digest != nil {
				l.Events[i].Digests = append(l.Events[i].Digests, Digest{Bank: bank, Value: e.Digest})
			}
		}
	}
	return l, nil
}

// Digest is one of an event's digests.
type Digest struct {
	Bank  string // "sha256"
	Value []byte
}

// Digest returns the event's digest in bank, nil if it has none.
func (e Event) Digest(bank string) []byte {
	for _, d := range e.Digests {
		if d.Bank == bank {
			return d.Value
		}
	}
	return nil
}

// Read reads and parses the event log in file name (DefaultPath for the
// running machine's). The errors of os.Open are kept (errors.Is
// os.ErrNotExist, os.ErrPermission).
func Read(name string) (*Log, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// securityfs files have no size: read to the end, within a bound.
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%s: %w: it is larger than %d MiB", name, ErrNotLog, MaxSize>>20)
	}
	l, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

// PCRs returns the PCRs (0 to 23) the log extends, sorted.
func (l *Log) PCRs() []int {
	var out []int
	for _, e := range l.Events {
		if e.Type != EvNoAction && e.PCR >= 0 && e.PCR <= 23 && !slices.Contains(out, e.PCR) {
			out = append(out, e.PCR)
		}
	}
	slices.Sort(out)
	return out
}

// Replay is the value a PCR has after the log's events, and the events
// that made it.
type Replay struct {
	PCR    int
	Bank   string
	Value  []byte
	Events []Event
	// Locality is the locality TPM2_Startup came from, if the log says
	// (a StartupLocality event, PCR 0 only): PCR 0 starts from it.
	Locality int
}

// Replay computes the value of PCR pcr in bank from the log: the PCR's
// value at TPM reset, extended with each of its events' digests in log
// order. EV_NO_ACTION events extend nothing.
func (l *Log) Replay(bank string, pcr int) (*Replay, error) {
	h, ok := bankHashes[bank]
	if !ok {
		return nil, fmt.Errorf("unknown PCR bank %q (want sha1, sha256, sha384 or sha512)", bank)
	}
	if !slices.Contains(l.Banks, bank) {
		if !l.Agile {
			return nil, fmt.Errorf("the event log is in the SHA1-only format of TPM 1.2 firmware: it has no %s digests; "+
				"explain it in the sha1 bank (--bank sha1)", bank)
		}
		return nil, fmt.Errorf("the event log has no %s digests (it has %s): the firmware does not measure into the %s bank; "+
			"explain it in one of those", bank, strings.Join(l.Banks, ", "), bank)
	}
	r := &Replay{PCR: pcr, Bank: bank, Value: make([]byte, h.Size())}
	if pcr >= 17 && pcr <= 22 {
		// The dynamic (DRTM) PCRs start as all ones until a late
		// launch resets them.
		for i := range r.Value {
			r.Value[i] = 0xff
		}
	}
	for _, e := range l.Events {
		if e.PCR != pcr {
			continue
		}
		if e.Type == EvNoAction {
			// The TPM was started from locality L: PCR 0 starts at
			// 00…0L (PC Client Platform Firmware Profile, 10.4.5.3).
			if pcr == 0 && len(r.Events) == 0 && len(e.Data) == 17 && bytes.HasPrefix(e.Data, []byte("StartupLocality\x00")) {
				r.Locality = int(e.Data[16])
				r.Value[len(r.Value)-1] = e.Data[16]
			}
			continue
		}
		d := e.Digest(bank)
		if d == nil {
			return nil, fmt.Errorf("event %d (PCR %d, %s) has no %s digest: the log cannot be replayed in that bank", e.Num, e.PCR, TypeName(e.Type), bank)
		}
		if len(d) != h.Size() {
			return nil, fmt.Errorf("event %d (PCR %d) has a %d-byte %s digest", e.Num, e.PCR, len(d), bank)
		}
		hh := h.New()
		hh.Write(r.Value)
		hh.Write(d)
		r.Value = hh.Sum(nil)
		r.Events = append(r.Events, e)
	}
	return r, nil
}

// BankSize is the digest size of a bank, 0 for an unknown one.
func BankSize(bank string) int {
	if h, ok := bankHashes[bank]; ok {
		return h.Size()
	}
	return 0
}
