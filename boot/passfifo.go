package boot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Debian's cryptroot asks for a passphrase by running
// /lib/cryptsetup/askpass with the volume in its environment
// (CRYPTTAB_NAME, CRYPTTAB_SOURCE). askpass reads the console and, at the
// same time, the FIFO /lib/cryptsetup/passfifo: whatever is written there
// until EOF is the passphrase, as if typed. Feeding a recovered key into
// that FIFO lets cryptroot open the volume itself, so the prompt and tether
// race without a second open and without a prompt left waiting.

// PassFIFOSuffix is how the FIFO's path ends.
const PassFIFOSuffix = "/cryptsetup/passfifo"

// Asker is a running askpass process waiting for a volume's passphrase.
type Asker struct {
	PID    int
	FIFO   string // a path that opens the FIFO (/proc/PID/fd/N)
	Name   string // CRYPTTAB_NAME
	Source string // CRYPTTAB_SOURCE
	Tried  string // CRYPTTAB_TRIED: how many prompts came before
}

// FindAskers lists the processes under proc ("" means /proc) that hold a
// passfifo open for reading and name a crypttab volume in their
// environment.
func FindAskers(proc string) []Asker {
	if proc == "" {
		proc = "/proc"
	}
	ents, _ := os.ReadDir(proc)
	var out []Asker
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		dir := filepath.Join(proc, e.Name())
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		fifo := ""
		for _, fd := range fds {
			p := filepath.Join(dir, "fd", fd.Name())
			if to, err := os.Readlink(p); err == nil && strings.HasSuffix(to, PassFIFOSuffix) {
				fifo = p
				break
			}
		}
		if fifo == "" {
			continue
		}
		env, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			continue
		}
		a := Asker{PID: pid, FIFO: fifo}
		for _, kv := range bytes.Split(env, []byte{0}) {
			k, v, _ := strings.Cut(string(kv), "=")
			switch k {
			case "CRYPTTAB_NAME":
				a.Name = v
			case "CRYPTTAB_SOURCE":
				a.Source = v
			case "CRYPTTAB_TRIED":
				a.Tried = v
			}
		}
		if a.Name != "" || a.Source != "" {
			out = append(out, a)
		}
	}
	return out
}

// FindAsker returns the asker for volume name (or its device).
func FindAsker(proc, name, device string) (Asker, bool) {
	for _, a := range FindAskers(proc) {
		if a.Name == name || device != "" && a.Source == device {
			return a, true
		}
	}
	return Asker{}, false
}

// ErrNoReader means nobody has the FIFO open for reading any more (the
// passphrase was typed, or the prompt ended).
var ErrNoReader = errors.New("nobody reads the passphrase FIFO any more")

// Feed writes key into the asker's FIFO and closes it (askpass reads until
// EOF). The FIFO is opened non-blocking, so a prompt that ended meanwhile
// gives ErrNoReader instead of a writer stuck forever.
func (a Asker) Feed(key []byte) error {
	fd, err := unix.Open(a.FIFO, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENOENT) {
			return ErrNoReader
		}
		return fmt.Errorf("open the passphrase FIFO of process %d: %w", a.PID, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("%s is not a FIFO: refusing to write a key into it", a.FIFO)
	}
	for off := 0; off < len(key); {
		n, err := unix.Write(fd, key[off:])
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				// A passphrase is far below the pipe's buffer; this
				// means the reader stopped reading.
				return fmt.Errorf("the passphrase FIFO of process %d is full", a.PID)
			}
			if errors.Is(err, unix.EPIPE) {
				return ErrNoReader
			}
			return fmt.Errorf("write the passphrase FIFO of process %d: %w", a.PID, err)
		}
		off += n
	}
	return nil
}
