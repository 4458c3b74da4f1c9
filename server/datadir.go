package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// lockFile is taken shared by every server running on a data directory,
// and exclusively by offline commands that must not run beside one.
const lockFile = "server.lock"

// lockDataDir takes the data directory's lock shared for a running
// server; unlock releases it. It waits while an offline command holds it.
func lockDataDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock the data directory: %w", err)
	}
	return func() { f.Close() }, nil
}

// ErrServerRunning means a server holds the data directory.
var ErrServerRunning = errors.New("a tether server is running on this data directory")

// LockDataDirOffline takes the data directory's lock exclusively, for a
// command that changes the store while no server may use it. It fails with
// ErrServerRunning if a server on this machine holds it. (Replicas on
// other machines, sharing a PostgreSQL store, cannot be seen this way.)
func LockDataDirOffline(dir string) (unlock func(), err error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (it holds %s)", ErrServerRunning, filepath.Join(dir, lockFile))
		}
		return nil, fmt.Errorf("lock the data directory: %w", err)
	}
	return func() { f.Close() }, nil
}

// listenError says which listener could not start and what to do.
func listenError(what, addr, flag string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listen on %s for %s: the address is in use; stop what listens there or choose another with %s", addr, what, flag)
	}
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EACCES) {
		// Not wrapped: the caller's hint for a permission error is about
		// the data directory.
		return fmt.Errorf("listen on %s for %s: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE, or choose another with %s", addr, what, flag)
	}
	return fmt.Errorf("listen on %s for %s: %w", addr, what, err)
}
