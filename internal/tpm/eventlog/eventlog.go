// Package eventlog reads the TCG event log that the firmware, and the boot
// loaders after it, leave beside the TPM, replays it per PCR, and says in
// words what each event measured: which events made a PCR's value, and so
// why a PCR policy broke (tether tpm explain).
//
// It reads the crypto-agile format TPM 2.0 firmware writes (TCG PC Client
// Platform Firmware Profile 10.2: a SHA1-format Spec ID Event03 listing the
// banks and their digest sizes, then TCG_PCR_EVENT2 events with one digest
// per bank) and the SHA1-only format of TPM 1.2 firmware. The parser is
// this package's own, held to go-attestation's (attest.ParseEventLog) by
// FuzzParse in the tests: attest refuses a whole log when a bank it lists
// is one attest cannot hash (SM3-256, which some firmware measures into
// beside sha256), and tether needs none of the rest of it (docs/TPM2.md,
// section 6).
//
// The log is untrusted bytes, possibly from another machine: nothing here
// panics on it, trusts a length field beyond the bytes that are there, or
// allocates more than a small multiple of its size (FuzzParse,
// TestParseAllocation). Events refer to the bytes given to Parse.
package eventlog

import (
	"bytes"
	"crypto"
	_ "crypto/sha1" // the banks' hashes, registered for crypto.Hash.New
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
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

// algNames are the TPM algorithm IDs of the hashes a log may declare.
var algNames = map[uint16]string{
	0x0004: "sha1",
	0x000B: "sha256",
	0x000C: "sha384",
	0x000D: "sha512",
	0x0012: "sm3_256",
	0x0027: "sha3_256",
	0x0028: "sha3_384",
	0x0029: "sha3_512",
}

func algName(id uint16) string {
	if n, ok := algNames[id]; ok {
		return n
	}
	return fmt.Sprintf("alg%#04x", id)
}

// bankHashes are the banks a log can be replayed in.
var bankHashes = map[string]crypto.Hash{
	"sha1":   crypto.SHA1,
	"sha256": crypto.SHA256,
	"sha384": crypto.SHA384,
	"sha512": crypto.SHA512,
}

// specIDSignature starts the data of the crypto-agile log's first event.
var specIDSignature = []byte("Spec ID Event03\x00")

// ErrNotLog is returned for bytes that are not an event log.
var ErrNotLog = errors.New("not a TCG event log")

// specAlg is a bank the Spec ID event declares, with its digest size.
type specAlg struct {
	id   uint16
	size int
}

// reader reads little-endian fields, failing once for good when the
// bytes run out.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%s: %d bytes, but only %d are left", what, n, len(r.b))
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8(what string) uint8 {
	if b := r.bytes(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(what string) uint16 {
	if b := r.bytes(2, what); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if b := r.bytes(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// sized reads a uint32 size and that many bytes.
func (r *reader) sized(what string) []byte {
	n := r.u32(what + " size")
	if r.err == nil && uint64(n) > uint64(len(r.b)) {
		r.err = fmt.Errorf("%s size (%d bytes) is greater than what is left of the log (%d bytes)", what, n, len(r.b))
		return nil
	}
	return r.bytes(int(n), what)
}

// Parse parses an event log.
func Parse(data []byte) (*Log, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: it is empty", ErrNotLog)
	}
	r := &reader{b: data}
	first := readEvent1(r)
	if r.err != nil {
		return nil, fmt.Errorf("%w: the first event: %v", ErrNotLog, r.err)
	}
	l := &Log{}
	var algs []specAlg
	// A first event of type EV_NO_ACTION long enough for a Spec ID
	// header must be one; go-attestation decides the same way.
	if first.Type == EvNoAction && len(first.Data) >= 28 {
		var err error
		if algs, err = parseSpecID(first.Data); err != nil {
			return nil, fmt.Errorf("%w: the Spec ID event: %v", ErrNotLog, err)
		}
		l.Agile = true
		for _, a := range algs {
			if n := algName(a.id); !slices.Contains(l.Banks, n) {
				l.Banks = append(l.Banks, n)
			}
		}
	} else {
		l.Banks = []string{"sha1"}
		l.Events = append(l.Events, first)
	}
	for num := len(l.Events) + boolInt(l.Agile); len(r.b) > 0; num++ {
		var e Event
		if l.Agile {
			e = readEvent2(r, algs)
		} else {
			e = readEvent1(r)
		}
		if r.err != nil {
			return nil, fmt.Errorf("%w: event %d: %v", ErrNotLog, num, r.err)
		}
		e.Num = num
		l.Events = append(l.Events, e)
	}
	return l, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readEvent1 reads a TCG_PCR_EVENT: PCR, type, a SHA-1 digest, sized
// data.
func readEvent1(r *reader) Event {
	e := Event{PCR: int(r.u32("PCR index")), Type: r.u32("event type")}
	d := r.bytes(20, "SHA-1 digest")
	e.Data = r.sized("event data")
	e.Digests = []Digest{{Bank: "sha1", Value: d}}
	return e
}

// readEvent2 reads a TCG_PCR_EVENT2: PCR, type, a count of digests, each
// an algorithm ID and a digest of the size the Spec ID event gives it,
// sized data.
func readEvent2(r *reader, algs []specAlg) Event {
	e := Event{PCR: int(r.u32("PCR index")), Type: r.u32("event type")}
	// The count is not trusted for an allocation: each digest takes at
	// least two bytes, so the bytes run out first.
	n := r.u32("digest count")
	for i := uint32(0); i < n && r.err == nil; i++ {
		id := r.u16("digest algorithm")
		size := -1
		for _, a := range algs {
			if a.id == id {
				size = a.size
			}
		}
		if r.err == nil && size <= 0 {
			r.err = fmt.Errorf("digest of algorithm %#04x, which the Spec ID event does not declare (or declares empty)", id)
		}
		if v := r.bytes(size, "digest"); r.err == nil {
			e.Digests = append(e.Digests, Digest{Bank: algName(id), Value: v})
		}
	}
	e.Data = r.sized("event data")
	return e
}

// parseSpecID reads a TCG_EfiSpecIDEvent: signature, platform class,
// version (2.0), errata, uintn size, the algorithms with their digest
// sizes, vendor information filling the rest.
func parseSpecID(b []byte) ([]specAlg, error) {
	r := &reader{b: b}
	if sig := r.bytes(16, "signature"); !bytes.Equal(sig, specIDSignature) {
		return nil, fmt.Errorf("signature %q, want %q (a SHA1-only log of TPM 1.2 firmware has \"Spec ID Event00\")", sig, specIDSignature)
	}
	r.u32("platform class")
	minor, major := r.u8("version"), r.u8("version")
	r.u8("errata")
	r.u8("uintn size")
	if major != 2 || minor != 0 {
		return nil, fmt.Errorf("version %d.%d, want 2.0", major, minor)
	}
	n := r.u32("algorithm count")
	if r.err == nil && uint64(n)*4 > uint64(len(r.b)) {
		return nil, fmt.Errorf("%d algorithms do not fit in %d bytes", n, len(r.b))
	}
	algs := make([]specAlg, 0, n)
	for i := uint32(0); i < n; i++ {
		algs = append(algs, specAlg{id: r.u16("algorithm"), size: int(r.u16("digest size"))})
	}
	vendor := int(r.u8("vendor information size"))
	if r.err != nil {
		return nil, r.err
	}
	if vendor != len(r.b) {
		return nil, fmt.Errorf("vendor information of %d bytes, but %d are left", vendor, len(r.b))
	}
	return algs, nil
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
	switch {
	case !ok && slices.Contains(l.Banks, bank):
		return nil, fmt.Errorf("tether cannot compute %s digests: explain the log in another of its banks (%s)", bank, strings.Join(l.Banks, ", "))
	case !ok:
		return nil, fmt.Errorf("unknown PCR bank %q (want sha1, sha256, sha384 or sha512)", bank)
	case !slices.Contains(l.Banks, bank):
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
