package doctor

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// listInitramfs returns the paths in an initramfs image (without a
// leading "/" or "./"): with the generator's own lister when it is
// installed (it knows every compression and layout its generator makes),
// else with tether's own reader of concatenated newc archives.
func listInitramfs(path, gen string) ([]string, error) {
	var cmd *exec.Cmd
	if p, err := exec.LookPath("lsinitramfs"); err == nil && gen == "initramfs-tools" {
		cmd = exec.Command(p, path)
	} else if p, err := exec.LookPath("lsinitrd"); err == nil && gen == "dracut" {
		cmd = exec.Command(p, path) // prints an ls -l listing
	}
	if cmd != nil {
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil {
			var names []string
			for _, line := range strings.Split(string(out), "\n") {
				if gen == "dracut" {
					// ls -l style: the name is the last field, or the one
					// before "->" for a link.
					f := strings.Fields(line)
					if len(f) < 9 {
						continue
					}
					if i := indexOf(f, "->"); i > 0 {
						line = f[i-1]
					} else {
						line = f[len(f)-1]
					}
				}
				if n := cleanName(line); n != "" {
					names = append(names, n)
				}
			}
			return names, nil
		}
		// Fall through to our reader: the lister may lack a decompressor.
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return cpioNames(f, externalDecompressor)
}

func indexOf(f []string, s string) int {
	for i, x := range f {
		if x == s {
			return i
		}
	}
	return -1
}

func cleanName(n string) string {
	n = strings.TrimSpace(n)
	n = strings.TrimPrefix(n, "./")
	n = strings.TrimPrefix(n, "/")
	if n == "." {
		return ""
	}
	return n
}

// decompressor returns a reader of r's decompressed bytes for an archive
// that starts with magic, or nil if it knows no such compression.
type decompressor func(magic []byte, r io.Reader) (io.Reader, func() error)

// maxInitramfsNames bounds what a hostile or broken image costs.
const maxInitramfsNames = 1 << 20

// cpioNames lists the names in concatenated newc ("070701") and crc
// ("070702") cpio archives, as the kernel unpacks an initramfs: an
// uncompressed early archive (microcode) may come first, then compressed
// ones. gzip is read here; other compressions go to dec.
func cpioNames(r io.Reader, dec decompressor) ([]string, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var names []string
	for {
		// Archives are padded with zeros to 512-byte blocks (and more).
		for {
			b, err := br.Peek(1)
			if err == io.EOF {
				return names, nil
			}
			if err != nil {
				return names, err
			}
			if b[0] != 0 {
				break
			}
			br.Discard(1)
		}
		magic, _ := br.Peek(6)
		switch {
		case bytes.HasPrefix(magic, []byte("07070")):
			n, err := readArchive(br, &names)
			if err != nil {
				return names, err
			}
			if n == 0 {
				return names, errors.New("empty cpio archive")
			}
		case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
			zr, err := gzip.NewReader(br)
			if err != nil {
				return names, fmt.Errorf("gzip: %w", err)
			}
			// The compressed archive runs to the end of the image.
			more, err := cpioNames(zr, dec)
			return append(names, more...), err
		default:
			if dec != nil {
				if dr, wait := dec(magic, br); dr != nil {
					more, err := cpioNames(dr, dec)
					if werr := wait(); err == nil && werr != nil {
						err = werr
					}
					return append(names, more...), err
				}
			}
			return names, fmt.Errorf("unknown data at the start of an archive (% x): not a cpio archive or an unknown compression", magic)
		}
		if len(names) > maxInitramfsNames {
			return names, errors.New("too many files")
		}
	}
}

// readArchive reads one cpio archive up to its TRAILER!!! entry.
func readArchive(br *bufio.Reader, names *[]string) (int, error) {
	n := 0
	var hdr [110]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return n, fmt.Errorf("cpio header: %w", err)
		}
		if !bytes.HasPrefix(hdr[:], []byte("07070")) || (hdr[5] != '1' && hdr[5] != '2') {
			return n, errors.New("cpio header: bad magic (only newc archives are read)")
		}
		field := func(i int) (int64, error) {
			return strconv.ParseInt(string(hdr[6+8*i:6+8*i+8]), 16, 64)
		}
		size, err1 := field(6)
		nameSize, err2 := field(11)
		if err1 != nil || err2 != nil || nameSize <= 0 || nameSize > 4096 || size < 0 {
			return n, errors.New("cpio header: bad field")
		}
		name := make([]byte, nameSize)
		if _, err := io.ReadFull(br, name); err != nil {
			return n, fmt.Errorf("cpio name: %w", err)
		}
		// Header and name are padded to a multiple of 4.
		if _, err := br.Discard(int(pad4(110 + nameSize))); err != nil {
			return n, err
		}
		s := string(bytes.TrimRight(name, "\x00"))
		if s == "TRAILER!!!" {
			return n, nil
		}
		if _, err := io.CopyN(io.Discard, br, size+pad4(size)); err != nil {
			return n, fmt.Errorf("cpio data of %s: %w", s, err)
		}
		if c := cleanName(s); c != "" {
			*names = append(*names, c)
		}
		n++
		if len(*names) > maxInitramfsNames {
			return n, errors.New("too many files")
		}
	}
}

func pad4(n int64) int64 { return (4 - n%4) % 4 }

// externalDecompressor runs zstd, xz, lz4 or bzip2 on what follows.
func externalDecompressor(magic []byte, r io.Reader) (io.Reader, func() error) {
	var tool string
	switch {
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		tool = "zstd"
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z'}):
		tool = "xz"
	case bytes.HasPrefix(magic, []byte{0x02, 0x21, 0x4c, 0x18}), bytes.HasPrefix(magic, []byte{0x04, 0x22, 0x4d, 0x18}):
		tool = "lz4"
	case bytes.HasPrefix(magic, []byte("BZh")):
		tool = "bzip2"
	default:
		return nil, nil
	}
	cmd := exec.Command(tool, "-dc")
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil
	}
	if err := cmd.Start(); err != nil {
		return nil, nil
	}
	return out, func() error {
		io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s -dc: %w", tool, err)
		}
		return nil
	}
}
