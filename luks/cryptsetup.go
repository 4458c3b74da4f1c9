package luks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Runner executes cryptsetup. Secrets are handed over on stdin or on a
// pipe inherited as file descriptor 3, never in argv or in files.
type Runner struct {
	// Path is the cryptsetup binary; empty means "cryptsetup" on PATH.
	Path string
}

// CryptsetupError is a failed cryptsetup run.
type CryptsetupError struct {
	Args   []string // without secrets: there are none in argv
	Code   int
	Stderr string
}

func (e *CryptsetupError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", e.Code)
	}
	return fmt.Sprintf("cryptsetup %s: %s", e.Args[0], msg)
}

// Exit codes of cryptsetup (man cryptsetup, RETURN CODES).
const (
	csWrongParams = 1
	csNoPerm      = 2 // also: wrong passphrase
	csNoMemory    = 3
	csWrongDevice = 4
	csBusy        = 5
)

// WrongKey reports whether err is cryptsetup rejecting a passphrase.
func WrongKey(err error) bool {
	var ce *CryptsetupError
	return errors.As(err, &ce) && ce.Code == csNoPerm
}

func (r *Runner) path() string {
	if r != nil && r.Path != "" {
		return r.Path
	}
	if p := os.Getenv("TETHER_CRYPTSETUP"); p != "" {
		return p
	}
	return "cryptsetup"
}

// run runs cryptsetup with stdin (may be nil) and, if fd3 is not nil, a
// pipe carrying fd3 as file descriptor 3. It returns stdout.
func (r *Runner) run(ctx context.Context, stdin, fd3 []byte, progress io.Writer, args ...string) ([]byte, error) {
	return r.runIn(ctx, "", stdin, fd3, progress, args...)
}

// runIn is run in working directory dir (reencrypt writes temporary
// header files into its working directory).
//
// cryptsetup's stdout and stderr are anonymous files, not pipes: when
// tether is killed while cryptsetup runs on, a pipe would kill cryptsetup
// with SIGPIPE at its next progress line, perhaps in the middle of its
// final header update. A file the context names (see withInherited, the
// volume's lock) is inherited too, so that the lock is held until
// cryptsetup exits even if tether dies first.
func (r *Runner) runIn(ctx context.Context, dir string, stdin, fd3 []byte, progress io.Writer, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.path(), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	outf, err := anonFile("cryptsetup-stdout")
	if err != nil {
		return nil, err
	}
	defer outf.Close()
	errf, err := anonFile("cryptsetup-stderr")
	if err != nil {
		return nil, err
	}
	defer errf.Close()
	cmd.Stdout, cmd.Stderr = outf, errf
	var pw *os.File
	if fd3 != nil {
		pr, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer pr.Close()
		pw = w
		cmd.ExtraFiles = []*os.File{pr}
	}
	if f := inherited(ctx); f != nil {
		if len(cmd.ExtraFiles) == 0 {
			cmd.ExtraFiles = []*os.File{nil} // fd 3 stays the key pipe's place
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	if err := cmd.Start(); err != nil {
		if pw != nil {
			pw.Close()
		}
		return nil, fmt.Errorf("run cryptsetup: %w", err)
	}
	if pw != nil {
		// A key is far smaller than a pipe buffer, but write from a
		// goroutine anyway so that a stuck reader cannot block us.
		go func() {
			pw.Write(fd3)
			pw.Close()
		}()
	}
	var out bytes.Buffer
	follow := progress != nil && !isNilProgress(progress)
	done := make(chan struct{})
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		var off int64
		for {
			select {
			case <-done:
				off = copyFrom(outf, off, &out, progress, follow)
				return
			case <-time.After(200 * time.Millisecond):
				off = copyFrom(outf, off, &out, progress, follow)
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	<-followed
	errb, _ := io.ReadAll(io.NewSectionReader(errf, 0, 1<<20))
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() >= 0 {
			return out.Bytes(), &CryptsetupError{Args: args, Code: ee.ExitCode(), Stderr: string(errb)}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("cryptsetup %s: %w", args[0], ctx.Err())
		}
		return nil, fmt.Errorf("cryptsetup %s: %w", args[0], err)
	}
	return out.Bytes(), nil
}

// copyFrom appends what f holds from off on to out (and to progress when
// follow is set) and returns the new offset.
func copyFrom(f *os.File, off int64, out *bytes.Buffer, progress io.Writer, follow bool) int64 {
	buf := make([]byte, 32<<10)
	for {
		n, _ := f.ReadAt(buf, off)
		if n == 0 {
			return off
		}
		out.Write(buf[:n])
		if follow {
			progress.Write(buf[:n])
		}
		off += int64(n)
	}
}

// anonFile returns a file with no name (memfd), or an unlinked temporary
// file where memfd is missing.
func anonFile(name string) (*os.File, error) {
	if fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC); err == nil {
		return os.NewFile(uintptr(fd), name), nil
	}
	f, err := os.CreateTemp("", name)
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

type inheritKey struct{}

// withInherited makes cryptsetup runs under ctx inherit f (as a file
// descriptor above 3).
func withInherited(ctx context.Context, f *os.File) context.Context {
	if f == nil {
		return ctx
	}
	return context.WithValue(ctx, inheritKey{}, f)
}

func inherited(ctx context.Context) *os.File {
	f, _ := ctx.Value(inheritKey{}).(*os.File)
	return f
}

// TestKey checks key against keyslot slot only (so that no expensive
// argon2 slot is ever tried first). It changes nothing on the device.
func (r *Runner) TestKey(ctx context.Context, dev string, slot int, key []byte) error {
	_, err := r.run(ctx, key, nil, nil, "open", "--test-passphrase", "--type", "luks2",
		"--key-slot", strconv.Itoa(slot), "--key-file", "-", dev)
	return err
}

// Open activates dev as /dev/mapper/name with key on keyslot slot.
func (r *Runner) Open(ctx context.Context, dev, name string, slot int, key []byte, extra ...string) error {
	args := append([]string{"open", "--type", "luks2", "--key-slot", strconv.Itoa(slot), "--key-file", "-"}, extra...)
	_, err := r.run(ctx, key, nil, nil, append(args, dev, name)...)
	return err
}

// Close deactivates a mapping.
func (r *Runner) Close(ctx context.Context, name string) error {
	_, err := r.run(ctx, nil, nil, nil, "close", name)
	return err
}

// KDFOptions chooses the key derivation of a new keyslot.
type KDFOptions struct {
	PBKDF      string // pbkdf2, argon2id, argon2i; empty: cryptsetup's default
	Iterations int    // forced iterations (pbkdf2) or time cost (argon2); 0: benchmark
	Hash       string // pbkdf2 hash; empty: cryptsetup's default
}

// MachineKDF is the derivation for high-entropy machine keys, as clevis
// and systemd-cryptenroll use: a random 320-bit passphrase needs no
// stretching, and a cheap slot keeps unlocking fast.
func MachineKDF(hash string) KDFOptions {
	return KDFOptions{PBKDF: "pbkdf2", Iterations: 1000, Hash: hash}
}

func (k KDFOptions) args() []string {
	var a []string
	if k.PBKDF != "" {
		a = append(a, "--pbkdf", k.PBKDF)
	}
	if k.Iterations > 0 {
		a = append(a, "--pbkdf-force-iterations", strconv.Itoa(k.Iterations))
	}
	if k.Hash != "" {
		a = append(a, "--hash", k.Hash)
	}
	return a
}

// AddKey adds newKey in keyslot newSlot, unlocking the volume key with key
// on keyslot slot.
func (r *Runner) AddKey(ctx context.Context, dev string, slot int, key []byte, newSlot int, newKey []byte, kdf KDFOptions) error {
	args := []string{"luksAddKey", "--batch-mode", "--type", "luks2",
		"--key-slot", strconv.Itoa(slot), "--new-key-slot", strconv.Itoa(newSlot),
		"--key-file", "-", "--new-keyfile", fd3Path()}
	args = append(args, kdf.args()...)
	_, err := r.run(ctx, key, newKey, nil, append(args, dev)...)
	return err
}

// fd3Path names the pipe on file descriptor 3 for cryptsetup. A minimal
// initramfs may lack the /dev/fd symlink; /proc/self/fd is the same.
func fd3Path() string {
	if _, err := os.Stat("/dev/fd/0"); err == nil {
		return "/dev/fd/3"
	}
	return "/proc/self/fd/3"
}

// KillSlot wipes keyslot slot. Batch mode needs no passphrase: callers
// must make sure that another way into the volume remains.
func (r *Runner) KillSlot(ctx context.Context, dev string, slot int) error {
	_, err := r.run(ctx, nil, nil, nil, "luksKillSlot", "--batch-mode", "--type", "luks2", dev, strconv.Itoa(slot))
	return err
}

// ImportToken stores a token under id; replace overwrites an existing one.
func (r *Runner) ImportToken(ctx context.Context, dev string, id int, token []byte, replace bool) error {
	args := []string{"token", "import", "--token-id", strconv.Itoa(id), "--json-file", "-"}
	if replace {
		args = append(args, "--token-replace")
	}
	_, err := r.run(ctx, token, nil, nil, append(args, dev)...)
	return err
}

// RemoveToken removes token id.
func (r *Runner) RemoveToken(ctx context.Context, dev string, id int) error {
	_, err := r.run(ctx, nil, nil, nil, "token", "remove", "--token-id", strconv.Itoa(id), dev)
	return err
}

// HeaderBackup writes a copy of dev's header to file, which must not
// exist. cryptsetup creates it with mode 0400.
func (r *Runner) HeaderBackup(ctx context.Context, dev, file string) error {
	_, err := r.run(ctx, nil, nil, nil, "luksHeaderBackup", "--batch-mode", dev, "--header-backup-file", file)
	return err
}

// HeaderRestore restores dev's header from file.
func (r *Runner) HeaderRestore(ctx context.Context, dev, file string) error {
	_, err := r.run(ctx, nil, nil, nil, "luksHeaderRestore", "--batch-mode", dev, "--header-backup-file", file)
	return err
}

// FormatOptions are the options of a new LUKS2 volume.
type FormatOptions struct {
	KDF        KDFOptions
	UUID       string
	Label      string
	SectorSize int
	// Subsystem is the header's subsystem label (48 bytes with its NUL).
	Subsystem string
}

func (o FormatOptions) args() []string {
	a := o.KDF.args()
	if o.UUID != "" {
		a = append(a, "--uuid", o.UUID)
	}
	if o.Label != "" {
		a = append(a, "--label", o.Label)
	}
	if o.Subsystem != "" {
		a = append(a, "--subsystem", o.Subsystem)
	}
	if o.SectorSize > 0 {
		a = append(a, "--sector-size", strconv.Itoa(o.SectorSize))
	}
	return a
}

// Format makes dev a new LUKS2 volume with key in keyslot 0.
func (r *Runner) Format(ctx context.Context, dev string, key []byte, o FormatOptions) error {
	args := append([]string{"luksFormat", "--batch-mode", "--type", "luks2", "--key-slot", "0", "--key-file", "-"}, o.args()...)
	_, err := r.run(ctx, key, nil, nil, append(args, dev)...)
	return err
}

// EncryptInPlace starts offline encryption of dev's existing data, with key
// in keyslot 0. The last reduce bytes of dev must be unused: the data moves
// to make room for the header. cryptsetup runs in dir, where it keeps a
// temporary header. Progress goes to progress.
func (r *Runner) EncryptInPlace(ctx context.Context, dev, dir string, key []byte, reduce string, o FormatOptions, progress io.Writer) error {
	// No --batch-mode: it silences progress. reencrypt asks nothing when
	// the key comes from a key file.
	args := append([]string{"reencrypt", "--encrypt", "--type", "luks2",
		"--reduce-device-size", reduce, "--key-slot", "0", "--key-file", "-", "--progress-json"}, o.args()...)
	pw := newProgress(progress)
	_, err := r.runIn(ctx, dir, key, nil, pw, append(args, dev)...)
	pw.Flush()
	return err
}

// ResumeReencrypt finishes an interrupted reencryption of dev. offline
// must be set for image files: cryptsetup cannot tell whether a file is
// in use and refuses to guess.
func (r *Runner) ResumeReencrypt(ctx context.Context, dev, dir string, slot int, key []byte, offline bool, progress io.Writer) error {
	args := []string{"reencrypt", "--resume-only", "--key-slot", strconv.Itoa(slot), "--key-file", "-", "--progress-json"}
	if offline {
		args = append(args, "--force-offline-reencrypt")
	}
	pw := newProgress(progress)
	_, err := r.runIn(ctx, dir, key, nil, pw, append(args, dev)...)
	pw.Flush()
	return err
}

// SetSubsystem sets the header's subsystem label ("" clears it).
func (r *Runner) SetSubsystem(ctx context.Context, dev, subsystem string) error {
	_, err := r.run(ctx, nil, nil, nil, "config", "--batch-mode", "--subsystem", subsystem, dev)
	return err
}

// Repair runs cryptsetup repair, which recovers the metadata of a
// reencryption that was killed, so that it can be resumed.
func (r *Runner) Repair(ctx context.Context, dev string, key []byte) error {
	_, err := r.run(ctx, key, nil, nil, "repair", "--batch-mode", "--key-file", "-", dev)
	return err
}

// VolumeKey returns the volume key of dev (tests use it to decrypt data
// in userspace). The key is a secret: zero it when done.
func (r *Runner) VolumeKey(ctx context.Context, dev string, slot int, key []byte) ([]byte, error) {
	out, err := r.run(ctx, key, nil, nil, "luksDump", "--dump-volume-key", "--batch-mode",
		"--key-slot", strconv.Itoa(slot), "--key-file", "-", dev)
	if err != nil {
		return nil, err
	}
	defer clear(out)
	// The key is printed as hex bytes after "MK dump:", possibly over
	// several lines, until the next blank line or end.
	s := string(out)
	i := strings.Index(s, "MK dump:")
	if i < 0 {
		return nil, errors.New("cryptsetup luksDump printed no volume key")
	}
	var hex []byte
	for _, line := range strings.Split(s[i+len("MK dump:"):], "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			if len(hex) > 0 {
				break
			}
			continue
		}
		ok := true
		for _, b := range f {
			if len(b) != 2 {
				ok = false
			}
		}
		if !ok {
			break
		}
		for _, b := range f {
			v, err := strconv.ParseUint(b, 16, 8)
			if err != nil {
				return nil, errors.New("cryptsetup luksDump: cannot parse the volume key")
			}
			hex = append(hex, byte(v))
		}
	}
	return hex, nil
}

// DeviceMapperAvailable reports whether this kernel can activate mappings
// (cryptsetup open); without it tether can still verify keys.
func DeviceMapperAvailable() bool {
	// /dev/mapper/control may exist without a driver behind it
	// (libdevmapper creates the node); the kernel lists the driver.
	misc, err := os.ReadFile("/proc/misc")
	return err == nil && strings.Contains(string(misc), " device-mapper\n")
}

// progressWriter turns cryptsetup's --progress-json lines into lines for
// a person; other output passes through.
type progressWriter struct {
	w    io.Writer
	line []byte
}

func newProgress(w io.Writer) *progressWriter { return &progressWriter{w: w} }

func isNilProgress(w io.Writer) bool {
	p, ok := w.(*progressWriter)
	return ok && p.w == nil
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.line = append(p.line, b...)
	for {
		i := bytes.IndexByte(p.line, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.emit(p.line[:i])
		p.line = p.line[i+1:]
	}
}

// Flush writes a last unterminated line.
func (p *progressWriter) Flush() {
	if len(p.line) > 0 {
		p.emit(p.line)
		p.line = nil
	}
}

func (p *progressWriter) emit(line []byte) {
	if p.w == nil {
		return
	}
	var j struct {
		Bytes Uint64 `json:"device_bytes"`
		Size  Uint64 `json:"device_size"`
		Speed Uint64 `json:"speed"`
		ETA   Uint64 `json:"eta_ms"`
	}
	if json.Unmarshal(line, &j) != nil || j.Size == 0 {
		fmt.Fprintf(p.w, "%s\n", line)
		return
	}
	fmt.Fprintf(p.w, "tether: encrypting: %3d%% (%d of %d MiB, %d MiB/s, %ds left)\n",
		j.Bytes*100/j.Size, j.Bytes>>20, j.Size>>20, j.Speed>>20, (j.ETA+999)/1000)
}
