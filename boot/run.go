package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
	"time"
)

// RunOptions are the inputs of RunMounted.
type RunOptions struct {
	Device       string
	Name         string // the /dev/mapper name
	Mount        string // where to mount it
	MountOptions string // mount -o; "" for none
	Deadline     time.Duration
	Recoverer    Recoverer
	Cryptsetup   Cryptsetup
	Log          *log.Logger
	// Command is started once the volume is mounted; it is not started
	// yet. Its exit status is RunMounted's.
	Command *exec.Cmd
	// Signals are forwarded to Command while it runs; a signal that comes
	// before Command starts cancels the unlock. Cleanup happens either way.
	Signals <-chan os.Signal
}

// CommandError is Command's failure: its exit status is in Code.
type CommandError struct {
	Code int
	Err  error
}

func (e *CommandError) Error() string {
	if e.Code >= 0 {
		return fmt.Sprintf("the command exited with status %d", e.Code)
	}
	return fmt.Sprintf("the command failed: %v", e.Err)
}
func (e *CommandError) Unwrap() error { return e.Err }

// RunMounted is the backup-drive flow: unlock the volume with its bindings,
// mount it, run the command, then unmount and close — whatever the command
// did, and also when interrupted. Cleanup errors are reported with the
// command's own.
func RunMounted(ctx context.Context, o RunOptions) (err error) {
	l := o.Log
	if l == nil {
		l = log.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Until the command runs, a signal means: stop unlocking, clean up.
	stopEarly := make(chan struct{})
	go func() {
		select {
		case s := <-o.Signals:
			l.Printf("tether: %v: stopping before the command started", s)
			cancel()
		case <-stopEarly:
		}
	}()
	if _, err := os.Stat("/dev/mapper/" + o.Name); err == nil {
		close(stopEarly)
		return fmt.Errorf("/dev/mapper/%s is already open: another run, or choose another name with -n", o.Name)
	}
	dctx, dcancel := context.WithTimeout(ctx, o.Deadline)
	key, err := Retry(dctx, 0, 0, func(ctx context.Context) (Key, error) { return o.Recoverer.Recover(ctx, o.Device) })
	dcancel()
	if err != nil {
		close(stopEarly)
		return fmt.Errorf("unlock %s: %w", o.Device, err)
	}
	err = o.Cryptsetup.Open(ctx, o.Device, o.Name, key)
	clear(key.Passphrase)
	if err != nil {
		close(stopEarly)
		return fmt.Errorf("unlock %s: %w", o.Device, err)
	}
	mapper := "/dev/mapper/" + o.Name
	defer func() {
		// Not ctx: cleanup must run even when interrupted.
		cerr := closeRetry(o.Cryptsetup, o.Name)
		if cerr != nil {
			l.Printf("tether: could not close %s: %v", mapper, cerr)
			err = errors.Join(err, fmt.Errorf("close %s: %w", mapper, cerr))
		}
	}()
	margs := []string{}
	if o.MountOptions != "" {
		margs = append(margs, "-o", o.MountOptions)
	}
	margs = append(margs, mapper, o.Mount)
	if merr := runQuiet("mount", margs...); merr != nil {
		close(stopEarly)
		return fmt.Errorf("mount %s on %s: %w", mapper, o.Mount, merr)
	}
	defer func() {
		if uerr := umountRetry(o.Mount); uerr != nil {
			l.Printf("tether: could not unmount %s: %v", o.Mount, uerr)
			err = errors.Join(err, fmt.Errorf("unmount %s: %w", o.Mount, uerr))
		}
	}()
	close(stopEarly)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted before the command started")
	}
	if err := o.Command.Start(); err != nil {
		return &CommandError{Code: -1, Err: err}
	}
	done := make(chan error, 1)
	go func() { done <- o.Command.Wait() }()
	for {
		select {
		case s := <-o.Signals:
			l.Printf("tether: %v: passing it to the command; the volume is closed when it exits", s)
			o.Command.Process.Signal(s)
		case werr := <-done:
			if werr == nil {
				return nil
			}
			var ee *exec.ExitError
			if errors.As(werr, &ee) {
				return &CommandError{Code: ee.ExitCode(), Err: werr}
			}
			return &CommandError{Code: -1, Err: werr}
		}
	}
}

func runQuiet(name string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// umountRetry unmounts dir, retrying for a while: a process the command
// left behind may still hold a file open for a moment.
func umountRetry(dir string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = runQuiet("umount", dir); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

func closeRetry(c Cryptsetup, name string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = c.Close(context.Background(), name); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}
