// Command floor is the least a Go tang client can do, as a yardstick for
// `tether decrypt`: it connects, sends one prepared POST /rec request and
// reads the reply — no JWE, no blinding, no unblinding, no decryption. Its
// wall time is process start, Go runtime start, one exchange with the server
// and exit; bench/run.sh times it next to the decrypt clients to show how
// much of a decrypt's time any Go client pays before doing its own work.
//
//	floor ADDR PATH BODYFILE      e.g. floor 127.0.0.1:8080 /rec/KID x.jwk
//
// It exits 1 unless the server answers 200 with the whole body.
package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: floor ADDR PATH BODYFILE")
		os.Exit(2)
	}
	addr, path := os.Args[1], os.Args[2]
	body, err := os.ReadFile(os.Args[3])
	if err != nil {
		fail(err)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		fail(err)
	}
	req := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/jwk+json\r\nContent-Length: %d\r\n\r\n%s",
		path, addr, len(body), body)
	if _, err := conn.Write(req); err != nil {
		fail(err)
	}
	reply, err := readReply(conn)
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(reply)
}

// readReply reads one HTTP/1.1 response with a Content-Length and returns
// its body; anything but 200 is an error.
func readReply(conn net.Conn) ([]byte, error) {
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			return nil, fmt.Errorf("reply larger than %d bytes", cap(buf))
		}
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if end := bytes.Index(buf, []byte("\r\n\r\n")); end >= 0 {
			head := bytes.ToLower(buf[:end])
			if !bytes.HasPrefix(head, []byte("http/1.1 200 ")) {
				return nil, fmt.Errorf("server said %q", bytes.SplitN(buf[:end], []byte("\r\n"), 2)[0])
			}
			_, after, ok := bytes.Cut(head, []byte("\r\ncontent-length:"))
			if !ok {
				return nil, fmt.Errorf("reply has no Content-Length")
			}
			v, _, _ := bytes.Cut(after, []byte("\r\n"))
			size, perr := strconv.Atoi(string(bytes.TrimSpace(v)))
			if perr != nil {
				return nil, fmt.Errorf("bad Content-Length %q", v)
			}
			if len(buf) >= end+4+size {
				return buf[end+4 : end+4+size], nil
			}
		}
		if err != nil {
			return nil, err
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "floor:", err)
	os.Exit(1)
}
