package earlydial

import "syscall"

// Hooks for the external tests (package earlydial_test), which use the
// tang pin to make JWEs, and the tang pin imports this package.
var (
	Start      = start
	TangServer = tangServer
	IsDecrypt  = isDecrypt
)

// Reset forgets what start did, closing its socket.
func Reset() {
	mu.Lock()
	defer mu.Unlock()
	if fd >= 0 {
		syscall.Close(fd)
	}
	fd, addr = -1, ""
	input.data, input.err, input.read = nil, nil, false
}
