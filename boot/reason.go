package boot

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/tether-nbde/tether/tang"
)

// BindingError is one binding's failure to give its key.
type BindingError struct {
	Token int
	Desc  string // pin.Describe of the binding
	Err   error
}

func (e *BindingError) Error() string {
	return "token " + strconv.Itoa(e.Token) + " (" + e.Desc + "): " + e.Err.Error()
}
func (e *BindingError) Unwrap() error { return e.Err }

// RecoverError is a device none of whose bindings gave its key; it keeps
// each binding's error so the boot can say what went wrong in words.
type RecoverError struct {
	Device string
	Errs   []*BindingError // sorted by token
}

func (e *RecoverError) Error() string {
	parts := make([]string, len(e.Errs))
	for i, b := range e.Errs {
		parts[i] = b.Error()
	}
	if e.Permanent() {
		return "every binding of " + e.Device + " refused for good: " + strings.Join(parts, "; ")
	}
	return "no binding of " + e.Device + " answered: " + strings.Join(parts, "; ")
}

func (e *RecoverError) Unwrap() []error {
	out := make([]error, len(e.Errs))
	for i, b := range e.Errs {
		out[i] = b
	}
	return out
}

// Permanent reports whether every binding failed in a way that retrying
// cannot change (a revoked device, a key deleted from the server): the
// boot then stops retrying and says so.
func (e *RecoverError) Permanent() bool {
	if len(e.Errs) == 0 {
		return false
	}
	for _, b := range e.Errs {
		if !permanentCause(b.Err) {
			return false
		}
	}
	return true
}

// permanentCause recognises the refusals that cannot change by waiting.
// Pins may mark their own errors with a Permanent() bool method.
func permanentCause(err error) bool {
	var p interface{ Permanent() bool }
	if errors.As(err, &p) && p.Permanent() {
		return true
	}
	var pe *PermanentError
	return errors.As(err, &pe)
}

// Reason turns a recovery error into the words an owner can act on: the
// network's state first (nothing else matters without it), then each
// binding's failure in short: "cannot resolve tang.lan", "10.0.2.100:7500
// refused the connection", "server answered 403 (refused: device revoked
// or not allowed)", "TPM policy does not match (PCRs changed)".
func Reason(err error) string {
	var re *RecoverError
	if errors.As(err, &re) {
		seen := map[string]bool{}
		var parts []string
		for _, b := range re.Errs {
			r := reasonOne(b.Err)
			if !seen[r] {
				seen[r] = true
				parts = append(parts, r)
			}
		}
		return strings.Join(parts, "; ")
	}
	return reasonOne(err)
}

func reasonOne(err error) string {
	var dns *net.DNSError
	var se *tang.ServerError
	var op *net.OpError
	switch {
	case err == nil:
		return "no error"
	case errors.As(err, &se):
		switch se.Code {
		case 403:
			return "server " + hostOf(se.URL) + " answered 403 (refused: device revoked or not allowed)"
		case 404:
			return "server " + hostOf(se.URL) + " answered 404 (its key was rotated away or deleted)"
		}
		return "server " + hostOf(se.URL) + " answered " + strconv.Itoa(se.Code)
	case errors.As(err, &dns):
		if dns.IsTimeout {
			return "cannot resolve " + dns.Name + " (no answer from the name server)"
		}
		return "cannot resolve " + dns.Name
	case errors.Is(err, syscall.ECONNREFUSED):
		return addrOf(err, op) + " refused the connection (server down?)"
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		// net/http's unexported errServerClosedIdle: the server hung up
		// before the request went out, which it reports instead of EOF.
		strings.Contains(err.Error(), "server closed idle connection"):
		return addrOf(err, op) + " closed the connection without answering (server starting, or a proxy with no server behind it)"
	case errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to " + addrOf(err, op)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err) || strings.Contains(err.Error(), "did not answer"):
		return addrOf(err, op) + " did not answer"
	case strings.Contains(err.Error(), "POLICY_FAIL") || strings.Contains(err.Error(), "PCRs"):
		return "TPM policy does not match (PCRs changed since binding)"
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// addrOf names the server an error is about: the dialed address if the
// error carries one, else "the server".
func addrOf(err error, op *net.OpError) string {
	if errors.As(err, &op) && op.Addr != nil {
		return op.Addr.String()
	}
	var se interface{ ServerURL() string }
	if errors.As(err, &se) {
		return hostOf(se.ServerURL())
	}
	return "the server"
}

func hostOf(u string) string {
	if i := strings.Index(u, "//"); i >= 0 {
		u = u[i+2:]
	}
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	return u
}
