package command

import (
	"errors"
	"fmt"
)

// usageError marks an error as wrong use of the command (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Usagef is an error for wrong use of a command: Report adds a hint to
// read its manual, and the exit status is 2.
func Usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// hintError carries advice for the person after the error itself.
type hintError struct {
	err  error
	hint string
}

func (e hintError) Error() string { return e.err.Error() }
func (e hintError) Unwrap() error { return e.err }

// WithHint attaches advice for the person to err (nil stays nil).
func WithHint(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return hintError{err: err, hint: fmt.Sprintf(format, a...)}
}

// Hint returns the advice attached to err or to an error it wraps.
func Hint(err error) (string, bool) {
	var h hintError
	if errors.As(err, &h) {
		return h.hint, true
	}
	return "", false
}

// HasHint reports whether err itself (not an error it wraps) carries
// advice, so that a caller adds its own only where none is given.
func HasHint(err error) bool {
	_, ok := err.(hintError)
	return ok
}

// SilentExit is an exit status that is an answer, not an error (a test
// such as "needs-network" says no): nothing is printed.
type SilentExit int

func (e SilentExit) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// ExitError makes a command exit with its own status instead of 1, for
// a failure a supervisor must tell apart (systemd's
// RestartPreventExitStatus=).
type ExitError struct {
	Code int
	Err  error
}

func (e ExitError) Error() string { return e.Err.Error() }
func (e ExitError) Unwrap() error { return e.Err }

// Report prints err for the person and returns the exit status of the
// command named name (words after "tether"; its manual is the hint for a
// usage error).
func Report(env *Env, name string, err error) int {
	if err == nil {
		return 0
	}
	var se SilentExit
	if errors.As(err, &se) {
		return int(se)
	}
	fmt.Fprintf(env.Stderr, "tether: error: %v\n", err)
	if hint, ok := Hint(err); ok {
		fmt.Fprintf(env.Stderr, "tether: hint: %s\n", hint)
	}
	var u usageError
	if errors.As(err, &u) {
		fmt.Fprintf(env.Stderr, "tether: hint: run \"tether %s --help\" for usage\n", name)
		return 2
	}
	var x ExitError
	if errors.As(err, &x) {
		return x.Code
	}
	return 1
}
