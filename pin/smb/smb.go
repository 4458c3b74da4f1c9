// Package smb is the "smb" pin: the JWE key is derived from a key file on
// an SMB2/3 share — a FRITZ!Box or any other NAS — read with a Go SMB
// client, without a kernel CIFS mount and its mount-option pitfalls.
//
// The SMB client runs in a helper binary, tether-smb (cmd/tether-smb,
// package share), installed next to tether: linking it into tether would
// add its package initialisation, about 0.4 ms, to every tether start. The
// pin sends the helper the request, password included, on stdin.
//
// Deleting the file on the share revokes every binding made with it. See
// docs/REMOTE-PINS.md for the format and for what a thief holding the whole
// device can do.
package smb

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
	Server       string `json:"server"`
	Port         int    `json:"port,omitempty"` // default 445
	Share        string `json:"share"`
	Path         string `json:"path"`
	User         string `json:"user,omitempty"` // default: guest
	Domain       string `json:"domain,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	// Protect encrypts the password with another pin; without it the
	// password is stored in the clear only if AllowPlainCredentials.
	Protect               *remote.Protect `json:"protect,omitempty"`
	AllowPlainCredentials bool            `json:"allow_plain_credentials,omitempty"`
	Attempts              int             `json:"attempts,omitempty"` // default 3
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
	seal := remote.Seal{Pin: "smb", What: "the share password", Where: `\\` + h.Server + `\` + h.Share,
		Audience: h.audience(), Protect: cfg.Protect, AllowPlain: cfg.AllowPlainCredentials}
	// Refuse before the share or server is asked anything.
	if err := seal.Check(c); err != nil {
		return nil, err
	}
	material, err := fetch(ctx, &h, c, o)
	if err != nil {
		return nil, err
	}
	defer clear(material)
	if h.Credentials, err = remote.SealCredentials(ctx, c, seal, o); err != nil {
		return nil, err
	}
	return remote.Encrypt("smb", material, secret, func(salt string) (json.RawMessage, error) {
		h.Salt = salt
		return json.Marshal(clevisHeader{Pin: "smb", SMB: h})
	})
}

// audience is where the password may be sent: the server, the share and
// the account (docs/REMOTE-PINS.md).
func (h *header) audience() string {
	b, _ := json.Marshal(struct {
		Server string `json:"server"`
		Port   int    `json:"port"`
		Share  string `json:"share"`
		User   string `json:"user,omitempty"`
		Domain string `json:"domain,omitempty"`
	}{h.Server, h.Port, h.Share, h.User, h.Domain})
	return string(b)
}

// parseHeader reads clevis.smb from a JWE header, which comes from a disk
// and is not trusted.
func parseHeader(clevis json.RawMessage) (*header, error) {
	var ch clevisHeader
	if err := json.Unmarshal(clevis, &ch); err != nil || ch.SMB.Server == "" || ch.SMB.Share == "" || ch.SMB.Path == "" ||
		ch.SMB.Port <= 0 || ch.SMB.Port > 65535 {
		return nil, errors.New("JWE header clevis.smb is malformed")
	}
	if _, err := ch.SMB.Credentials.Parse(); err != nil {
		return nil, fmt.Errorf("JWE header clevis.smb: %w", err)
	}
	return &ch.SMB, nil
}

// Decrypt implements pin.Pin.
func (Pin) Decrypt(ctx context.Context, j *jose.JWE, o pin.Options) ([]byte, error) {
	h, err := parseHeader(j.Header.Clevis)
	if err != nil {
		return nil, err
	}
	var c creds
	if err := h.Credentials.Open(ctx, o, h.audience(), &c); err != nil {
		return nil, err
	}
	return remote.Decrypt(ctx, "smb", j, h.Salt, func(ctx context.Context) ([]byte, error) { return fetch(ctx, h, c, o) })
}

// Describe implements pin.Describer.
func (Pin) Describe(j *jose.JWE) string {
	h, err := parseHeader(j.Header.Clevis)
	if err != nil {
		return "smb(?)"
	}
	return `smb(\\` + h.Server + `\` + h.Share + `\` + h.Path + h.Credentials.Describe() + ")"
}

func cleanPath(p string) string {
	return strings.TrimLeft(strings.ReplaceAll(p, "/", `\`), `\`)
}

// MaxMaterial is the largest key file the pin reads.
const MaxMaterial = 64 << 10

// Request is what tether sends tether-smb on stdin: the file to read and
// the credentials to read it with.
type Request struct {
	Addr      string `json:"addr"` // host:port
	Share     string `json:"share"`
	Path      string `json:"path"` // backslash-separated, relative to the share
	User      string `json:"user"`
	Domain    string `json:"domain,omitempty"`
	Password  string `json:"password,omitempty"`
	TimeoutMS int64  `json:"timeout_ms"` // for the whole exchange
	// Create, if set, is written as the file first, only if no file of
	// that name exists (tether setup makes a new key file this way): an
	// existing key file is never replaced, which would revoke every
	// binding made with it.
	Create []byte `json:"create,omitempty"`
}

// Reply is tether-smb's answer on stdout: the file, or an error that is
// one line for a person, and whether retrying can help.
type Reply struct {
	Data      []byte `json:"data,omitempty"`
	Error     string `json:"error,omitempty"`
	Permanent bool   `json:"permanent,omitempty"`
}

// HelperEnv names the tether-smb binary to run instead of the one next to
// the running executable (tests, unusual installs).
const HelperEnv = "TETHER_SMB_HELPER"

// helperPath finds tether-smb: $TETHER_SMB_HELPER, then next to the running
// executable (as installed, and in the initramfs), then on PATH.
func helperPath() (string, error) {
	if p := os.Getenv(HelperEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s names %s: %v", HelperEnv, p, errors.Unwrap(err))
		}
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "tether-smb")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("tether-smb"); err == nil {
		return p, nil
	}
	return "", errors.New("the smb pin needs the tether-smb helper, which is installed next to tether, and it is not there or on PATH")
}

func fetch(ctx context.Context, h *header, c creds, o pin.Options) ([]byte, error) {
	user := h.User
	if user == "" {
		user = "guest"
	}
	req := Request{Addr: net.JoinHostPort(h.Server, strconv.Itoa(h.Port)), Share: h.Share, Path: h.Path,
		User: user, Domain: h.Domain, Password: c.Password}
	attempts := h.Attempts
	if attempts == 0 {
		attempts = 3
	}
	return remote.Fetch(ctx, attempts, o.PerTry(), func(ctx context.Context) ([]byte, error) {
		return runHelper(ctx, req)
	})
}

// CreateKeyFile creates the key file a configuration names on its share,
// with 64 random bytes, and fails if a file of that name exists. It is
// how tether setup gives a person a key file without a computer that
// mounts the share.
func CreateKeyFile(ctx context.Context, raw json.RawMessage, o pin.Options) error {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("configuration is malformed: %v", err)
	}
	if cfg.Server == "" || cfg.Share == "" || cfg.Path == "" {
		return errors.New(`configuration needs "server", "share" and "path"`)
	}
	if cfg.Port == 0 {
		cfg.Port = 445
	}
	pw, err := remote.ReadSecretFile("password", cfg.PasswordFile)
	if err != nil {
		return err
	}
	user := cfg.User
	if user == "" {
		user = "guest"
	}
	material := make([]byte, 64)
	if _, err := rand.Read(material); err != nil {
		return err
	}
	defer clear(material)
	req := Request{Addr: net.JoinHostPort(cfg.Server, strconv.Itoa(cfg.Port)), Share: strings.Trim(cfg.Share, `\/`), Path: cleanPath(cfg.Path),
		User: user, Domain: cfg.Domain, Password: pw, Create: material}
	ctx, cancel := context.WithTimeout(ctx, o.PerTry())
	defer cancel()
	got, err := runHelper(ctx, req)
	if err != nil {
		return err
	}
	defer clear(got)
	if !bytes.Equal(got, material) {
		return fmt.Errorf(`key file \\%s\%s\%s reads back other bytes than were written`, cfg.Server, req.Share, req.Path)
	}
	return nil
}

// runHelper reads the key file through tether-smb, within ctx.
func runHelper(ctx context.Context, req Request) ([]byte, error) {
	path, err := helperPath()
	if err != nil {
		return nil, remote.Permanent(err)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(pin.DefaultTimeout)
	}
	req.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	in, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	defer clear(in)
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	runErr := cmd.Run()
	defer clear(out.Bytes())
	var rep Reply
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil || runErr != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("SMB server %s did not answer in time", req.Addr)
		}
		// Retrying cannot mend a helper that does not run or does not
		// answer as tether-smb.
		if runErr == nil {
			return nil, remote.Permanent(fmt.Errorf("%s gave no reply tether understands: is it tether-smb from this tether's build?", path))
		}
		return nil, remote.Permanent(fmt.Errorf("%s failed: %v%s", path, runErr, stderrLine(stderr.String())))
	}
	if rep.Error != "" {
		clear(rep.Data)
		if rep.Permanent {
			return nil, remote.Permanent(errors.New(rep.Error))
		}
		return nil, errors.New(rep.Error)
	}
	return rep.Data, nil
}

func stderrLine(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return ": " + strings.SplitN(s, "\n", 2)[0]
}
