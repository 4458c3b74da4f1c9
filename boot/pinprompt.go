package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/tether-nbde/tether/pin"
)

// PINs asks a person for the PIN of a volume's TPM binding made
// "with_pin" while a boot service waits for the volume's key.
// TokenRecoverer uses it only after every binding without a PIN failed.
type PINs interface {
	// For returns the pin.Options.PIN of one attempt to recover device's
	// key. It must not block the attempt: until a PIN has been typed it
	// returns ErrPINPending, and the attempt after that gets the PIN.
	// What it asks may outlive the attempt, never ctx.
	For(ctx context.Context, device string) func(prompt string, confirm bool) ([]byte, error)
	// Wrong says the PIN For handed out for device was refused.
	Wrong(device string)
	// Done says device's key was recovered: nothing more is asked.
	Done(device string)
}

// volumeKey is the context key of WithVolumeName.
type volumeKey struct{}

// WithVolumeName names the crypttab volume a request is for, so that a
// PIN question can say "for disk NAME" as systemd-cryptsetup's own do.
func WithVolumeName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, volumeKey{}, name)
}

// ErrPINPending is what PINPrompt's PIN function returns while its question
// waits for an answer: the binding fails for this attempt only, and an
// attempt after the PIN is typed uses it.
var ErrPINPending = errors.New("waiting for the PIN to be typed (systemd-ask-password; a console, plymouth or \"systemd-tty-ask-password-agent --query\" answers it)")

// MaxWrongPINs is how many wrong PINs PINPrompt takes for one device before
// it stops asking (the TPM locks all PIN use out after a few more: its
// dictionary-attack protection).
const MaxWrongPINs = 3

// PINPrompt implements PINs with systemd's password agents: it posts the
// question with systemd-ask-password, and whatever agent shows questions at
// this boot (the console, plymouth, systemd-tty-ask-password-agent --query)
// asks the person. The zero value is ready to use.
type PINPrompt struct {
	// Command is the systemd-ask-password binary; "" finds it in $PATH.
	Command string

	mu   sync.Mutex
	asks map[string]*pinAsk
}

// pinAsk is one device's question and what came of it.
type pinAsk struct {
	cancel context.CancelFunc // withdraws the question
	asked  bool               // a question is posted and not yet answered
	answer []byte             // the typed PIN, until handed out
	err    error              // why no PIN came: cancelled, no agent, ...
	errFor <-chan struct{}    // the Done of the request err ends; a later request asks anew
	wrong  int                // PINs refused so far (at this boot: the TPM counts them too)
}

func (p *PINPrompt) ask(device string) *pinAsk {
	if p.asks == nil {
		p.asks = map[string]*pinAsk{}
	}
	a := p.asks[device]
	if a == nil {
		a = &pinAsk{}
		p.asks[device] = a
	}
	return a
}

// For implements PINs.
func (p *PINPrompt) For(ctx context.Context, device string) func(string, bool) ([]byte, error) {
	var taken []byte // this attempt's PIN: every binding of it gets the same
	return func(prompt string, confirm bool) ([]byte, error) {
		if confirm {
			return nil, pin.ErrNoPIN // a boot never makes a new PIN
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if taken != nil {
			return append([]byte{}, taken...), nil
		}
		a := p.ask(device)
		if a.err != nil && isClosed(a.errFor) {
			a.err = nil // cancelled in a request that is over: this one asks again
		}
		switch {
		case a.wrong >= MaxWrongPINs:
			return nil, pin.Permanent(fmt.Errorf("%d wrong PINs for %s: not asking again at this boot (the passphrase still opens it)", a.wrong, device))
		case a.err != nil:
			return nil, pin.Permanent(a.err)
		case a.answer != nil:
			taken = a.answer
			a.answer = nil
			return append([]byte{}, taken...), nil
		case a.asked:
			return nil, ErrPINPending
		}
		msg := fmt.Sprintf("%s for %s", prompt, device)
		if name, _ := ctx.Value(volumeKey{}).(string); name != "" {
			msg = fmt.Sprintf("%s for disk %s (%s)", prompt, name, device)
		}
		if a.wrong > 0 {
			msg = fmt.Sprintf("Wrong PIN (%d tries left). %s", MaxWrongPINs-a.wrong, msg)
		}
		if err := p.post(ctx, device, a, msg); err != nil {
			return nil, pin.Permanent(err)
		}
		return nil, ErrPINPending
	}
}

// post starts systemd-ask-password for a's question; it runs until it is
// answered, cancelled, or ctx ends. Called with p.mu held.
func (p *PINPrompt) post(ctx context.Context, device string, a *pinAsk, msg string) error {
	bin := p.Command
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("systemd-ask-password"); err != nil {
			return fmt.Errorf("nobody can be asked for the PIN here: %w", err)
		}
	}
	actx, cancel := context.WithCancel(ctx)
	// --no-tty: the question goes to the agents, whatever terminal this
	// service has; --timeout=0: it is withdrawn by cancel, not a clock.
	cmd := exec.CommandContext(actx, bin, "--no-tty", "--timeout=0", "--icon=drive-harddisk",
		"--id=tether-pin:"+device, msg)
	// SIGTERM, not SIGKILL: systemd-ask-password removes its question
	// file when terminated; killed, it would leave the question up.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		cancel()
		return fmt.Errorf("ask for the PIN: %w", err)
	}
	a.asked, a.cancel = true, cancel
	go func() {
		err := cmd.Wait()
		answer := bytes.TrimSuffix(out.Bytes(), []byte("\n"))
		p.mu.Lock()
		defer p.mu.Unlock()
		defer clear(out.Bytes())
		if p.asks[device] != a {
			return // withdrawn (Done) meanwhile
		}
		a.asked = false // the question is gone, whatever came of it
		switch {
		case actx.Err() != nil:
			// The request that asked ended: a later one asks anew.
		case err != nil:
			a.err = fmt.Errorf("the PIN question was cancelled or failed (%v): %s", err, bytes.TrimSpace(errOut.Bytes()))
			a.errFor = ctx.Done()
		default:
			a.answer = append([]byte{}, answer...)
		}
		cancel()
	}()
	return nil
}

// Wrong implements PINs.
func (p *PINPrompt) Wrong(device string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ask(device).wrong++
}

// Done implements PINs: the question, if still up, is withdrawn.
func (p *PINPrompt) Done(device string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a := p.asks[device]; a != nil {
		if a.cancel != nil {
			a.cancel()
		}
		clear(a.answer)
		delete(p.asks, device)
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
