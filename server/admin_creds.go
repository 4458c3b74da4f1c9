package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

// The admin credentials (DATA/admin.json) are the one way into a managed
// server's administration. Whatever fails, they must exist: written before
// the store records the token on first start (initAdminToken), and
// reissued offline by root with "tether admin reset-credentials" when the
// file is lost.

// WriteAdminConfig writes admin credentials to path, 0600, atomically.
func WriteAdminConfig(path string, c AdminConfig) error {
	b, _ := json.MarshalIndent(c, "", "  ")
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// AdminConfigModeWarning returns a warning if the admin credentials file
// at path can be read by anyone but its owner, and "" otherwise. A reader
// warns rather than refuses: the token may already have leaked, and
// refusing would only keep the administrator from rotating it.
func AdminConfigModeWarning(path string) string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("%s holds the admin token and is readable by others (mode %04o): run chmod 600 %s, and if others could log in here, reissue the token with tether admin reset-credentials",
		path, fi.Mode().Perm(), path)
}

// ResetAdminCredentials replaces the admin token in the store by a new
// one, which it writes with url and the stored pin to file first (so a
// failure leaves the old token valid, or the new one written), and audits
// the change. The old token stops working at once, on every replica.
func ResetAdminCredentials(ctx context.Context, st store.Store, url, file string) (AdminConfig, error) {
	pin, err := managed.StoredPin(ctx, st)
	if err != nil {
		return AdminConfig{}, err
	}
	c := AdminConfig{URL: url, Pin: pin, Token: wire.RandomToken(32)}
	if err := WriteAdminConfig(file, c); err != nil {
		return AdminConfig{}, fmt.Errorf("write admin credentials: %w", err)
	}
	h := sha256.Sum256([]byte(c.Token))
	if err := st.SetSetting(ctx, adminTokenSetting, hex.EncodeToString(h[:])); err != nil {
		return AdminConfig{}, fmt.Errorf("store the new admin token: %w (%s holds a token the store does not know; run this again)", err, file)
	}
	err = st.AppendAudit(ctx, &audit.Record{Action: "admin.reset-credentials", Actor: "root", Decision: audit.OK,
		Reason: "admin token reissued offline; the old one no longer works"})
	if err != nil {
		return c, fmt.Errorf("the new admin token works, but the audit record of the change failed: %w", err)
	}
	return c, nil
}

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
