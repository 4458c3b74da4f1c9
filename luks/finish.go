package luks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// cryptsetup 2.6.1 cannot resume an offline encryption that was killed
// after its last chunk was written but before it rewrote the metadata for
// the finished state: "Failed to set device segments for next reencryption
// hotzone". In that state every byte of data is encrypted (the segments say
// so: the only data segment is the final crypt segment); only the
// bookkeeping of the reencryption is left in the header. tether writes the
// metadata cryptsetup would have written, in a header backup file, and has
// cryptsetup restore it. The keyslot area of the backup is the device's
// own, byte for byte, so whichever copy a crash during the restore leaves
// on the device opens with the same key.

// finishedEncryptionJSON returns the JSON metadata of h as cryptsetup
// leaves it after a completed encryption, if h is an encryption stopped
// after its last chunk; otherwise an error says why not.
func finishedEncryptionJSON(h *Header) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(h.JSON))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	keyslots, _ := m["keyslots"].(map[string]any)
	segments, _ := m["segments"].(map[string]any)
	digests, _ := m["digests"].(map[string]any)
	config, _ := m["config"].(map[string]any)
	if keyslots == nil || segments == nil || digests == nil || config == nil {
		return nil, errors.New("incomplete metadata")
	}
	reenc := map[string]bool{}
	for id, k := range keyslots {
		k, _ := k.(map[string]any)
		if k["type"] == "reencrypt" {
			if k["mode"] != "encrypt" {
				return nil, fmt.Errorf("keyslot %s: a reencryption in mode %v, not an encryption", id, k["mode"])
			}
			reenc[id] = true
		}
	}
	if len(reenc) == 0 {
		return nil, errors.New("no reencryption keyslot")
	}
	// Segment 0 must be the only one in use and equal the final one.
	var final map[string]any
	for id, s := range segments {
		s, _ := s.(map[string]any)
		flags := segmentFlags(s)
		switch {
		case slices.Contains(flags, "backup-final"):
			final = s
		case id == "0" && len(flags) == 0:
		case slices.ContainsFunc(flags, func(f string) bool { return strings.HasPrefix(f, "backup-") }):
		default:
			return nil, fmt.Errorf("segment %s is still in use: data is left to encrypt", id)
		}
	}
	seg0, _ := segments["0"].(map[string]any)
	if final == nil || seg0 == nil || seg0["type"] != "crypt" {
		return nil, errors.New("the data segment is not the final encrypted segment yet")
	}
	for _, k := range []string{"type", "offset", "size", "iv_tweak", "encryption", "sector_size"} {
		if fmt.Sprint(seg0[k]) != fmt.Sprint(final[k]) {
			return nil, fmt.Errorf("the data segment's %s differs from the final segment's: data is left to encrypt", k)
		}
	}
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	ks := map[string]any{}
	for id, k := range keyslots {
		if !reenc[id] {
			ks[id] = k
		}
	}
	out["keyslots"] = ks
	out["segments"] = map[string]any{"0": seg0}
	ds := map[string]any{}
	for id, dg := range digests {
		dg, _ := dg.(map[string]any)
		var slots []any
		for _, s := range asList(dg["keyslots"]) {
			if !reenc[fmt.Sprint(s)] {
				slots = append(slots, s)
			}
		}
		if len(slots) == 0 {
			continue // the reencryption keyslot's digest
		}
		segs := []any{}
		if slices.ContainsFunc(asList(dg["segments"]), func(s any) bool { return s == "0" }) {
			segs = append(segs, "0")
		}
		n := map[string]any{}
		for k, v := range dg {
			n[k] = v
		}
		n["keyslots"], n["segments"] = slots, segs
		ds[id] = n
	}
	out["digests"] = ds
	cfg := map[string]any{}
	for k, v := range config {
		cfg[k] = v
	}
	if req, ok := config["requirements"].(map[string]any); ok {
		var keep []any
		for _, r := range asList(req["mandatory"]) {
			if !strings.HasPrefix(fmt.Sprint(r), "online-reencrypt") {
				keep = append(keep, r)
			}
		}
		if len(keep) == 0 {
			delete(cfg, "requirements")
		} else {
			cfg["requirements"] = map[string]any{"mandatory": keep}
		}
	}
	out["config"] = cfg
	return json.Marshal(out)
}

func segmentFlags(s map[string]any) []string {
	var out []string
	for _, f := range asList(s["flags"]) {
		out = append(out, fmt.Sprint(f))
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

// rewriteHeaderJSON replaces the JSON metadata of both header copies in
// a header backup file made by cryptsetup luksHeaderBackup, with a
// sequence id above both old ones and fresh checksums.
func rewriteHeaderJSON(path string, js []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	old, err := ReadHeader(f)
	if err != nil {
		return fmt.Errorf("read the header backup: %w", err)
	}
	hs := old.HdrSize
	if int64(len(js)) >= hs-binHeaderSize {
		return errors.New("the new metadata does not fit the JSON area")
	}
	buf := make([]byte, 2*hs)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return err
	}
	var seq uint64
	for _, off := range []int64{0, hs} {
		if s := binary.BigEndian.Uint64(buf[off+16 : off+24]); s > seq {
			seq = s
		}
	}
	for _, off := range []int64{0, hs} {
		c := buf[off : off+hs]
		binary.BigEndian.PutUint64(c[16:24], seq+1)
		area := c[binHeaderSize:]
		clear(area)
		copy(area, js)
		clear(c[csumOffset : csumOffset+csumLen])
		sum := sha256.Sum256(c)
		copy(c[csumOffset:], sum[:])
	}
	if _, err := f.WriteAt(buf, 0); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if _, err := ReadHeader(f); err != nil {
		return fmt.Errorf("the rewritten header does not read back: %w", err)
	}
	return nil
}

// completeEncryption writes the finished-encryption metadata of h to the
// device (see finishedEncryptionJSON) and checks that key still opens
// keyslot 0. The header backup it goes through holds keyslot 0, so it
// lives in the volume's work directory and is removed at once.
func (v *Volume) completeEncryption(ctx context.Context, h *Header, key []byte, work string) error {
	js, err := finishedEncryptionJSON(h)
	if err != nil {
		return err
	}
	backup := filepath.Join(work, "final-"+h.UUID+".header")
	os.Remove(backup)
	defer os.Remove(backup)
	if err := v.Runner.HeaderBackup(ctx, v.Path, backup); err != nil {
		return fmt.Errorf("back up the header: %w", err)
	}
	if err := os.Chmod(backup, 0o600); err != nil {
		return err
	}
	if err := rewriteHeaderJSON(backup, js); err != nil {
		return err
	}
	crashpoint("encrypt:finalheader")
	if err := v.Runner.HeaderRestore(ctx, v.Path, backup); err != nil {
		return fmt.Errorf("write the finished header: %w", err)
	}
	if err := v.Runner.TestKey(ctx, v.Path, 0, key); err != nil {
		return fmt.Errorf("the temporary key does not open the finished header: %w", err)
	}
	return nil
}
