// Package smb is the "smb" pin: the JWE key is derived from a key file on
// an SMB2/3 share — a FRITZ!Box or any other NAS — read with a Go SMB
// client, without a kernel CIFS mount and its mount-option pitfalls.
//
// Deleting the file on the share revokes every binding made with it. See
// docs/REMOTE-PINS.md for the format and for what a thief holding the whole
// device can do.
package smb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/hirochachacha/go-smb2"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/internal/remote"
)

func init() { pin.Register("smb", Pin{}) }

// Pin implements pin.Pin.
type Pin struct{}

// Config is the pin's configuration. The password is named by file so
// that it never appears on a command line.
type Config struct {
	Server       string          `json:"server"`
	Port         int             `json:"port,omitempty"` // default 445
	Share        string          `json:"share"`
	Path         string          `json:"path"`
	User         string          `json:"user,omitempty"` // default: guest
	Domain       string          `json:"domain,omitempty"`
	PasswordFile string          `json:"password_file,omitempty"`
	Protect      *remote.Protect `json:"protect,omitempty"`
	Attempts     int             `json:"attempts,omitempty"` // default 3
}

type header struct {
	Server   string `json:"server"`
	Port     int    `json:"port"`
	Share    string `json:"share"`
	Path     string `json:"path"`
	User     string `json:"user,omitempty"`
	Domain   string `json:"domain,omitempty"`
	Salt     string `json:"salt"`
	Attempts int    `json:"attempts,omitempty"`
	remote.Credentials
}

type clevisHeader struct {
	Pin string `json:"pin"`
	SMB header `json:"smb"`
}

type creds struct {
	Password string `json:"password,omitempty"`
}

// Encrypt implements pin.Pin.
func (Pin) Encrypt(ctx context.Context, raw json.RawMessage, secret []byte, o pin.Options) (*jose.JWE, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("configuration is malformed: %v", err)
	}
	switch {
	case cfg.Server == "":
		return nil, errors.New(`configuration is missing "server"`)
	case cfg.Share == "":
		return nil, errors.New(`configuration is missing "share"`)
	case cfg.Path == "":
		return nil, errors.New(`configuration is missing "path" (the key file on the share)`)
	}
	if cfg.Port == 0 {
		cfg.Port = 445
	}
	h := header{Server: cfg.Server, Port: cfg.Port, Share: strings.Trim(cfg.Share, `\/`), Path: cleanPath(cfg.Path),
		User: cfg.User, Domain: cfg.Domain, Attempts: cfg.Attempts}
	var c creds
	var err error
	if c.Password, err = remote.ReadSecretFile("password", cfg.PasswordFile); err != nil {
		return nil, err
	}
	material, err := fetch(ctx, &h, c, o)
	if err != nil {
		return nil, err
	}
	defer clear(material)
	if h.Credentials, err = remote.SealCredentials(ctx, c, cfg.Protect, o); err != nil {
		return nil, err
	}
	return remote.Encrypt("smb", material, secret, func(salt string) (json.RawMessage, error) {
		h.Salt = salt
		return json.Marshal(clevisHeader{Pin: "smb", SMB: h})
	})
}

// Decrypt implements pin.Pin.
func (Pin) Decrypt(ctx context.Context, j *jose.JWE, o pin.Options) ([]byte, error) {
	var ch clevisHeader
	if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil || ch.SMB.Server == "" || ch.SMB.Share == "" || ch.SMB.Path == "" {
		return nil, errors.New("JWE header clevis.smb is malformed")
	}
	h := &ch.SMB
	var c creds
	if err := h.Credentials.Open(ctx, o, &c); err != nil {
		return nil, err
	}
	return remote.Decrypt(ctx, "smb", j, h.Salt, func(ctx context.Context) ([]byte, error) { return fetch(ctx, h, c, o) })
}

// Describe implements pin.Describer.
func (Pin) Describe(j *jose.JWE) string {
	var ch clevisHeader
	if json.Unmarshal(j.Header.Clevis, &ch) != nil {
		return "smb(?)"
	}
	return `smb(\\` + ch.SMB.Server + `\` + ch.SMB.Share + `\` + ch.SMB.Path + ")"
}

func cleanPath(p string) string {
	return strings.TrimLeft(strings.ReplaceAll(p, "/", `\`), `\`)
}

// NTSTATUS codes we explain.
const (
	statusAccessDenied       = 0xC0000022
	statusObjectNameNotFound = 0xC0000034
	statusObjectPathNotFound = 0xC000003A
	statusLogonFailure       = 0xC000006D
	statusBadNetworkName     = 0xC00000CC
)

const maxMaterial = 64 << 10

func fetch(ctx context.Context, h *header, c creds, o pin.Options) ([]byte, error) {
	where := fmt.Sprintf(`\\%s\%s\%s`, h.Server, h.Share, h.Path)
	addr := net.JoinHostPort(h.Server, strconv.Itoa(h.Port))
	attempts := h.Attempts
	if attempts == 0 {
		attempts = 3
	}
	return remote.Fetch(ctx, attempts, o.PerTry(), func(ctx context.Context) ([]byte, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("SMB server %s did not answer in time", addr)
			}
			return nil, fmt.Errorf("SMB server %s is unreachable: %v", addr, unwrapOp(err))
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			conn.SetDeadline(dl)
		}
		user := h.User
		if user == "" {
			user = "guest"
		}
		dialer := &smb2.Dialer{Initiator: &smb2.NTLMInitiator{User: user, Password: c.Password, Domain: h.Domain}}
		s, err := dialer.DialContext(ctx, conn)
		if err != nil {
			return nil, explain(ctx, addr, where, user, err)
		}
		defer s.Logoff()
		fs, err := s.WithContext(ctx).Mount(h.Share)
		if err != nil {
			return nil, explain(ctx, addr, where, user, err)
		}
		defer fs.Umount()
		f, err := fs.Open(h.Path)
		if err != nil {
			return nil, explain(ctx, addr, where, user, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, explain(ctx, addr, where, user, err)
		}
		if st.Size() > maxMaterial {
			return nil, remote.Permanent(fmt.Errorf("%s is larger than %d KiB: not a key file", where, maxMaterial>>10))
		}
		buf := make([]byte, st.Size())
		n, err := readFull(f, buf)
		if err != nil {
			clear(buf)
			return nil, explain(ctx, addr, where, user, err)
		}
		return buf[:n], nil
	})
}

func readFull(f *smb2.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			if n == len(buf) {
				return n, nil
			}
			return n, err
		}
		if m == 0 {
			break
		}
	}
	return n, nil
}

// explain turns SMB errors into one actionable line; errors that retrying
// cannot fix are marked permanent.
func explain(ctx context.Context, addr, where, user string, err error) error {
	var re *smb2.ResponseError
	if errors.As(err, &re) {
		switch re.Code {
		case statusLogonFailure:
			return remote.Permanent(fmt.Errorf("SMB server %s refused user %q: wrong user or password", addr, user))
		case statusAccessDenied:
			return remote.Permanent(fmt.Errorf("SMB access to %s denied for user %q", where, user))
		case statusObjectNameNotFound, statusObjectPathNotFound:
			return remote.Permanent(fmt.Errorf("key file %s does not exist: it was deleted, so this binding is revoked", where))
		case statusBadNetworkName:
			return remote.Permanent(fmt.Errorf("SMB server %s has no share %q", addr, strings.Split(where, `\`)[3]))
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return remote.Permanent(fmt.Errorf("key file %s does not exist: it was deleted, so this binding is revoked", where))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("SMB server %s did not answer in time", addr)
	}
	return fmt.Errorf("SMB %s: %v", where, err)
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}
