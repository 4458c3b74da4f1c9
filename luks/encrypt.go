package luks

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/pin"
)

// ReduceSize is the room tether luks encrypt needs at the end of a device:
// the data moves by half of it to make room for a LUKS2 header (16 MiB with
// its keyslot area), the other half holds the moved chunk while it is
// encrypted. cryptsetup's documentation uses the same value.
const ReduceSize = 32 << 20

// NewRecoveryPassphrase returns a recovery passphrase for a person to
// write down: 160 random bits as eight groups of four lowercase base32
// characters. Its entropy makes key stretching pointless, so, like the
// machine keys (and systemd-cryptenroll's recovery keys), it gets a cheap
// PBKDF2 keyslot.
func NewRecoveryPassphrase() []byte {
	b := make([]byte, 20)
	rand.Read(b)
	s := strings.ToLower(base32.StdEncoding.EncodeToString(b))
	clear(b)
	var out []byte
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			out = append(out, '-')
		}
		out = append(out, s[i:i+4]...)
	}
	return out
}

// encryptState is what a resumed tether luks encrypt needs: it is written
// (root only) before cryptsetup starts and removed when the volume is bound
// and the temporary key is gone.
type encryptState struct {
	Device   string `json:"device"`
	UUID     string `json:"uuid"`
	TempKey  string `json:"temp_key"`
	Recovery string `json:"recovery"`
}

// EncryptOptions are the inputs of Encrypt.
type EncryptOptions struct {
	Pin    string
	Config json.RawMessage
	// Force skips the check that the last 32 MiB of the device are free
	// (for content tether cannot measure; only ext2/3/4 is measured).
	Force bool
	// Recovery receives the recovery passphrase, once, at the end.
	Recovery io.Writer
	// Progress receives cryptsetup's progress lines.
	Progress io.Writer
}

// NotEncryptableError explains why a device cannot be encrypted in place.
type NotEncryptableError struct{ Reason, Hint string }

func (e *NotEncryptableError) Error() string { return e.Reason }

// Encrypt encrypts the existing data of a device or image file in place
// (cryptsetup reencrypt --encrypt --reduce-device-size 32M) under a
// temporary key, then adds a recovery passphrase, binds the volume to the
// pin, removes the temporary key and writes the recovery passphrase to
// o.Recovery. Run again after an interruption at any point, it carries on
// where it stopped. It returns the bound keyslot.
func (v *Volume) Encrypt(ctx context.Context, o EncryptOptions) (int, error) {
	unlock, err := v.lock()
	if err != nil {
		return -1, err
	}
	defer unlock()
	abs, err := filepath.Abs(v.Path)
	if err != nil {
		return -1, err
	}
	// cryptsetup reencrypt runs in the state directory (for its temporary
	// header file): give it an absolute path.
	v.Path = abs
	h, herr := v.Header()
	st, stPath, err := v.findEncryptState(abs, h)
	if err != nil {
		return -1, err
	}
	fi, err := os.Stat(v.Path)
	if err != nil {
		return -1, err
	}
	offline := fi.Mode().IsRegular()
	switch {
	case errors.Is(herr, ErrNotLUKS):
		if st == nil {
			if err := checkEncryptable(v.Path, o.Force); err != nil {
				return -1, err
			}
			st = &encryptState{Device: abs, UUID: newUUID(), TempKey: string(NewPassphrase()), Recovery: string(NewRecoveryPassphrase())}
			stPath = filepath.Join(v.stateDir(), "encrypt-"+st.UUID+".json")
			data, _ := json.Marshal(st)
			if err := atomicfile.Write(stPath, data, 0o600); err != nil {
				return -1, fmt.Errorf("save the encryption state: %w", err)
			}
			crashpoint("encrypt:state")
		} else {
			v.logf("restarting an encryption of %s that was interrupted before it changed anything", v.Path)
		}
		v.logf("encrypting %s in place; this rewrites all of it", v.Path)
		err := v.Runner.EncryptInPlace(ctx, v.Path, v.stateDir(), []byte(st.TempKey), fmt.Sprint(ReduceSize),
			FormatOptions{KDF: MachineKDF(""), UUID: st.UUID}, o.Progress)
		if err != nil {
			return -1, fmt.Errorf("encrypt %s: %w", v.Path, err)
		}
	case herr != nil:
		return -1, herr
	case st == nil && h.Reencrypting():
		return -1, &NotEncryptableError{
			Reason: "the volume's encryption or reencryption is unfinished, and tether did not start it (no state in " + v.stateDir() + ")",
			Hint:   "finish it with cryptsetup reencrypt --resume-only " + v.Path,
		}
	case st == nil:
		return -1, &NotEncryptableError{Reason: v.Path + " is already a LUKS2 volume", Hint: "bind it with tether luks bind -d " + v.Path + " PIN CONFIG"}
	case h.Reencrypting():
		v.logf("resuming the interrupted encryption of %s", v.Path)
		if err := v.resume(ctx, []byte(st.TempKey), offline, o.Progress); err != nil {
			return -1, err
		}
	}
	os.Remove(filepath.Join(v.stateDir(), "LUKS2-temp-"+st.UUID+".new"))
	crashpoint("encrypt:encrypted")
	slot, err := v.finishEncrypt(ctx, st, o)
	if err != nil {
		return -1, err
	}
	if o.Recovery != nil {
		if _, err := io.WriteString(o.Recovery, st.Recovery+"\n"); err != nil {
			return slot, err
		}
	}
	crashpoint("encrypt:printed")
	os.Remove(stPath)
	return slot, nil
}

// resume finishes an interrupted reencryption, running cryptsetup's crash
// recovery first when it asks for it.
func (v *Volume) resume(ctx context.Context, key []byte, offline bool, progress io.Writer) error {
	err := v.Runner.ResumeReencrypt(ctx, v.Path, v.stateDir(), 0, key, offline, progress)
	var ce *CryptsetupError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, "repair") {
		v.logf("running cryptsetup's crash recovery (cryptsetup repair) first")
		if err := v.Runner.Repair(ctx, v.Path, key); err != nil {
			return fmt.Errorf("recover the interrupted encryption: %w", err)
		}
		err = v.Runner.ResumeReencrypt(ctx, v.Path, v.stateDir(), 0, key, offline, progress)
	}
	if err != nil {
		if h, herr := v.Header(); herr == nil && !h.Reencrypting() {
			return nil // recovery finished it
		}
		if errors.As(err, &ce) && strings.Contains(ce.Stderr, "Failed to set device segments") {
			// Seen with cryptsetup 2.6.1 offline: killed after the last
			// chunk was written but before the header was finalised. All
			// data is encrypted; only cryptsetup can clear the mark.
			return &NotEncryptableError{
				Reason: fmt.Sprintf("cryptsetup cannot resume the encryption of %s: it was interrupted in its final step, which this cryptsetup version cannot redo offline (%s)", v.Path, strings.TrimSpace(ce.Stderr)),
				Hint:   "all data is encrypted under the temporary key kept in " + v.stateDir() + ": do not delete it; a newer cryptsetup may finish the step (then run this command again to bind)",
			}
		}
		return fmt.Errorf("resume the encryption of %s: %w", v.Path, err)
	}
	return nil
}

// finishEncrypt adds the recovery keyslot, binds, and removes the
// temporary keyslot 0. Each step checks whether an earlier run did it.
func (v *Volume) finishEncrypt(ctx context.Context, st *encryptState, o EncryptOptions) (int, error) {
	h, err := v.repair(ctx)
	if err != nil {
		return -1, err
	}
	temp, recovery := []byte(st.TempKey), []byte(st.Recovery)
	tempLive := slotActive(h, 0) && v.Runner.TestKey(ctx, v.Path, 0, temp) == nil
	bound := map[int]bool{}
	for _, b := range Bindings(h) {
		bound[b.Slot] = true
	}
	recSlot := -1
	for _, s := range h.Slots() {
		if !bound[s] && v.Runner.TestKey(ctx, v.Path, s, recovery) == nil {
			recSlot = s
			break
		}
	}
	if recSlot < 0 {
		if !tempLive {
			return -1, errors.New("neither the temporary key nor the recovery passphrase opens the volume any more")
		}
		if recSlot = h.FreeSlot(); recSlot < 0 {
			return -1, errors.New("all 32 keyslots are in use")
		}
		if err := v.Runner.AddKey(ctx, v.Path, 0, temp, recSlot, recovery, MachineKDF(h.VolumeHash())); err != nil {
			return -1, fmt.Errorf("add the recovery keyslot: %w", err)
		}
		if err := v.Runner.TestKey(ctx, v.Path, recSlot, recovery); err != nil {
			return -1, fmt.Errorf("the recovery keyslot does not open: %w", err)
		}
		crashpoint("encrypt:recovery")
		if h, err = v.Header(); err != nil {
			return -1, err
		}
	}
	slot := -1
	if bs := Bindings(h); len(bs) > 0 {
		slot = bs[0].Slot
	} else {
		// Bind with the recovery passphrase: the temporary key may be
		// gone already if an earlier run died after removing it.
		pass := NewPassphrase()
		defer clear(pass)
		j, err := pin.Encrypt(ctx, o.Pin, o.Config, pass, v.PinOptions)
		if err != nil {
			return -1, err
		}
		if slot, err = v.bind(ctx, h, bindStep{key: recovery, keySlot: recSlot, slot: -1, pass: pass, jwe: j, op: "bind"}); err != nil {
			return -1, err
		}
		if h, err = v.Header(); err != nil {
			return -1, err
		}
	}
	if tempLive && recSlot != 0 {
		if err := v.killSlot(ctx, h, 0); err != nil {
			return -1, fmt.Errorf("remove the temporary keyslot 0: %w", err)
		}
		crashpoint("encrypt:killtemp")
	}
	return slot, nil
}

// findEncryptState returns the saved state of an unfinished encryption of
// this device: by UUID once it has a LUKS2 header, else by path.
func (v *Volume) findEncryptState(abs string, h *Header) (*encryptState, string, error) {
	files, _ := filepath.Glob(filepath.Join(v.stateDir(), "encrypt-*.json"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, "", err
		}
		var st encryptState
		if err := json.Unmarshal(data, &st); err != nil {
			return nil, "", fmt.Errorf("%s: %w", f, err)
		}
		if (h != nil && st.UUID == h.UUID) || (h == nil && st.Device == abs) {
			return &st, f, nil
		}
	}
	return nil, "", nil
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

// checkEncryptable makes sure that encrypting dev in place loses nothing:
// it must not be mounted, and its last 32 MiB must be unused.
func checkEncryptable(dev string, force bool) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if size < 2*ReduceSize {
		return &NotEncryptableError{Reason: fmt.Sprintf("%s is too small to encrypt in place (%d MiB; at least 64 MiB)", dev, size>>20)}
	}
	if m := mountedAt(dev); m != "" {
		return &NotEncryptableError{Reason: fmt.Sprintf("%s is mounted on %s", dev, m), Hint: "unmount it first (encrypt the root filesystem from an initramfs or a rescue system)"}
	}
	fsSize, kind := filesystemSize(f)
	limit := size - ReduceSize
	switch {
	case fsSize > limit:
		return &NotEncryptableError{
			Reason: fmt.Sprintf("the %s filesystem on %s fills it: the last 32 MiB must be free for the LUKS2 header", kind, dev),
			Hint:   fmt.Sprintf("shrink it first: e2fsck -f %s && resize2fs %s %dK", dev, dev, limit>>10),
		}
	case fsSize == 0 && !force:
		return &NotEncryptableError{
			Reason: fmt.Sprintf("cannot tell whether the last 32 MiB of %s are unused (only ext2/3/4 filesystems are measured)", dev),
			Hint:   "shrink what is on it by 32 MiB, then run again with --force",
		}
	}
	return nil
}

// filesystemSize returns the size of an ext2/3/4 filesystem at the start
// of r, or 0 if there is none.
func filesystemSize(r io.ReaderAt) (int64, string) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return 0, ""
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, ""
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
	if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	logBlock := binary.LittleEndian.Uint32(sb[0x18:])
	if logBlock > 6 {
		return 0, ""
	}
	return int64(blocks) << (10 + logBlock), "ext4"
}

// mountedAt returns where a block device is mounted, or "".
func mountedAt(dev string) string {
	real, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return ""
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 || !strings.HasPrefix(fields[0], "/") {
			continue
		}
		if r, err := filepath.EvalSymlinks(fields[0]); err == nil && r == real {
			return fields[1]
		}
	}
	return ""
}

// CreateOptions are the inputs of Create.
type CreateOptions struct {
	Size   int64
	FS     string // "" or "ext4"
	Pin    string
	Config json.RawMessage
	// Recovery receives the recovery passphrase, once.
	Recovery io.Writer
	// Progress receives progress lines of long work.
	Progress io.Writer
}

// Create makes v.Path a new LUKS2 container file of o.Size bytes, with a
// recovery passphrase in keyslot 0 and a binding to the pin, and
// optionally an ext4 filesystem inside. The file must not exist. With a
// filesystem and no device-mapper, the filesystem is made in the plain
// file first and then encrypted in place (which rewrites the whole file
// once); on failure the new file is removed.
func (v *Volume) Create(ctx context.Context, o CreateOptions) (slot int, err error) {
	if o.FS != "" && o.FS != "ext4" {
		return -1, fmt.Errorf("unsupported filesystem %q (tether makes ext4)", o.FS)
	}
	if o.Size < 2*ReduceSize {
		return -1, fmt.Errorf("size %d MiB is too small: a LUKS2 container needs at least 64 MiB", o.Size>>20)
	}
	f, err := os.OpenFile(v.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return -1, err
	}
	defer func() {
		if err != nil {
			os.Remove(v.Path)
			if abs, aerr := filepath.Abs(v.Path); aerr == nil {
				if _, f, _ := v.findEncryptState(abs, nil); f != "" {
					os.Remove(f)
				}
			}
		}
	}()
	err = f.Truncate(o.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return -1, err
	}
	if o.FS == "ext4" && !DeviceMapperAvailable() {
		v.logf("device-mapper is not available: making the filesystem first, then encrypting the file in place")
		if out, err := runCmd(ctx, "mkfs.ext4", "-q", "-F", v.Path, fmt.Sprintf("%dK", (o.Size-ReduceSize)>>10)); err != nil {
			return -1, fmt.Errorf("mkfs.ext4: %v: %s", err, out)
		}
		return v.Encrypt(ctx, EncryptOptions{Pin: o.Pin, Config: o.Config, Recovery: o.Recovery, Progress: o.Progress})
	}
	unlock, err := v.lock()
	if err != nil {
		return -1, err
	}
	defer unlock()
	recovery := NewRecoveryPassphrase()
	defer clear(recovery)
	if err := v.Runner.Format(ctx, v.Path, recovery, FormatOptions{KDF: MachineKDF("")}); err != nil {
		return -1, err
	}
	h, err := v.Header()
	if err != nil {
		return -1, err
	}
	pass := NewPassphrase()
	defer clear(pass)
	j, err := pin.Encrypt(ctx, o.Pin, o.Config, pass, v.PinOptions)
	if err != nil {
		return -1, err
	}
	if slot, err = v.bind(ctx, h, bindStep{key: recovery, keySlot: 0, slot: -1, pass: pass, jwe: j, op: "bind"}); err != nil {
		return -1, err
	}
	if o.FS == "ext4" {
		name := "tether-create-" + h.UUID[:8]
		if err := v.Runner.Open(ctx, v.Path, name, slot, pass); err != nil {
			return -1, err
		}
		out, merr := runCmd(ctx, "mkfs.ext4", "-q", "/dev/mapper/"+name)
		if err := v.Runner.Close(context.WithoutCancel(ctx), name); err != nil && merr == nil {
			merr = err
		}
		if merr != nil {
			return -1, fmt.Errorf("mkfs.ext4: %v: %s", merr, out)
		}
	}
	if o.Recovery != nil {
		if _, err := fmt.Fprintf(o.Recovery, "%s\n", recovery); err != nil {
			return slot, err
		}
	}
	return slot, nil
}

func runCmd(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}
