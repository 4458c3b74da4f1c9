// Package earlydial opens `tether decrypt`'s connection to its Tang server
// while the program is still starting.
//
// A stock tangd runs as one process per connection (systemd socket
// activation), and starting that process is most of a decrypt's wall time.
// The sooner the client connects, the sooner the server starts. Go
// initialises every linked package before main runs — TLS, HTTP, the TPM
// library and the rest, about half a millisecond — and none of that is
// needed to know where to connect. So this package's init, which runs
// before all of them (it imports nothing that needs them: keep it so,
// TestEarlyInit checks), does the first steps of a decrypt itself when the
// command line is `tether decrypt` (with at most --timeout):
//
//   - it reads stdin, as decrypt would (Stdin hands the bytes to decrypt);
//   - if the JWE's protected header is a tang pin whose server URL names an
//     IPv4 address (http://192.0.2.1:7500), it starts a non-blocking TCP
//     connect to that address (Take hands the socket to the tang client).
//
// Nothing here decides anything: the header is read again, fully checked,
// by the decrypt itself, and the tang client only uses the socket when it
// would dial exactly the same address. A JWE in any other shape — another
// pin, sss, a host name, IPv6 — is decrypted exactly as before, with the
// connection made in main.
package earlydial

import (
	"encoding/base64"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// MaxInput bounds what encrypt and decrypt read from stdin: pins protect
// small secrets (passphrases, keys), and a JWE of one is a few KiB.
const MaxInput = 16 << 20

var (
	// input is what init read from stdin, for Stdin.
	input struct {
		data []byte
		err  error
		read bool
	}
	// fd is the socket connecting to addr, for Take; -1 when none.
	mu   sync.Mutex
	fd   = -1
	addr string
)

func init() {
	if isDecrypt(os.Args[1:]) {
		start(os.Stdin)
	}
}

// isDecrypt reports whether args (without the program name) are a decrypt
// command that reads stdin: "decrypt", optionally with --timeout D. Any
// other argument (--help, a mistake) may stop decrypt before it reads, so
// init leaves stdin alone.
func isDecrypt(args []string) bool {
	if len(args) == 0 || args[0] != "decrypt" {
		return false
	}
	switch args = args[1:]; len(args) {
	case 0:
		return true
	case 1:
		return hasPrefix(args[0], "--timeout=") || hasPrefix(args[0], "-timeout=")
	case 2:
		return args[0] == "--timeout" || args[0] == "-timeout"
	}
	return false
}

// start reads stdin (unless it is a terminal, which decrypt refuses with
// its own message) and connects to the tang server the JWE names.
func start(stdin *os.File) {
	if fi, err := stdin.Stat(); err != nil || fi.Mode()&os.ModeCharDevice != 0 {
		return
	}
	data, err := io.ReadAll(io.LimitReader(stdin, MaxInput+1))
	input.data, input.err, input.read = data, err, true
	if err != nil || len(data) > MaxInput {
		return
	}
	a, ip, port, ok := tangServer(data)
	if !ok {
		return
	}
	fd, addr = connect(ip, port), a
}

// Stdin returns what init read from stdin, all of it up to MaxInput+1
// bytes, and the read's error. read is false when init did not read stdin
// (the command is not `tether decrypt`, or stdin is a terminal): the caller
// then reads it itself.
func Stdin() (data []byte, err error, read bool) {
	return input.data, input.err, input.read
}

// Take returns the socket init started for a server at addr ("host:port",
// the URL's host with the port made explicit), or nil if there is none.
// The socket is handed out once; its connect may still be in progress, so
// the first write waits for it, and fails if it failed. The caller owns
// the file and closes it.
func Take(a string) *os.File {
	mu.Lock()
	defer mu.Unlock()
	if fd < 0 || a != addr {
		return nil
	}
	// Blocking, so that os.NewFile leaves it out of the runtime's poller:
	// net.FileConn makes a non-blocking duplicate that goes in.
	syscall.SetNonblock(fd, false)
	f := os.NewFile(uintptr(fd), "tang")
	fd = -1
	return f
}

// connect starts a non-blocking TCP connect to ip:port and returns the
// socket, or -1 if the connect failed at once.
func connect(ip [4]byte, port int) int {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return -1
	}
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: ip}); err != nil && err != syscall.EINPROGRESS {
		syscall.Close(fd)
		return -1
	}
	return fd
}

// tangServer finds the server of a tang-pin JWE: the "url" in its
// protected header's clevis member, when that member is exactly
// {"pin":"tang","tang":{...}} and the header holds one "url" (in any case)
// and no escape. It returns the URL's host with an explicit port, and the
// address to connect to; ok is false for anything else — including a host
// that is not an IPv4 address, which would need the resolver.
func tangServer(jwe []byte) (hostport string, ip [4]byte, port int, ok bool) {
	end := 0
	for end < len(jwe) && jwe[end] != '.' {
		end++
	}
	if end == len(jwe) {
		return "", ip, 0, false
	}
	hdr := make([]byte, base64.RawURLEncoding.DecodedLen(end))
	n, err := base64.RawURLEncoding.Decode(hdr, jwe[:end])
	if err != nil {
		return "", ip, 0, false
	}
	hdr = hdr[:n]
	// JSON escapes, and member names in another case (which encoding/json
	// matches too), could make the decrypt read another URL than this
	// finds: none in tether's or clevis's headers, so none here.
	for j, c := range hdr {
		if c == '\\' {
			return "", ip, 0, false
		}
		if 'A' <= c && c <= 'Z' {
			hdr[j] = c + 'a' - 'A'
		}
	}
	const pinTang, url, httpURL = `"clevis":{"pin":"tang","tang":{`, `"url":`, `"url":"http://`
	i, u := index(hdr, pinTang), index(hdr, url)
	if i < 0 || u < i || index(hdr[u+1:], url) >= 0 ||
		len(hdr)-u < len(httpURL) || string(hdr[u:u+len(httpURL)]) != httpURL {
		return "", ip, 0, false
	}
	rest := hdr[u+len(httpURL):]
	h := 0
	for h < len(rest) && rest[h] != '/' && rest[h] != '?' && rest[h] != '#' && rest[h] != '"' {
		h++
	}
	if h == len(rest) {
		return "", ip, 0, false
	}
	host := rest[:h]
	port = 80
	c := index(host, ":")
	if c >= 0 {
		if port, ok = number(host[c+1:], 16); !ok || port == 0 {
			return "", ip, 0, false
		}
		hostport = string(host)
		host = host[:c]
	} else {
		hostport = string(host) + ":80"
	}
	if ip, ok = ipv4(host); !ok {
		return "", ip, 0, false
	}
	return hostport, ip, port, true
}

// ipv4 parses a dotted-quad IPv4 address, as Go's resolver takes it: four
// decimal numbers up to 255, no leading zeros.
func ipv4(s []byte) (ip [4]byte, ok bool) {
	for i := range 4 {
		end := 0
		for end < len(s) && s[end] != '.' {
			end++
		}
		if (i < 3) != (end < len(s)) {
			return ip, false
		}
		v, ok := number(s[:end], 8)
		if !ok {
			return ip, false
		}
		ip[i] = byte(v)
		if i < 3 {
			s = s[end+1:]
		}
	}
	return ip, true
}

// number parses a decimal number of at most bits bits: digits only, no
// leading zero.
func number(s []byte, bits int) (int, bool) {
	if len(s) > 1 && s[0] == '0' { // ParseUint takes "080", Go's IPv4 parser does not
		return 0, false
	}
	v, err := strconv.ParseUint(string(s), 10, bits)
	return int(v), err == nil
}

// hasPrefix is strings.HasPrefix. Importing strings (or bytes) would put
// this package's init after some 40 more packages' (TestEarlyInit).
func hasPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && s[:len(prefix)] == prefix
}

// index is bytes.Index for a sub that is not empty: see hasPrefix.
func index(s []byte, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i] == sub[0] && string(s[i:i+len(sub)]) == sub {
			return i
		}
	}
	return -1
}
