// Package eventlogtest writes TCG event logs for tests, as UEFI firmware
// writes them (crypto-agile TCG_PCR_EVENT2 events after a SHA1-format
// Spec ID Event03, TCG PC Client Platform Firmware Profile 10.2), and
// extends the same digests into a TPM, as the firmware does, so that a
// replay of the log must equal the TPM's PCRs.
package eventlogtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"math/big"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/google/go-tpm/tpm2"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/eventlog"
)

// Event is one event of a log being written.
type Event struct {
	PCR     int
	Type    uint32
	Data    []byte
	Digests map[string][]byte // by bank
}

// Builder writes a log.
type Builder struct {
	Banks  []string // in the Spec ID event's order
	events []Event
}

var algIDs = map[string]uint16{"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D, "sm3_256": 0x0012}

// hashes hash each bank's digests. Go has no SM3: its digests are
// SHA-256's, of the right size, which no TPM here checks.
var hashes = map[string]crypto.Hash{"sha1": crypto.SHA1, "sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512,
	"sm3_256": crypto.SHA256}

// New starts a log with digests in banks (sha1 and sha256 if none are
// given, as most PC firmware measures).
func New(banks ...string) *Builder {
	if len(banks) == 0 {
		banks = []string{"sha1", "sha256"}
	}
	return &Builder{Banks: banks}
}

// Measure adds an event whose digests are the banks' hashes of measured:
// what the firmware hashed (an image, a variable), which may differ from
// the event's data (for a boot application, its path). With measured nil
// the data itself is hashed.
func (b *Builder) Measure(pcr int, typ uint32, data, measured []byte) Event {
	if measured == nil {
		measured = data
	}
	e := Event{PCR: pcr, Type: typ, Data: data, Digests: map[string][]byte{}}
	for _, bank := range b.Banks {
		h := hashes[bank].New()
		h.Write(measured)
		e.Digests[bank] = h.Sum(nil)
	}
	b.events = append(b.events, e)
	return e
}

// Add adds an event as it is.
func (b *Builder) Add(e Event) { b.events = append(b.events, e) }

// Events returns the events added so far.
func (b *Builder) Events() []Event { return b.events }

// Bytes returns the log.
func (b *Builder) Bytes() []byte {
	var out bytes.Buffer
	le := func(v any) { binary.Write(&out, binary.LittleEndian, v) }
	// The Spec ID event: a TCG_PCR_EVENT (SHA-1 format) of type
	// EV_NO_ACTION on PCR 0 holding a TCG_EfiSpecIDEvent.
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	binary.Write(&spec, binary.LittleEndian, struct {
		PlatformClass                 uint32
		Minor, Major, Errata, UintnSz uint8
		NumAlgs                       uint32
	}{0, 0, 2, 2, 2, uint32(len(b.Banks))})
	for _, bank := range b.Banks {
		binary.Write(&spec, binary.LittleEndian, [2]uint16{algIDs[bank], uint16(hashes[bank].Size())})
	}
	spec.WriteByte(0) // no vendor info
	le(uint32(0))
	le(uint32(eventlog.EvNoAction))
	out.Write(make([]byte, 20))
	le(uint32(spec.Len()))
	out.Write(spec.Bytes())
	for _, e := range b.events {
		le(uint32(e.PCR))
		le(e.Type)
		n := 0
		for _, bank := range b.Banks {
			if e.Digests[bank] != nil {
				n++
			}
		}
		le(uint32(n))
		for _, bank := range b.Banks {
			if d := e.Digests[bank]; d != nil {
				le(algIDs[bank])
				out.Write(d)
			}
		}
		le(uint32(len(e.Data)))
		out.Write(e.Data)
	}
	return out.Bytes()
}

// ExtendInto extends every event's digests into the TPM, in log order,
// as the firmware does when it measures: afterwards a replay of the log
// equals the PCRs (of the banks the TPM has). EV_NO_ACTION events extend
// nothing.
func (b *Builder) ExtendInto(t testing.TB, tp *tpm.TPM) {
	t.Helper()
	for _, e := range b.events {
		if e.Type == eventlog.EvNoAction {
			continue
		}
		Extend(t, tp, e.PCR, e.Digests)
	}
}

// Extend extends PCR pcr with the given digests (by bank) in one
// TPM2_PCR_Extend: what a measurement the log does not record does.
func Extend(t testing.TB, tp *tpm.TPM, pcr int, digests map[string][]byte) {
	t.Helper()
	var vals []tpm2.TPMTHA
	for bank, d := range digests {
		alg, err := tpm.HashAlg(bank)
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, tpm2.TPMTHA{HashAlg: alg, Digest: d})
	}
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: vals},
	}.Execute(tp.Transport())
	if err != nil {
		t.Fatalf("extend PCR %d: %v", pcr, err)
	}
}

// Digests returns the banks' hashes of data.
func (b *Builder) Digests(data []byte) map[string][]byte {
	out := map[string][]byte{}
	for _, bank := range b.Banks {
		h := hashes[bank].New()
		h.Write(data)
		out[bank] = h.Sum(nil)
	}
	return out
}

// GUIDs of the variables a boot measures, in UEFI's byte order.
var (
	GlobalVariable = guid(0x8be4df61, 0x93ca, 0x11d2, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c)
	ImageSecurity  = guid(0xd719b2cb, 0x3d3a, 0x4596, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f)
	certX509       = guid(0xa5c059a1, 0x94e4, 0x4aa7, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72)
)

func guid(a uint32, b, c uint16, d ...byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, a)
	out = binary.LittleEndian.AppendUint16(out, b)
	out = binary.LittleEndian.AppendUint16(out, c)
	return append(out, d...)
}

func ucs2(s string) []byte {
	var out []byte
	for _, c := range utf16.Encode([]rune(s)) {
		out = binary.LittleEndian.AppendUint16(out, c)
	}
	return out
}

// Variable is UEFI_VARIABLE_DATA: what an EV_EFI_VARIABLE_* event holds
// and, for EV_EFI_VARIABLE_DRIVER_CONFIG, what the firmware hashes.
func Variable(vendor []byte, name string, data []byte) []byte {
	out := append([]byte{}, vendor...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len([]rune(name))))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(data)))
	out = append(out, ucs2(name)...)
	return append(out, data...)
}

// SignatureList is an EFI_SIGNATURE_LIST of X.509 certificates (DER),
// as db and KEK hold them.
func SignatureList(certs ...[]byte) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, certX509...)
		out = binary.LittleEndian.AppendUint32(out, uint32(28+16+len(c)))
		out = binary.LittleEndian.AppendUint32(out, 0)
		out = binary.LittleEndian.AppendUint32(out, uint32(16+len(c)))
		out = append(out, make([]byte, 16)...) // owner
		out = append(out, c...)
	}
	return out
}

// Image is UEFI_IMAGE_LOAD_EVENT for an image loaded from path (a
// device path of one file path node).
func Image(path string) []byte {
	node := append(ucs2(path), 0, 0)
	dp := []byte{4, 4}
	dp = binary.LittleEndian.AppendUint16(dp, uint16(4+len(node)))
	dp = append(dp, node...)
	dp = append(dp, 0x7f, 0xff, 4, 0) // end of the device path
	out := make([]byte, 24)           // address, length and link address: unused here
	binary.LittleEndian.PutUint64(out[8:], 1<<20)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(dp)))
	return append(out, dp...)
}

// Separator is the data of an EV_SEPARATOR (no error).
func Separator() []byte { return []byte{0, 0, 0, 0} }

// Boot writes the log of a typical UEFI Secure Boot into b: the firmware
// (PCR 0), the Secure Boot state and keys (7), the boot variables (1),
// the separators (0 to 7), the boot disk's GPT (5), shim and grub (4),
// grub's commands and files (8, 9). certDER is the certificate in PK,
// KEK and db.
func Boot(b *Builder, secureBoot bool, certDER []byte) {
	sb := []byte{0}
	if secureBoot {
		sb = []byte{1}
	}
	b.Measure(0, 0x00000008, ucs2("tether test firmware 1.0\x00"), nil)   // EV_S_CRTM_VERSION
	b.Measure(0, 0x80000008, make([]byte, 16), []byte("firmware volume")) // EV_EFI_PLATFORM_FIRMWARE_BLOB
	for _, v := range []struct {
		vendor []byte
		name   string
		data   []byte
	}{
		{GlobalVariable, "SecureBoot", sb},
		{GlobalVariable, "PK", SignatureList(certDER)},
		{GlobalVariable, "KEK", SignatureList(certDER)},
		{ImageSecurity, "db", SignatureList(certDER)},
		{ImageSecurity, "dbx", nil},
	} {
		b.Measure(7, eventlog.EvEFIVariableDriverConfig, Variable(v.vendor, v.name, v.data), nil)
	}
	b.Measure(7, eventlog.EvSeparator, Separator(), nil)
	b.Measure(1, eventlog.EvEFIVariableBoot, Variable(GlobalVariable, "BootOrder", []byte{1, 0}), nil)
	b.Measure(4, 0x80000007, []byte("Calling EFI Application from Boot Option"), nil) // EV_EFI_ACTION
	for _, pcr := range []int{0, 1, 2, 3, 4, 5, 6} {
		b.Measure(pcr, eventlog.EvSeparator, Separator(), nil)
	}
	b.Measure(5, eventlog.EvEFIGPTEvent, make([]byte, 100), nil)
	b.Measure(4, eventlog.EvEFIBootServicesApplication, Image(`\EFI\debian\shimx64.efi`), []byte("shimx64.efi 15.8"))
	if secureBoot {
		var sig []byte
		sig = append(sig, make([]byte, 16)...)
		sig = append(sig, certDER...)
		b.Measure(7, eventlog.EvEFIVariableAuthority, Variable(ImageSecurity, "db", sig), nil)
	}
	b.Measure(4, eventlog.EvEFIBootServicesApplication, Image(`\EFI\debian\grubx64.efi`), []byte("grubx64.efi 2.12"))
	b.Measure(9, eventlog.EvIPL, []byte("(hd0,gpt1)/boot/grub/grub.cfg\x00"), []byte("grub.cfg"))
	b.Measure(8, eventlog.EvIPL, []byte("grub_cmd: linux /vmlinuz-6.12.0 root=/dev/mapper/root ro\x00"), nil)
	b.Measure(9, eventlog.EvIPL, []byte("/vmlinuz-6.12.0\x00"), []byte("vmlinuz-6.12.0"))
	b.Measure(5, 0x80000007, []byte("Exit Boot Services Invocation"), nil)
}

// Cert returns a self-signed certificate (DER) standing in for a Secure
// Boot key.
func Cert(t testing.TB, cn string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
