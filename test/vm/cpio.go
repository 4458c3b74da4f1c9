package vm

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// cpioEntry is one file of an initramfs (the "newc" cpio format the kernel
// unpacks).
type cpioEntry struct {
	mode uint32 // type and permission bits
	data []byte // file contents or symlink target
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
)

// writeCPIO writes entries (paths without a leading slash) in newc format,
// parents first, owned by root.
func writeCPIO(w io.Writer, entries map[string]cpioEntry) error {
	var names []string
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	ino := uint32(1)
	for _, n := range names {
		e := entries[n]
		if err := cpioHeader(w, ino, e.mode, uint32(len(e.data)), n); err != nil {
			return err
		}
		if _, err := w.Write(e.data); err != nil {
			return err
		}
		if err := pad4(w, len(e.data)); err != nil {
			return err
		}
		ino++
	}
	return cpioHeader(w, ino, 0, 0, "TRAILER!!!")
}

func cpioHeader(w io.Writer, ino, mode, size uint32, name string) error {
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if _, err := io.WriteString(w, h+name+"\x00"); err != nil {
		return err
	}
	return pad4(w, len(h)+len(name)+1)
}

func pad4(w io.Writer, n int) error {
	if r := n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// addParents adds the directories above every entry.
func addParents(entries map[string]cpioEntry) {
	for n := range entries {
		for d := n; strings.Contains(d, "/"); {
			d = d[:strings.LastIndex(d, "/")]
			if _, ok := entries[d]; !ok {
				entries[d] = cpioEntry{mode: modeDir | 0o755}
			}
		}
	}
}
