// Package share reads a key file from an SMB2/3 share with go-smb2. It is
// the smb pin's transport, and only cmd/tether-smb links it: go-smb2's
// package initialisation costs about 0.4 ms, which every tether start would
// otherwise pay, smb binding or not. tether runs tether-smb (Serve) with a
// smb.Request on stdin and reads a smb.Reply from stdout.
package share

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hirochachacha/go-smb2"

	"github.com/tether-nbde/tether/pin/smb"
)

// Serve is tether-smb: it reads one request from in, fetches the file and
// writes the reply to out. The exit code is 0 whenever a reply was
// written, failure included; 2 means the request itself was unusable.
func Serve(in io.Reader, out io.Writer) int {
	data, err := io.ReadAll(io.LimitReader(in, 64<<10))
	if err != nil {
		fmt.Fprintf(os.Stderr, "tether-smb: read request: %v\n", err)
		return 2
	}
	defer clear(data)
	var req smb.Request
	if err := json.Unmarshal(data, &req); err != nil || req.Addr == "" || req.Share == "" || req.Path == "" || req.TimeoutMS <= 0 {
		fmt.Fprintln(os.Stderr, "tether-smb: the request on stdin is not a tether smb request (tether runs this helper; see tether help encrypt)")
		return 2
	}
	defer func() { req.Password = "" }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.TimeoutMS)*time.Millisecond)
	defer cancel()
	var rep smb.Reply
	rep.Data, err = Read(ctx, &req)
	defer clear(rep.Data)
	var perm *permanentError
	switch {
	case errors.As(err, &perm):
		rep.Error, rep.Permanent = perm.Error(), true
	case err != nil:
		rep.Error = err.Error()
	}
	b, _ := json.Marshal(rep)
	defer clear(b)
	if _, err := out.Write(b); err != nil {
		fmt.Fprintf(os.Stderr, "tether-smb: write reply: %v\n", err)
		return 1
	}
	return 0
}

// permanentError is a failure that retrying cannot fix: wrong password,
// missing file or share, access denied, a file too large to be a key.
type permanentError struct{ error }

func permanent(err error) error { return &permanentError{err} }

// NTSTATUS codes we explain.
const (
	statusAccessDenied       = 0xC0000022
	statusObjectNameNotFound = 0xC0000034
	statusObjectPathNotFound = 0xC000003A
	statusLogonFailure       = 0xC000006D
	statusBadNetworkName     = 0xC00000CC
)

// Read returns the contents of the file r names, at most smb.MaxMaterial
// bytes, after creating it with r.Create if that is set. Errors are one
// line a person can act on.
func Read(ctx context.Context, r *smb.Request) ([]byte, error) {
	host, _, err := net.SplitHostPort(r.Addr)
	if err != nil {
		host = r.Addr
	}
	where := `\\` + host + `\` + r.Share + `\` + r.Path // a UNC path, as the share's users know it
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("SMB server %s did not answer in time", r.Addr)
		}
		return nil, fmt.Errorf("SMB server %s is unreachable: %v", r.Addr, unwrapOp(err))
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	dialer := &smb2.Dialer{Initiator: &smb2.NTLMInitiator{User: r.User, Password: r.Password, Domain: r.Domain}}
	s, err := dialer.DialContext(ctx, conn)
	if err != nil {
		return nil, explain(ctx, r, where, err)
	}
	defer s.Logoff()
	fs, err := s.WithContext(ctx).Mount(r.Share)
	if err != nil {
		return nil, explain(ctx, r, where, err)
	}
	defer fs.Umount()
	if len(r.Create) > 0 {
		if len(r.Create) > smb.MaxMaterial {
			return nil, permanent(errors.New("the key file to create is too large"))
		}
		if err := create(fs, r.Path, r.Create); err != nil {
			if errors.Is(err, os.ErrExist) {
				return nil, permanent(fmt.Errorf("key file %s exists already: it is not replaced (that would revoke every binding made with it)", where))
			}
			return nil, explain(ctx, r, where, err)
		}
	}
	f, err := fs.Open(r.Path)
	if err != nil {
		return nil, explain(ctx, r, where, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, explain(ctx, r, where, err)
	}
	if st.Size() > smb.MaxMaterial {
		return nil, permanent(fmt.Errorf("%s is larger than %d KiB: not a key file", where, smb.MaxMaterial>>10))
	}
	buf := make([]byte, st.Size())
	n, err := io.ReadFull(f, buf)
	if err != nil && !(errors.Is(err, io.ErrUnexpectedEOF) && n > 0) {
		clear(buf)
		return nil, explain(ctx, r, where, err)
	}
	return buf[:n], nil
}

// create writes a new file, failing if one of that name exists.
func create(fs *smb2.Share, path string, data []byte) error {
	f, err := fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		fs.Remove(path)
		return err
	}
	return f.Close()
}

// explain turns SMB errors into one actionable line; errors that retrying
// cannot fix are marked permanent.
func explain(ctx context.Context, r *smb.Request, where string, err error) error {
	var re *smb2.ResponseError
	if errors.As(err, &re) {
		switch re.Code {
		case statusLogonFailure:
			return permanent(fmt.Errorf("SMB server %s refused user %q: wrong user or password", r.Addr, r.User))
		case statusAccessDenied:
			return permanent(fmt.Errorf("SMB access to %s denied for user %q", where, r.User))
		case statusObjectNameNotFound, statusObjectPathNotFound:
			return permanent(fmt.Errorf("key file %s does not exist: it was deleted, so this binding is revoked", where))
		case statusBadNetworkName:
			return permanent(fmt.Errorf("SMB server %s has no share %q", r.Addr, r.Share))
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return permanent(fmt.Errorf("key file %s does not exist: it was deleted, so this binding is revoked", where))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("SMB server %s did not answer in time", r.Addr)
	}
	return fmt.Errorf("SMB %s: %v", where, strings.TrimPrefix(err.Error(), "smb2: "))
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

// Usage is tether-smb's manual: its --help and its man page
// (internal/docgen).
const Usage = `Usage: tether-smb < REQUEST > REPLY
       tether-smb --version

tether-smb is the helper through which tether's smb pin reads its key file
from an SMB2/3 share. tether runs it; there is nothing to run by hand. It
reads one JSON request on stdin (server address, share, path, user and
password, time limit; for tether setup, the contents of a new key file to
create first, never replacing one) and writes one JSON reply on stdout:
the file's contents, or an error.

Install it next to tether (or on PATH): "tether encrypt smb", "tether luks
bind ... smb" and every unlock of an smb binding need it, and the initramfs
hooks of "tether install" copy it when it is there. See docs/REMOTE-PINS.md.
`
