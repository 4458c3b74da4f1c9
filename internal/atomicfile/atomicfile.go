// Package atomicfile writes files so that readers see either the old or the
// new content, never a partial write, even across a crash.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes data to path via a temporary file in the same directory,
// fsyncs it, renames it into place and fsyncs the directory. The file gets
// mode perm from the start, so a secret is never briefly world-readable.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Rename renames oldpath to newpath (replacing it atomically) and fsyncs
// the directory, so the rename survives a crash.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(newpath))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
