package luks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
)

// The LUKS2 on-disk format (cryptsetup's docs/on-disk-format-luks2.pdf):
// two copies of a 4096-byte binary header, each followed by its JSON
// metadata area; hdr_size counts both (16 KiB by default). The primary
// copy is at offset 0, the secondary at offset hdr_size. Each copy carries
// a checksum over binary header + JSON area with the checksum field
// zeroed, and a sequence id: the copy with the higher valid seqid wins.
const (
	binHeaderSize = 4096
	magicLen      = 6
	csumOffset    = 448
	csumLen       = 64
	// maxHdrSize is the largest hdr_size LUKS2 allows (4 MiB metadata).
	maxHdrSize = 4 << 20
)

var (
	magic1 = []byte("LUKS\xba\xbe")
	magic2 = []byte("SKUL\xba\xbe")
	// secondaryOffsets are where cryptsetup looks for the secondary header
	// when the primary is damaged: every valid hdr_size.
	secondaryOffsets = []int64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}
)

// ErrNotLUKS is returned for a device that carries no LUKS header.
var ErrNotLUKS = errors.New("not a LUKS device (no LUKS header found)")

// ErrLUKS1 is returned for a LUKS1 device: tether handles LUKS2 only.
var ErrLUKS1 = errors.New("this is a LUKS1 volume; tether supports LUKS2 only")

// Header is a parsed LUKS2 header: the binary header fields tether needs
// and the JSON metadata.
type Header struct {
	Version int
	HdrSize int64 // binary header + JSON area, per copy
	SeqID   uint64
	Label   string
	UUID    string
	// Subsystem is the binary header's subsystem label. tether luks
	// encrypt keeps its temporary key there while it runs (docs/LUKS.md).
	Subsystem string
	CsumAlg   string
	JSON      []byte // the JSON metadata text, without padding
	Metadata  Metadata
	// Warnings lists problems found that did not stop parsing, such as a
	// damaged secondary copy.
	Warnings []string
}

// Metadata is the JSON area of a LUKS2 header.
type Metadata struct {
	Keyslots map[string]Keyslot `json:"keyslots"`
	Tokens   map[string]Token   `json:"tokens"`
	Segments map[string]Segment `json:"segments"`
	Digests  map[string]Digest  `json:"digests"`
	Config   Config             `json:"config"`
}

// Keyslot is one LUKS2 keyslot.
type Keyslot struct {
	Type     string `json:"type"`
	KeySize  int    `json:"key_size"`
	Priority *int   `json:"priority,omitempty"` // 0 ignore, 1 normal (default), 2 high
	KDF      KDF    `json:"kdf"`
	Area     struct {
		Type       string `json:"type"`
		Offset     Uint64 `json:"offset"`
		Size       Uint64 `json:"size"`
		Encryption string `json:"encryption"`
		KeySize    int    `json:"key_size"`
	} `json:"area"`
}

// KDF is a keyslot's key derivation function.
type KDF struct {
	Type       string `json:"type"` // pbkdf2, argon2i, argon2id
	Hash       string `json:"hash,omitempty"`
	Iterations int    `json:"iterations,omitempty"` // pbkdf2
	Time       int    `json:"time,omitempty"`       // argon2
	Memory     int    `json:"memory,omitempty"`     // argon2, KiB
	CPUs       int    `json:"cpus,omitempty"`       // argon2
	Salt       string `json:"salt"`
}

// Token is one LUKS2 token. Raw keeps the whole object, since each token
// type has its own members.
type Token struct {
	Type     string   `json:"type"`
	Keyslots []string `json:"keyslots"`
	Raw      json.RawMessage
}

// UnmarshalJSON keeps the raw token next to the common members.
func (t *Token) UnmarshalJSON(b []byte) error {
	var c struct {
		Type     string   `json:"type"`
		Keyslots []string `json:"keyslots"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	t.Type, t.Keyslots, t.Raw = c.Type, c.Keyslots, append(json.RawMessage(nil), b...)
	return nil
}

// Segment is one LUKS2 data segment.
type Segment struct {
	Type       string   `json:"type"`
	Offset     Uint64   `json:"offset"`
	Size       string   `json:"size"` // a number or "dynamic"
	IVTweak    Uint64   `json:"iv_tweak"`
	Encryption string   `json:"encryption"`
	SectorSize int      `json:"sector_size"`
	Flags      []string `json:"flags"`
}

// Digest is one LUKS2 digest: it verifies the volume key of the keyslots
// and segments it lists.
type Digest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations int      `json:"iterations"`
}

// Config is the config section of the JSON area.
type Config struct {
	JSONSize     Uint64   `json:"json_size"`
	KeyslotsSize Uint64   `json:"keyslots_size"`
	Flags        []string `json:"flags"`
	Requirements struct {
		Mandatory []string `json:"mandatory"`
	} `json:"requirements"`
}

// Uint64 is a 64-bit number that LUKS2 stores as a decimal string.
type Uint64 uint64

// UnmarshalJSON accepts the string form LUKS2 uses.
func (u *Uint64) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a number in a string: %w", err)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return err
	}
	*u = Uint64(v)
	return nil
}

// ReadHeaderFile reads the LUKS2 header of a device or image file.
func ReadHeaderFile(path string) (*Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := ReadHeader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// ReadHeader reads and checks a LUKS2 header. Both copies are verified
// when present; the valid copy with the higher sequence id is returned, as
// cryptsetup does. A LUKS1 header gives ErrLUKS1.
func ReadHeader(r io.ReaderAt) (*Header, error) {
	primary, perr := readCopy(r, 0, magic1)
	if errors.Is(perr, ErrLUKS1) {
		return nil, perr
	}
	var secondary *Header
	var serr error
	if primary != nil {
		secondary, serr = readCopy(r, primary.HdrSize, magic2)
	} else {
		// The primary copy is damaged: look for the secondary where any
		// valid hdr_size would have put it.
		serr = ErrNotLUKS
		for _, off := range secondaryOffsets {
			if secondary, serr = readCopy(r, off, magic2); secondary != nil {
				break
			}
		}
	}
	switch {
	case primary == nil && secondary == nil:
		if errors.Is(perr, ErrNotLUKS) {
			return nil, perr
		}
		return nil, fmt.Errorf("LUKS2 header is damaged: %w", perr)
	case primary == nil:
		secondary.Warnings = append(secondary.Warnings, "primary header copy is damaged: "+perr.Error())
		return secondary, nil
	case secondary == nil:
		primary.Warnings = append(primary.Warnings, "secondary header copy is damaged: "+serr.Error())
		return primary, nil
	case secondary.SeqID > primary.SeqID:
		secondary.Warnings = append(secondary.Warnings, "primary header copy is older than the secondary")
		return secondary, nil
	case secondary.SeqID < primary.SeqID:
		primary.Warnings = append(primary.Warnings, "secondary header copy is older than the primary")
	}
	return primary, nil
}

// readCopy reads and verifies one header copy at off.
func readCopy(r io.ReaderAt, off int64, magic []byte) (*Header, error) {
	bin := make([]byte, binHeaderSize)
	if n, err := r.ReadAt(bin, off); n < binHeaderSize {
		if err == nil || err == io.EOF {
			return nil, ErrNotLUKS
		}
		return nil, fmt.Errorf("read header: %w", err)
	}
	if !bytes.Equal(bin[:magicLen], magic) {
		return nil, ErrNotLUKS
	}
	h := &Header{Version: int(binary.BigEndian.Uint16(bin[6:8]))}
	switch h.Version {
	case 2:
	case 1:
		return nil, ErrLUKS1
	default:
		return nil, fmt.Errorf("unsupported LUKS version %d", h.Version)
	}
	size := binary.BigEndian.Uint64(bin[8:16])
	if size < 0x4000 || size > maxHdrSize || size&(size-1) != 0 {
		return nil, fmt.Errorf("invalid header size %d", size)
	}
	h.HdrSize = int64(size)
	h.SeqID = binary.BigEndian.Uint64(bin[16:24])
	h.Label = cstring(bin[24:72])
	h.CsumAlg = cstring(bin[72:104])
	h.UUID = cstring(bin[168:208])
	h.Subsystem = cstring(bin[208:256])
	if hdrOff := binary.BigEndian.Uint64(bin[256:264]); hdrOff != uint64(off) {
		return nil, fmt.Errorf("header copy at %d says it is at %d", off, hdrOff)
	}
	area := make([]byte, h.HdrSize-binHeaderSize)
	if n, err := r.ReadAt(area, off+binHeaderSize); n < len(area) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read JSON area: %w", err)
	}
	if h.CsumAlg != "sha256" {
		return nil, fmt.Errorf("unsupported header checksum algorithm %q", h.CsumAlg)
	}
	sum := sha256.New()
	zeroed := append([]byte(nil), bin...)
	clear(zeroed[csumOffset : csumOffset+csumLen])
	sum.Write(zeroed)
	sum.Write(area)
	want := bin[csumOffset : csumOffset+sha256.Size]
	if !bytes.Equal(sum.Sum(nil), want) {
		return nil, errors.New("header checksum mismatch")
	}
	end := bytes.IndexByte(area, 0)
	if end < 0 {
		end = len(area)
	}
	h.JSON = area[:end:end]
	if err := json.Unmarshal(h.JSON, &h.Metadata); err != nil {
		return nil, fmt.Errorf("parse JSON metadata: %w", err)
	}
	if err := h.Metadata.check(h.HdrSize); err != nil {
		return nil, fmt.Errorf("JSON metadata: %w", err)
	}
	return h, nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// check validates what tether relies on.
func (m *Metadata) check(hdrSize int64) error {
	if m.Keyslots == nil || m.Segments == nil || m.Digests == nil || m.Tokens == nil {
		return errors.New("missing keyslots, tokens, segments or digests")
	}
	if int64(m.Config.JSONSize) != hdrSize-binHeaderSize {
		return fmt.Errorf("config.json_size %d does not match the header size %d", m.Config.JSONSize, hdrSize)
	}
	for id := range m.Keyslots {
		if _, err := slotID(id); err != nil {
			return fmt.Errorf("keyslot %q: %w", id, err)
		}
	}
	for id, t := range m.Tokens {
		if _, err := slotID(id); err != nil {
			return fmt.Errorf("token %q: %w", id, err)
		}
		if t.Type == "" {
			return fmt.Errorf("token %s has no type", id)
		}
		for _, k := range t.Keyslots {
			if _, err := slotID(k); err != nil {
				return fmt.Errorf("token %s: keyslot %q: %w", id, k, err)
			}
		}
	}
	return nil
}

// MaxSlots is the number of keyslot and token ids LUKS2 has.
const MaxSlots = 32

func slotID(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= MaxSlots || strconv.Itoa(n) != s {
		return 0, errors.New("not an id between 0 and 31")
	}
	return n, nil
}

// Slots returns the active keyslot ids in order.
func (h *Header) Slots() []int { return ids(h.Metadata.Keyslots) }

// TokenIDs returns the token ids in order.
func (h *Header) TokenIDs() []int { return ids(h.Metadata.Tokens) }

func ids[V any](m map[string]V) []int {
	var out []int
	for k := range m {
		if n, err := slotID(k); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

// Keyslot returns keyslot n, if active.
func (h *Header) Keyslot(n int) (Keyslot, bool) {
	k, ok := h.Metadata.Keyslots[strconv.Itoa(n)]
	return k, ok
}

// Token returns token n, if present.
func (h *Header) Token(n int) (Token, bool) {
	t, ok := h.Metadata.Tokens[strconv.Itoa(n)]
	return t, ok
}

// FreeSlot returns the lowest unused keyslot id, or -1.
func (h *Header) FreeSlot() int {
	for i := 0; i < MaxSlots; i++ {
		if _, ok := h.Keyslot(i); !ok {
			return i
		}
	}
	return -1
}

// FreeToken returns the lowest unused token id, or -1.
func (h *Header) FreeToken() int {
	for i := 0; i < MaxSlots; i++ {
		if _, ok := h.Token(i); !ok {
			return i
		}
	}
	return -1
}

// TokensFor returns the ids of the tokens that list keyslot n.
func (h *Header) TokensFor(n int) []int {
	var out []int
	s := strconv.Itoa(n)
	for _, id := range h.TokenIDs() {
		t, _ := h.Token(id)
		for _, k := range t.Keyslots {
			if k == s {
				out = append(out, id)
				break
			}
		}
	}
	return out
}

// VolumeHash returns the hash of the digest that covers segment 0, the
// hash clevis and systemd-cryptenroll give the keyslots they add.
func (h *Header) VolumeHash() string {
	for _, id := range ids(h.Metadata.Digests) {
		d := h.Metadata.Digests[strconv.Itoa(id)]
		for _, s := range d.Segments {
			if s == "0" && d.Hash != "" {
				return d.Hash
			}
		}
	}
	return "sha256"
}

// JSONFree returns how many bytes of the JSON area are still unused.
func (h *Header) JSONFree() int {
	return int(h.Metadata.Config.JSONSize) - len(h.JSON)
}

// Reencrypting reports whether an offline reencryption (or encryption) is
// unfinished: cryptsetup marks it as a mandatory requirement.
func (h *Header) Reencrypting() bool {
	for _, r := range h.Metadata.Config.Requirements.Mandatory {
		if len(r) >= len("online-reencrypt") && r[:len("online-reencrypt")] == "online-reencrypt" {
			return true
		}
	}
	for _, s := range h.Metadata.Keyslots {
		if s.Type == "reencrypt" {
			return true
		}
	}
	return false
}
