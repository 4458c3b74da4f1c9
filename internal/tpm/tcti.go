package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/tcp"
)

// Environment variables that choose the TPM, in order of precedence.
const (
	// EnvTCTI points tether alone at a TPM, overriding EnvTools.
	EnvTCTI = "TETHER_TPM_TCTI"
	// EnvTools is the variable tpm2-tools (and so clevis's tpm2 pin) read:
	// one setting serves tether and clevis alike.
	EnvTools = "TPM2TOOLS_TCTI"
)

// DefaultDevice is the TPM used when no TCTI is configured: the kernel's
// resource manager, which lets several programs share the TPM safely.
const DefaultDevice = "/dev/tpmrm0"

// TCTIFromEnv returns the TCTI string to use: $TETHER_TPM_TCTI, else
// $TPM2TOOLS_TCTI, else "device:/dev/tpmrm0".
func TCTIFromEnv() string {
	for _, v := range []string{EnvTCTI, EnvTools} {
		if s := strings.TrimSpace(os.Getenv(v)); s != "" {
			return s
		}
	}
	return "device:" + DefaultDevice
}

// TCTI is a parsed TCTI string, in the syntax tpm2-tools take:
//
//	device[:PATH]                  a character device (default /dev/tpmrm0)
//	swtpm[:host=H,port=P]          swtpm's TCP server (default localhost:2321)
//	mssim[:host=H,port=P]          the Microsoft/IBM simulator protocol
//	                               (commands on P, platform on P+1)
type TCTI struct {
	Name string // "device", "swtpm" or "mssim"
	Path string // device path
	Host string
	Port int
}

func (t TCTI) String() string {
	if t.Name == "device" {
		return "device:" + t.Path
	}
	return fmt.Sprintf("%s:host=%s,port=%d", t.Name, t.Host, t.Port)
}

// ParseTCTI parses a TCTI string.
func ParseTCTI(s string) (TCTI, error) {
	name, conf, _ := strings.Cut(strings.TrimSpace(s), ":")
	// tpm2-tss accepts the library file name too: libtss2-tcti-device.so.0.
	name = strings.TrimPrefix(name, "libtss2-tcti-")
	if i := strings.Index(name, ".so"); i >= 0 {
		name = name[:i]
	}
	switch name {
	case "device":
		t := TCTI{Name: name, Path: conf}
		if t.Path == "" {
			t.Path = DefaultDevice
		}
		return t, nil
	case "swtpm", "mssim":
		t := TCTI{Name: name, Host: "localhost", Port: 2321}
		if conf == "" {
			return t, nil
		}
		for _, kv := range strings.Split(conf, ",") {
			k, v, ok := strings.Cut(kv, "=")
			switch {
			case !ok:
				return TCTI{}, fmt.Errorf("TCTI %q: want key=value, got %q", s, kv)
			case k == "host":
				t.Host = v
			case k == "port":
				p, err := strconv.Atoi(v)
				if err != nil || p < 1 || p > 65534 {
					return TCTI{}, fmt.Errorf("TCTI %q: bad port %q", s, v)
				}
				t.Port = p
			default:
				return TCTI{}, fmt.Errorf("TCTI %q: unknown option %q (tether knows host and port)", s, k)
			}
		}
		return t, nil
	case "":
		return TCTI{}, fmt.Errorf("TCTI %q has no name: want device:PATH, swtpm:host=H,port=P or mssim:host=H,port=P", s)
	default:
		return TCTI{}, fmt.Errorf("TCTI %q is not supported by tether: use device:/dev/tpmrm0 (the kernel resource manager, "+
			"which replaces tabrmd), swtpm:host=H,port=P or mssim:host=H,port=P", s)
	}
}

// NoTPMError is returned when the configured TPM cannot be reached.
type NoTPMError struct {
	TCTI TCTI
	Err  error
}

func (e *NoTPMError) Error() string {
	what := "no TPM at " + e.TCTI.String()
	if e.TCTI.Name == "device" && errors.Is(e.Err, os.ErrNotExist) {
		return fmt.Sprintf("%s: the device does not exist (is the TPM enabled in the firmware and its driver loaded?); "+
			"to use another TPM set %s, e.g. device:/dev/tpm0 or swtpm:host=127.0.0.1,port=2321", what, EnvTools)
	}
	return fmt.Sprintf("%s: %v; check that it runs, or point tether at another TPM with %s (or %s for tether alone)",
		what, e.Err, EnvTools, EnvTCTI)
}

func (e *NoTPMError) Unwrap() error { return e.Err }

// ErrNoTPM matches every NoTPMError with errors.Is.
var ErrNoTPM = errors.New("no TPM")

// Is makes errors.Is(err, ErrNoTPM) true.
func (e *NoTPMError) Is(target error) bool { return target == ErrNoTPM }

// dial opens a transport to the TPM t names, connecting within ctx.
// Network connections give up at deadline, unless it is zero.
func dial(ctx context.Context, t TCTI, deadline time.Time) (transport.TPMCloser, error) {
	switch t.Name {
	case "device":
		fi, err := os.Stat(t.Path)
		if err != nil {
			return nil, &NoTPMError{t, err}
		}
		if fi.Mode()&os.ModeCharDevice == 0 {
			return nil, &NoTPMError{t, fmt.Errorf("%s is not a character device", t.Path)}
		}
		tp, err := linuxtpm.Open(t.Path)
		if err != nil {
			return nil, &NoTPMError{t, err}
		}
		return tp, nil
	case "swtpm":
		// swtpm takes plain TPM commands on its server port, as the tpm2-tss
		// swtpm TCTI sends them; its control port is not needed here.
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(t.Host, strconv.Itoa(t.Port)))
		if err != nil {
			return nil, &NoTPMError{t, err}
		}
		if !deadline.IsZero() {
			c.SetDeadline(deadline)
		}
		return retrying{&streamTPM{c}}, nil
	case "mssim":
		// The simulator must already be powered on and started, as with
		// tpm2-tools (tpm2_startup -c).
		host := t.Host
		tp, err := tcp.Open(tcp.Config{
			CommandAddress:  net.JoinHostPort(host, strconv.Itoa(t.Port)),
			PlatformAddress: net.JoinHostPort(host, strconv.Itoa(t.Port+1)),
		})
		if err != nil {
			return nil, &NoTPMError{t, err}
		}
		return retrying{tp}, nil
	}
	return nil, fmt.Errorf("TCTI %q is not supported", t.Name)
}

// retrying resends a command the TPM could not start yet (TPM_RC_RETRY,
// TPM_RC_YIELDED, TPM_RC_TESTING), as tpm2-tss does: swtpm answers
// TPM_RC_RETRY now and then. A command not started changed nothing, so
// sending the same bytes again is safe even with sessions.
type retrying struct{ transport.TPMCloser }

func (r retrying) Send(cmd []byte) ([]byte, error) {
	wait := time.Millisecond
	for try := 0; ; try++ {
		rsp, err := r.TPMCloser.Send(cmd)
		if err != nil || len(rsp) < 10 || try == 10 {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case 0x922, 0x908, 0x90A: // RETRY, YIELDED, TESTING
			time.Sleep(wait)
			wait = min(2*wait, 200*time.Millisecond)
		default:
			return rsp, nil
		}
	}
}

// streamTPM sends raw TPM commands over a byte stream and reads each
// response whole, using the size in its header.
type streamTPM struct{ c net.Conn }

const maxResponse = 1 << 16

func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	if _, err := s.c.Write(cmd); err != nil {
		return nil, fmt.Errorf("send TPM command: %w", err)
	}
	var hdr [10]byte
	if _, err := io.ReadFull(s.c, hdr[:]); err != nil {
		return nil, fmt.Errorf("read TPM response: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("read TPM response: bad size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.c, rsp[10:]); err != nil {
		return nil, fmt.Errorf("read TPM response: %w", err)
	}
	return rsp, nil
}

func (s *streamTPM) Close() error { return s.c.Close() }

// dialTimeout bounds connecting to a network TPM when the caller's
// context has no deadline.
const dialTimeout = 10 * time.Second
