package luks

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/pin"
)

// ReduceSize is the room tether luks encrypt needs at the end of a device:
// the data moves by half of it to make room for a LUKS2 header (16 MiB with
// its keyslot area), the other half holds the moved chunk while it is
// encrypted. cryptsetup's documentation uses the same value.
const ReduceSize = 32 << 20

// MinEncryptSize is the smallest device tether luks encrypt takes: the
// 32 MiB it gives up, and at least the 16 MiB cryptsetup moves to the end
// first (smaller ones work with cryptsetup 2.6 too, but are not tested).
const MinEncryptSize = ReduceSize + 16<<20

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

// The temporary key of an unfinished tether luks encrypt lives in the
// LUKS2 header itself, in clear, as the subsystem label
// "tether-encrypt:KEY": cryptsetup writes it with the very first header
// write, and it stays wherever the partly encrypted data goes, across
// power cuts, whatever happens to the state directory (a tmpfs in an
// initramfs). cryptsetup refuses every metadata change (tokens included)
// while an encryption is unfinished, so the subsystem label, set when the
// header is made, is the one place that is there from the start. The
// key protects nothing while it is there (the data is partly plaintext,
// and whoever reads the header reads the key); the final step removes
// keyslot 0 and then clears the label. docs/LUKS.md says so to the user.
const tempKeyPrefix = "tether-encrypt:"

// newTempKey returns 192 random bits as 32 base64url characters: with
// the prefix, the 47 characters the 48-byte subsystem field holds.
func newTempKey() []byte {
	b := make([]byte, 24)
	rand.Read(b)
	out := []byte(base64.RawURLEncoding.EncodeToString(b))
	clear(b)
	return out
}

// tempKeyOf returns the temporary key kept in h by an unfinished tether
// luks encrypt.
func tempKeyOf(h *Header) ([]byte, bool) {
	k, ok := strings.CutPrefix(h.Subsystem, tempKeyPrefix)
	if !ok || k == "" {
		return nil, false
	}
	return []byte(k), true
}

// EncryptUnfinished reports whether h belongs to an unfinished tether
// luks encrypt: its temporary key is still in the header.
func EncryptUnfinished(h *Header) bool {
	_, ok := tempKeyOf(h)
	return ok
}

// encryptState is kept in the state directory (root only, 0600) while a
// recovery passphrase waits to be printed at the end. It holds no
// temporary key: that is in the header.
type encryptState struct {
	Device   string `json:"device"`
	UUID     string `json:"uuid"`
	Recovery string `json:"recovery,omitempty"`
	// TempKey is only read: tether versions before the key moved into
	// the header kept it here, and their runs must still finish.
	TempKey string `json:"temp_key,omitempty"`
}

// EncryptOptions are the inputs of Encrypt.
type EncryptOptions struct {
	Pin    string
	Config json.RawMessage
	// Force skips the check that the last 32 MiB of the device are free
	// (for content tether cannot measure; only ext2/3/4 is measured).
	Force bool
	// The recovery passphrase: written to RecoveryFile (mode 0600, the
	// bare passphrase, usable as a cryptsetup --key-file) before its
	// keyslot is added; or none with NoRecovery (the binding is the only
	// way in); or else written to Recovery at the end, kept in the state
	// directory until then.
	RecoveryFile string
	NoRecovery   bool
	Recovery     io.Writer
	// Progress receives cryptsetup's progress lines.
	Progress io.Writer
}

// NotEncryptableError explains why a device cannot be encrypted in place.
type NotEncryptableError struct{ Reason, Hint string }

func (e *NotEncryptableError) Error() string { return e.Reason }

// Encrypt encrypts the existing data of a device or image file in place
// (cryptsetup reencrypt --encrypt --reduce-device-size 32M) under a
// temporary key, then adds a recovery passphrase (unless o.NoRecovery),
// binds the volume to the pin and removes the temporary key. Run again
// after an interruption at any point, it carries on where it stopped. It
// returns the bound keyslot.
func (v *Volume) Encrypt(ctx context.Context, o EncryptOptions) (int, error) {
	if o.NoRecovery && (o.RecoveryFile != "" || o.Recovery != nil) {
		return -1, errors.New("encrypt: no recovery passphrase and a recovery passphrase were both asked for")
	}
	unlock, err := v.lock()
	if err != nil {
		return -1, err
	}
	defer unlock()
	// A cryptsetup that outlives a killed tether keeps the lock until
	// it exits, so a rerun waits for it instead of tripping over it.
	ctx = withInherited(ctx, v.held)
	abs, err := filepath.Abs(v.Path)
	if err != nil {
		return -1, err
	}
	// cryptsetup reencrypt runs in the work directory (for its temporary
	// header file): give it an absolute path.
	v.Path = abs
	work := v.encryptWorkDir(abs)
	v.removeSecretLeftovers(work, o.RecoveryFile)
	fi, err := os.Stat(v.Path)
	if err != nil {
		return -1, err
	}
	offline := fi.Mode().IsRegular()
	var pre *bindStep // the binding made before a fresh encryption
	h, herr := v.Header()
	if herr == nil {
		if h, herr, err = v.undoTornHeader(ctx, h, work); err != nil {
			return -1, err
		}
	} else if !errors.Is(herr, ErrNotLUKS) && tornOurs(v.Path) {
		// Both header copies fail their checksums but the binary header
		// carries our label: a cut in cryptsetup's first header write
		// (one write of both copies, before anything is encrypted) or in
		// undoTornHeader's putting back. The moved chunk is at the end.
		v.logf("the header of the interrupted run is damaged (%v): putting back the %d MiB it replaced, then starting over", herr, ReduceSize>>21)
		if err := putBackFromEnd(v.Path); err != nil {
			return -1, fmt.Errorf("put back the start of %s: %w", v.Path, err)
		}
		h, herr = v.Header()
	}
	switch {
	case errors.Is(herr, ErrNotLUKS):
		// cryptsetup copies the first 16 MiB to the free end of the
		// device, then writes the header over the start, and only then
		// encrypts: without a header nothing is encrypted yet, so a run
		// killed before that starts over. Its temporary header file
		// (keyslot 0 and the key) and state go first.
		os.RemoveAll(work)
		if st, f, err := v.findEncryptState(abs, nil); err == nil && st != nil {
			os.Remove(f) // a state file of an older tether, in the state directory
		}
		if err := checkEncryptable(v.Path, o.Force); err != nil {
			return -1, err
		}
		if o.RecoveryFile != "" {
			if _, err := os.Lstat(o.RecoveryFile); err == nil {
				return -1, &NotEncryptableError{
					Reason: "the recovery file " + o.RecoveryFile + " already exists",
					Hint:   "tether never overwrites it: choose a new file name with --recovery-file",
				}
			}
			// Found out now, not after the whole device is encrypted.
			if fi, err := os.Stat(filepath.Dir(o.RecoveryFile)); err != nil || !fi.IsDir() {
				return -1, &NotEncryptableError{
					Reason: "the directory of the recovery file " + o.RecoveryFile + " does not exist",
					Hint:   "create it first (mkdir -p " + filepath.Dir(o.RecoveryFile) + "), or mount the medium it is on",
				}
			}
		}
		// The binding is made now, before anything is written: a server
		// that is down, a config the pin refuses (credentials in the
		// clear), a TPM that is missing are found out in a second, not
		// after the whole device is encrypted. It is used below unless a
		// cut intervenes; a rerun makes a new one.
		pass := NewPassphrase()
		defer clear(pass)
		j, err := pin.Encrypt(ctx, o.Pin, o.Config, pass, v.PinOptions)
		if err != nil {
			return -1, &BindFirstError{Err: err}
		}
		pre = &bindStep{pass: pass, jwe: j}
		if err := os.Mkdir(work, 0o700); err != nil {
			return -1, fmt.Errorf("create the work directory: %w", err)
		}
		uuid, key := newUUID(), newTempKey()
		defer clear(key)
		if o.Recovery != nil && !o.NoRecovery {
			st := encryptState{Device: abs, UUID: uuid, Recovery: string(NewRecoveryPassphrase())}
			data, _ := json.Marshal(st)
			if err := atomicfile.Write(statePath(work), data, 0o600); err != nil {
				return -1, fmt.Errorf("save the encryption state: %w", err)
			}
		}
		crashpoint("encrypt:state")
		v.logf("encrypting %s in place; this rewrites all of it", v.Path)
		err = v.Runner.EncryptInPlace(ctx, v.Path, work, key, fmt.Sprint(ReduceSize),
			FormatOptions{KDF: MachineKDF(""), UUID: uuid, Subsystem: tempKeyPrefix + string(key)}, o.Progress)
		if err != nil {
			return -1, fmt.Errorf("encrypt %s: %w", v.Path, err)
		}
		if h, err = v.Header(); err != nil {
			return -1, err
		}
	case herr != nil:
		return -1, herr
	}
	st, stPath, err := v.findEncryptState(abs, h)
	if st == nil {
		st, stPath = readEncryptState(statePath(work), h.UUID)
	}
	if err != nil {
		return -1, err
	}
	key, ours := tempKeyOf(h)
	if !ours && st != nil && st.TempKey != "" {
		key, ours = []byte(st.TempKey), true
	}
	switch {
	case !ours && h.Reencrypting():
		resume := "cryptsetup reencrypt --resume-only "
		if offline {
			resume += "--force-offline-reencrypt " // cryptsetup refuses image files without it
		}
		return -1, &NotEncryptableError{
			Reason: "the volume's encryption or reencryption is unfinished, and tether did not start it",
			Hint:   "finish it with " + resume + v.Path,
		}
	case !ours && !h.Reencrypting() && len(Bindings(h)) > 0:
		return Bindings(h)[0].Slot, &AlreadyBoundError{Slot: Bindings(h)[0].Slot}
	case !ours:
		return -1, &NotEncryptableError{Reason: v.Path + " is already a LUKS2 volume", Hint: "bind it with tether luks bind -d " + v.Path + " PIN CONFIG"}
	case h.Reencrypting():
		v.logf("resuming the interrupted encryption of %s", v.Path)
		if err := v.resume(ctx, h, key, offline, work, o.Progress); err != nil {
			return -1, err
		}
	}
	crashpoint("encrypt:encrypted")
	slot, err := v.finishEncrypt(ctx, key, st, work, o, pre)
	if err != nil {
		return -1, err
	}
	// The files go before the key leaves the header: clearing the label
	// is the last step, and a run that finds it cleared has nothing left
	// to do.
	if stPath != "" {
		os.Remove(stPath)
	}
	os.RemoveAll(work)
	crashpoint("encrypt:files")
	if h.Subsystem != "" {
		if err := v.Runner.SetSubsystem(ctx, v.Path, ""); err != nil {
			return -1, fmt.Errorf("clear the temporary key from the header: %w", err)
		}
	}
	return slot, nil
}

// BindFirstError is returned by Encrypt when the binding, made before a
// fresh encryption starts, fails: the device was not touched.
type BindFirstError struct{ Err error }

func (e *BindFirstError) Error() string { return "nothing was changed: " + e.Err.Error() }
func (e *BindFirstError) Unwrap() error { return e.Err }

// AlreadyBoundError is returned by Encrypt for a volume that is encrypted
// and bound already: a rerun of a run that had finished (or a volume
// bound otherwise). Nothing was changed.
type AlreadyBoundError struct{ Slot int }

func (e *AlreadyBoundError) Error() string {
	return fmt.Sprintf("already encrypted and bound (keyslot %d): nothing to do", e.Slot)
}

// encryptWorkDir is where cryptsetup keeps its temporary header while it
// encrypts abs: one directory per device, so that a rerun can clear what
// a killed run left without touching another device's run.
func (v *Volume) encryptWorkDir(abs string) string {
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(v.stateDir(), "encrypt-"+hex.EncodeToString(sum[:8])+".d")
}

// statePath is the state file of an encryption, in its work directory:
// one device's files never collide with another's.
func statePath(work string) string { return filepath.Join(work, "state.json") }

// removeSecretLeftovers deletes the temporary files of atomic writes a
// killed run left behind: they may hold a recovery passphrase (or, made
// by older tether versions, in the state directory itself, the temporary
// key). Their writers hold the volume's lock, so none of them is in use.
func (v *Volume) removeSecretLeftovers(work, recoveryFile string) {
	pats := []string{
		filepath.Join(v.stateDir(), ".encrypt-*.json.tmp*"),
		filepath.Join(work, ".state.json.tmp*"),
	}
	if recoveryFile != "" {
		pats = append(pats, filepath.Join(filepath.Dir(recoveryFile), "."+filepath.Base(recoveryFile)+".tmp*"))
	}
	for _, p := range pats {
		files, _ := filepath.Glob(p)
		for _, f := range files {
			os.Remove(f)
		}
	}
}

// undoTornHeader handles a run cut while cryptsetup wrote its header over
// the start of the device when cryptsetup's temporary header file, which
// resume would write again, is gone with the work directory (a tmpfs in
// an initramfs): keyslot 0 does not open, and every data segment in use
// is still plain. cryptsetup had copied the first chunk of the data to
// the free end of the device before (the header's backup-moved-segment),
// so putting that copy back gives the device as it was, and the run
// starts over. Otherwise h is returned as it is.
func (v *Volume) undoTornHeader(ctx context.Context, h *Header, work string) (*Header, error, error) {
	key, ours := tempKeyOf(h)
	if !ours || !h.Reencrypting() {
		return h, nil, nil
	}
	if _, err := os.Stat(filepath.Join(work, "LUKS2-temp-"+h.UUID+".new")); err == nil {
		return h, nil, nil // resume writes the header again from it
	}
	var moved *Segment
	for _, sg := range h.Metadata.Segments {
		sg := sg
		if len(sg.Flags) == 0 && sg.Type != "linear" {
			return h, nil, nil // something is encrypted already
		}
		if slices.Contains(sg.Flags, "backup-moved-segment") && sg.Type == "linear" {
			moved = &sg
		}
	}
	if moved == nil {
		return h, nil, nil
	}
	if err := v.Runner.TestKey(ctx, v.Path, 0, key); err == nil {
		return h, nil, nil // the header is whole: resume goes on
	}
	size, err := strconv.ParseUint(moved.Size, 10, 64)
	if err != nil || size == 0 || size > 64<<20 || uint64(moved.Offset) < size {
		return nil, nil, fmt.Errorf("the header write of the interrupted encryption of %s was cut short, and its moved data segment (%s at %d) is not one tether can put back: restore the first %s bytes from offset %d by hand, then run the same command again", v.Path, moved.Size, moved.Offset, moved.Size, moved.Offset)
	}
	v.logf("the header write of the interrupted run was cut short, and cryptsetup's copy of the header is gone: putting back the %d MiB it replaced, then starting over", size>>20)
	if err := putBack(v.Path, int64(moved.Offset), int64(size)); err != nil {
		return nil, nil, fmt.Errorf("put back the start of %s: %w", v.Path, err)
	}
	h, herr := v.Header()
	return h, herr, nil
}

// tornOurs reports whether dev starts with a LUKS2 binary header whose
// subsystem label is an unfinished tether luks encrypt's.
func tornOurs(dev string) bool {
	f, err := os.Open(dev)
	if err != nil {
		return false
	}
	defer f.Close()
	bin := make([]byte, 512)
	if _, err := f.ReadAt(bin, 0); err != nil {
		return false
	}
	return string(bin[:6]) == "LUKS\xba\xbe" && strings.HasPrefix(cstring(bin[208:256]), tempKeyPrefix)
}

// putBackFromEnd puts back the chunk cryptsetup reencrypt --encrypt
// --reduce-device-size moves first: the first ReduceSize/2 bytes, copied
// to the last ReduceSize/2 of the device (seen with cryptsetup 2.6.1; the
// header's backup-moved-segment says so when the header can be read).
func putBackFromEnd(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	end, err := f.Seek(0, io.SeekEnd)
	f.Close()
	if err != nil {
		return err
	}
	const n = ReduceSize / 2
	if end < MinEncryptSize {
		return fmt.Errorf("%s is too small to hold a moved chunk", dev)
	}
	return putBack(dev, end-n, n)
}

// putBack copies size bytes at off to the start of dev. The first 4 KiB
// (the LUKS2 binary header's magic, and an ext4 superblock) go last, after
// the rest is on the disk: a cut during the copy leaves the torn header
// in place, and the next run does the same again.
func putBack(dev string, off, size int64) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, off); err != nil {
		return err
	}
	const first = 4096
	if _, err := f.WriteAt(buf[first:], first); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if _, err := f.WriteAt(buf[:first], 0); err != nil {
		return err
	}
	return f.Sync()
}

// resume finishes an interrupted encryption: it rewrites a header whose
// write was cut short, runs cryptsetup's crash recovery when cryptsetup
// asks for it, and completes the metadata itself when cryptsetup was
// killed in its final step.
func (v *Volume) resume(ctx context.Context, h *Header, key []byte, offline bool, work string, progress io.Writer) error {
	// A new boot may have a fresh (tmpfs) state directory.
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("create the work directory: %w", err)
	}
	if err := v.Runner.TestKey(ctx, v.Path, 0, key); err != nil {
		// Killed while cryptsetup copied its temporary header onto the
		// device: the header is there, its keyslot not all of it. Nothing
		// is encrypted yet; write the header again.
		tmp := filepath.Join(work, "LUKS2-temp-"+h.UUID+".new")
		if _, serr := os.Stat(tmp); serr != nil {
			return fmt.Errorf("the temporary key in the header of %s does not open keyslot 0: %w", v.Path, err)
		}
		v.logf("the header write of the interrupted run was cut short: writing the header again")
		if err := v.Runner.HeaderRestore(ctx, v.Path, tmp); err != nil {
			return fmt.Errorf("write the header again: %w", err)
		}
		if err := v.Runner.TestKey(ctx, v.Path, 0, key); err != nil {
			return fmt.Errorf("the temporary key does not open keyslot 0 of %s: %w", v.Path, err)
		}
	}
	if _, err := finishedEncryptionJSON(h); err == nil {
		v.logf("all data is encrypted; completing the header cryptsetup was killed writing")
		return v.completeEncryption(ctx, h, key, work)
	}
	err := v.Runner.ResumeReencrypt(ctx, v.Path, work, 0, key, offline, progress)
	var ce *CryptsetupError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, "repair") {
		v.logf("running cryptsetup's crash recovery (cryptsetup repair) first")
		if err := v.Runner.Repair(ctx, v.Path, key); err != nil {
			return fmt.Errorf("recover the interrupted encryption: %w", err)
		}
		err = v.Runner.ResumeReencrypt(ctx, v.Path, work, 0, key, offline, progress)
	}
	if err == nil {
		return nil
	}
	h2, herr := v.Header()
	if herr != nil {
		return fmt.Errorf("resume the encryption of %s: %w", v.Path, err)
	}
	if !h2.Reencrypting() {
		return nil // recovery finished it
	}
	if _, ferr := finishedEncryptionJSON(h2); ferr == nil {
		v.logf("all data is encrypted; completing the header cryptsetup could not finish")
		return v.completeEncryption(ctx, h2, key, work)
	}
	return fmt.Errorf("resume the encryption of %s: %w", v.Path, err)
}

// finishEncrypt adds the recovery keyslot, binds, hands the recovery
// passphrase over, removes the temporary keyslot 0 and clears the key
// from the header. Each step checks whether an earlier run did it. The
// temporary keyslot goes only after the recovery passphrase was handed
// over, so a volume without it has everything else done.
func (v *Volume) finishEncrypt(ctx context.Context, temp []byte, st *encryptState, work string, o EncryptOptions, pre *bindStep) (int, error) {
	h, err := v.repair(ctx)
	if err != nil {
		return -1, err
	}
	tempLive := slotActive(h, 0) && v.Runner.TestKey(ctx, v.Path, 0, temp) == nil
	if tempLive {
		var recovery []byte
		if !o.NoRecovery {
			if recovery, err = v.recoveryPassphrase(h, st, work, o); err != nil {
				return -1, err
			}
			defer clear(recovery)
			if err := v.addRecovery(ctx, h, temp, recovery); err != nil {
				return -1, err
			}
			if h, err = v.Header(); err != nil {
				return -1, err
			}
		}
		if len(Bindings(h)) == 0 {
			if pre == nil {
				pass := NewPassphrase()
				defer clear(pass)
				j, err := pin.Encrypt(ctx, o.Pin, o.Config, pass, v.PinOptions)
				if err != nil {
					return -1, err
				}
				pre = &bindStep{pass: pass, jwe: j}
			}
			pass, j := pre.pass, pre.jwe
			if _, err := v.bind(ctx, h, bindStep{key: temp, keySlot: 0, slot: -1, pass: pass, jwe: j, op: "bind"}); err != nil {
				return -1, err
			}
			if h, err = v.Header(); err != nil {
				return -1, err
			}
		}
		if o.Recovery != nil && recovery != nil && o.RecoveryFile == "" {
			if _, err := o.Recovery.Write(recovery); err != nil {
				return -1, err
			}
		}
		crashpoint("encrypt:printed")
		if err := v.killSlot(ctx, h, 0); err != nil {
			return -1, fmt.Errorf("remove the temporary keyslot 0: %w", err)
		}
		crashpoint("encrypt:killtemp")
		if h, err = v.Header(); err != nil {
			return -1, err
		}
	}
	bs := Bindings(h)
	if len(bs) == 0 {
		return -1, errors.New("the temporary key no longer opens the volume, and it has no binding")
	}
	return bs[0].Slot, nil
}

// recoveryPassphrase returns the recovery passphrase of this run: the one
// an earlier run wrote to the recovery file or kept in the state, or a
// new one, saved before it is used (to the recovery file, or in the state).
func (v *Volume) recoveryPassphrase(h *Header, st *encryptState, work string, o EncryptOptions) ([]byte, error) {
	if o.RecoveryFile != "" {
		if b, err := os.ReadFile(o.RecoveryFile); err == nil && len(b) > 0 {
			return b, nil
		}
		rec := NewRecoveryPassphrase()
		if err := writeSecretFile(o.RecoveryFile, rec); err != nil {
			return nil, fmt.Errorf("write the recovery passphrase to %s: %w", o.RecoveryFile, err)
		}
		return rec, nil
	}
	if st != nil && st.Recovery != "" {
		return []byte(st.Recovery), nil
	}
	// The state is gone (a state directory on tmpfs, lost in a power
	// cut): a new passphrase replaces any recovery keyslot of the
	// earlier run (addRecovery).
	rec := NewRecoveryPassphrase()
	if o.Recovery != nil {
		data, _ := json.Marshal(encryptState{Device: v.Path, UUID: h.UUID, Recovery: string(rec)})
		if err := os.MkdirAll(work, 0o700); err != nil {
			return nil, fmt.Errorf("create the work directory: %w", err)
		}
		if err := atomicfile.Write(statePath(work), data, 0o600); err != nil {
			return nil, fmt.Errorf("save the encryption state: %w", err)
		}
	}
	return rec, nil
}

// addRecovery makes sure that recovery opens a keyslot of its own. While
// the temporary key is in the header the volume is tether's alone, so an
// unbound keyslot other than 0 that recovery does not open is a recovery
// keyslot of an earlier run whose passphrase was lost: it is replaced.
func (v *Volume) addRecovery(ctx context.Context, h *Header, temp, recovery []byte) error {
	bound := map[int]bool{}
	for _, b := range Bindings(h) {
		bound[b.Slot] = true
	}
	var stale []int
	for _, s := range h.Slots() {
		if s == 0 || bound[s] {
			continue
		}
		if v.Runner.TestKey(ctx, v.Path, s, recovery) == nil {
			return nil
		}
		stale = append(stale, s)
	}
	for _, s := range stale {
		v.logf("removing keyslot %d: a recovery passphrase of the interrupted run that is no longer known", s)
		if err := v.killSlot(ctx, h, s); err != nil {
			return err
		}
	}
	slot := h.FreeSlot()
	if slot < 0 {
		return errors.New("all 32 keyslots are in use")
	}
	if err := v.Runner.AddKey(ctx, v.Path, 0, temp, slot, recovery, MachineKDF(h.VolumeHash())); err != nil {
		return fmt.Errorf("add the recovery keyslot: %w", err)
	}
	if err := v.Runner.TestKey(ctx, v.Path, slot, recovery); err != nil {
		return fmt.Errorf("the recovery keyslot does not open: %w", err)
	}
	crashpoint("encrypt:recovery")
	return nil
}

// writeSecretFile writes a secret atomically (temporary file, fsync,
// rename) with mode 0600 from the start. No chmod: on a vfat stick, where
// modes do not exist, it would fail.
func writeSecretFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = atomicfile.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// readEncryptState reads the state file f if it belongs to the volume
// with this UUID.
func readEncryptState(f, uuid string) (*encryptState, string) {
	data, err := os.ReadFile(f)
	if err != nil {
		return nil, ""
	}
	var st encryptState
	if json.Unmarshal(data, &st) != nil || st.UUID != uuid {
		return nil, ""
	}
	return &st, f
}

// findEncryptState returns the state an older tether kept in the state
// directory for an unfinished encryption of this device: by UUID once it
// has a LUKS2 header, else by path.
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
// it must not be mounted, and its last 32 MiB must be unused. Its hints
// name a command that makes room on that very input: an image file grows
// (resize2fs would shrink the file along with the filesystem, and the
// file would then be too small), a block device's filesystem shrinks.
func checkEncryptable(dev string, force bool) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	regular := fi.Mode().IsRegular()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if m := mountedAt(dev); m != "" {
		return &NotEncryptableError{Reason: fmt.Sprintf("%s is mounted on %s", dev, m), Hint: "unmount it first (encrypt the root filesystem from an initramfs or a rescue system)"}
	}
	fsSize, kind := filesystemSize(f)
	// grow is the size an image file needs: its content plus 32 MiB, at
	// least MinEncryptSize, in whole MiB.
	grow := (max(fsSize+ReduceSize, MinEncryptSize) + 1<<20 - 1) >> 20
	if size < MinEncryptSize {
		e := &NotEncryptableError{
			Reason: fmt.Sprintf("%s is too small to encrypt in place (%d MiB; at least %d MiB)", dev, size>>20, MinEncryptSize>>20),
			Hint:   fmt.Sprintf("use a partition of at least %d MiB", MinEncryptSize>>20),
		}
		if regular {
			e.Hint = fmt.Sprintf("make the image file larger (its content stays as it is): truncate -s %dM %s", grow, dev)
		}
		return e
	}
	limit := size - ReduceSize
	switch {
	case fsSize > limit:
		e := &NotEncryptableError{
			Reason: fmt.Sprintf("the %s filesystem on %s fills it: the last 32 MiB must be free for the LUKS2 header", kind, dev),
			Hint:   fmt.Sprintf("shrink the filesystem first: e2fsck -f -p %s && resize2fs %s %dK", dev, dev, limit>>10),
		}
		if regular {
			e.Hint = fmt.Sprintf("make the image file larger (the filesystem stays as it is): truncate -s %dM %s", grow, dev)
		}
		return e
	case fsSize == 0 && !force:
		e := &NotEncryptableError{
			Reason: fmt.Sprintf("cannot tell whether the last 32 MiB of %s are unused (only ext2/3/4 filesystems are measured)", dev),
			Hint:   "shrink what is on it by 32 MiB, then run again with --force",
		}
		if regular {
			e.Hint = fmt.Sprintf("if its content ends before the last 32 MiB, run again with --force; else grow the file first: truncate -s +32M %s", dev)
		}
		return e
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
				os.RemoveAll(v.encryptWorkDir(abs)) // its recovery passphrase
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
		if _, err := o.Recovery.Write(recovery); err != nil {
			return slot, err
		}
	}
	return slot, nil
}

func runCmd(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}
