package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tether-nbde/tether/internal/atomicfile"
)

// memFile puts a secret into an anonymous memory file (memfd) and
// returns a path that opens it, for a pin configuration that names a
// password file: the password never touches a disk. The file is closed
// when setup ends.
func (p *setupPlan) memFile(data []byte) (string, error) {
	fd, err := unix.MemfdCreate("tether-setup-secret", unix.MFD_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("keep the password in memory: %w", err)
	}
	f := os.NewFile(uintptr(fd), "tether-setup-secret")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", err
	}
	p.closers = append(p.closers, f)
	return fmt.Sprintf("/proc/self/fd/%d", fd), nil
}

func atomicWrite(file string, data []byte, mode os.FileMode) error {
	return atomicfile.Write(file, data, mode)
}

// devNum is a block device's "MAJOR:MINOR", as sysfs and mountinfo write it.
func devNum(rdev uint64) string { return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)) }

// blockNum returns the device number of a block device node, or "".
func blockNum(path string) string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return ""
	}
	return devNum(uint64(fi.Sys().(*syscall.Stat_t).Rdev))
}

func readDev(sysdir string) string {
	b, err := os.ReadFile(filepath.Join(sysdir, "dev"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// mountinfo returns the mounts: device number, mount point, source.
func mountinfo() [][3]string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out [][3]string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		src := ""
		for i, x := range f {
			if x == "-" && i+2 < len(f) {
				src = f[i+2]
			}
		}
		out = append(out, [3]string{f[2], unescapeMount(f[4]), src})
	}
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// holdsRunningRoot reports whether dev is, contains or is part of the
// device the running system's / is on.
func holdsRunningRoot(dev string) (bool, string) {
	num := blockNum(dev)
	if num == "" {
		return false, ""
	}
	for _, m := range mountinfo() {
		if m[1] != "/" {
			continue
		}
		roots := []string{m[0]}
		if strings.HasPrefix(m[2], "/dev/") {
			roots = append(roots, blockNum(m[2]))
		}
		for _, r := range roots {
			// Only what / is made of counts, not what sits on other
			// partitions of its disk.
			if r != "" && (r == num || underOrAbove(r, num)) {
				return true, "/ is mounted from " + m[2]
			}
		}
	}
	return false, ""
}

// underOrAbove reports whether num is the disk of root's partition, a
// device root is made of, or root itself.
func underOrAbove(root, num string) bool {
	seen := map[string]bool{}
	var walk func(n string) bool
	walk = func(n string) bool {
		if n == "" || seen[n] {
			return false
		}
		seen[n] = true
		if n == num {
			return true
		}
		dir := "/sys/dev/block/" + n
		if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil && walk(readDev(filepath.Join(dir, ".."))) {
			return true
		}
		m, _ := filepath.Glob(filepath.Join(dir, "slaves", "*"))
		for _, s := range m {
			if walk(readDev(s)) {
				return true
			}
		}
		return false
	}
	return walk(root)
}

// mountedWhere says where dev, or anything made of it, is mounted or in
// use: a block device's partitions and holders (an open dm-crypt), an
// image file's loop devices.
func mountedWhere(dev string, fi os.FileInfo) string {
	var nums []string
	if fi.Mode().IsRegular() {
		abs, _ := filepath.Abs(dev)
		m, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, bf := range m {
			b, err := os.ReadFile(bf)
			if err != nil {
				continue
			}
			back := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
			if back == abs {
				loop := filepath.Base(filepath.Dir(filepath.Dir(bf)))
				n := readDev(filepath.Dir(filepath.Dir(bf)))
				if at := mountedNum(n); at != "" {
					return at + " (through /dev/" + loop + ")"
				}
				return "nothing, but it is attached to /dev/" + loop + " (losetup -d /dev/" + loop + " detaches it)"
			}
		}
		return ""
	}
	if n := blockNum(dev); n != "" {
		nums = append(nums, n)
	}
	for _, n := range nums {
		if at := mountedNum(n); at != "" {
			return at
		}
	}
	return ""
}

// mountedNum returns where num, its partitions or its holders are
// mounted, or "".
func mountedNum(num string) string {
	if num == "" {
		return ""
	}
	for _, m := range mountinfo() {
		if isPartOrHolder(num, m[0]) {
			return m[1]
		}
	}
	return ""
}

// isPartOrHolder reports whether other is a partition of num or stacked
// on it (recursively).
func isPartOrHolder(num, other string) bool {
	seen := map[string]bool{}
	var walk func(n string) bool
	walk = func(n string) bool {
		if seen[n] {
			return false
		}
		seen[n] = true
		if n == other {
			return true
		}
		dir := "/sys/dev/block/" + n
		m, _ := filepath.Glob(filepath.Join(dir, "holders", "*"))
		for _, h := range m {
			if walk(readDev(h)) {
				return true
			}
		}
		m, _ = filepath.Glob(filepath.Join(dir, "*", "partition"))
		for _, p := range m {
			if walk(readDev(filepath.Dir(p))) {
				return true
			}
		}
		return false
	}
	return walk(num)
}
