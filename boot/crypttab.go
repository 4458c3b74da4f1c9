package boot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CrypttabEntry is one line of /etc/crypttab (crypttab(5)).
type CrypttabEntry struct {
	Name    string   // field 1: the volume, /dev/mapper/NAME
	Device  string   // field 2: UUID=, PARTUUID=, LABEL=, a /dev path or a file
	KeyFile string   // field 3: "none", "-", a file or a socket
	Options []string // field 4, split at commas
}

// Option reports whether the entry has option name (as "name" or
// "name=value") and its value.
func (e CrypttabEntry) Option(name string) (string, bool) {
	for _, o := range e.Options {
		k, v, _ := strings.Cut(o, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

// String formats the entry as a crypttab line.
func (e CrypttabEntry) String() string {
	key := e.KeyFile
	if key == "" {
		key = "none"
	}
	opts := strings.Join(e.Options, ",")
	if opts == "" {
		opts = "luks"
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s", e.Name, e.Device, key, opts)
}

// typeOptions are crypttab's options that say what kind of volume it is;
// a volume has one.
var typeOptions = map[string]bool{"luks": true, "plain": true, "tcrypt": true, "bitlk": true, "fvault2": true}

// MergeOptions returns the options of a line that tether rewrites: the
// options tether needs (want), then the old line's others in their order
// (nofail, headless=, keyfile-timeout= are the user's choices). An old
// type option other than want's (plain on a volume now known to be LUKS)
// is dropped.
func MergeOptions(want, old []string) []string {
	name := func(o string) string { k, _, _ := strings.Cut(o, "="); return k }
	has := map[string]bool{}
	typed := false
	out := append([]string(nil), want...)
	for _, o := range want {
		has[name(o)] = true
		typed = typed || typeOptions[name(o)]
	}
	for _, o := range old {
		n := name(o)
		if o == "" || has[n] || typed && typeOptions[n] {
			continue
		}
		has[n] = true
		out = append(out, o)
	}
	return out
}

// ParseCrypttab reads crypttab lines; comments and blank lines are skipped.
func ParseCrypttab(r io.Reader) ([]CrypttabEntry, error) {
	var out []CrypttabEntry
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("crypttab line %d: want at least a name and a device, got %q", n, line)
		}
		e := CrypttabEntry{Name: f[0], Device: f[1], KeyFile: "none"}
		if len(f) > 2 {
			e.KeyFile = f[2]
		}
		if len(f) > 3 {
			e.Options = strings.Split(f[3], ",")
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// ReadCrypttab parses the crypttab file at path.
func ReadCrypttab(path string) ([]CrypttabEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := ParseCrypttab(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ents, nil
}

// LookupVolume returns the entry of volume name in the crypttab at path.
func LookupVolume(path, name string) (CrypttabEntry, error) {
	ents, err := ReadCrypttab(path)
	if err != nil {
		return CrypttabEntry{}, err
	}
	for _, e := range ents {
		if e.Name == name {
			return e, nil
		}
	}
	return CrypttabEntry{}, fmt.Errorf("volume %q is not in %s", name, path)
}

// ErrNoDevice means a crypttab device specification matches no device (yet).
var ErrNoDevice = errors.New("no such device")

// ResolveDevice turns crypttab's field 2 into a path: UUID=, PARTUUID=,
// LABEL= and PARTLABEL= through /dev/disk/by-* (what udev made) or blkid,
// anything else as a path. A missing device node or tag may still appear
// (udev is slow, a disk spins up): that error is ErrNoDevice, worth a
// retry. A missing container file will not (systemd mounts the file system
// it is on before it sets the volume up): that error is permanent and says
// so.
func ResolveDevice(spec string) (string, error) {
	tag, val, ok := strings.Cut(spec, "=")
	if !ok || strings.HasPrefix(spec, "/") {
		_, err := os.Stat(spec)
		switch {
		case err == nil:
			return spec, nil
		case errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(spec, "/dev/"):
			return "", fmt.Errorf("device %s does not exist (yet): %w", spec, ErrNoDevice)
		case errors.Is(err, fs.ErrNotExist):
			return "", &PermanentError{Err: fmt.Errorf("container file %s does not exist: check the device (field 2) of its crypttab line; "+
				"if the file is there, tether runs where it cannot see it (a unit with ProtectHome=, PrivateTmp= or a private mount namespace)", spec)}
		default:
			return "", &PermanentError{Err: fmt.Errorf("device %s: %w", spec, err)}
		}
	}
	dirs := map[string]string{"UUID": "by-uuid", "PARTUUID": "by-partuuid", "LABEL": "by-label", "PARTLABEL": "by-partlabel"}
	dir, known := dirs[strings.ToUpper(tag)]
	if !known {
		return "", &PermanentError{Err: fmt.Errorf("device %s: unknown tag %s (want UUID=, PARTUUID=, LABEL=, PARTLABEL= or a path)", spec, tag)}
	}
	val = strings.Trim(val, `"`)
	link := filepath.Join("/dev/disk", dir, val)
	if p, err := filepath.EvalSymlinks(link); err == nil {
		return p, nil
	}
	// No udev (a minimal initramfs, a container): ask blkid.
	if out, err := exec.Command("blkid", "-o", "device", "-t", strings.ToUpper(tag)+"="+val).Output(); err == nil {
		if p := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]); p != "" {
			return p, nil
		}
	}
	return "", fmt.Errorf("device %s: %w", spec, ErrNoDevice)
}
