package luks

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/tang"
)

// UnlockOptions are the inputs of Unlock.
type UnlockOptions struct {
	// Name is the device-mapper name to open the volume as. Empty means
	// only verify that a binding opens it (no device-mapper needed).
	Name string
	// Open passes extra options to cryptsetup open (e.g. --readonly).
	Open []string
}

// Unlocked says which binding unlocked a volume.
type Unlocked struct {
	Slot   int
	Policy string // pin.Describe of the binding
}

// Unlock tries every binding at once, each bounded by PinOptions.Timeout,
// and opens (or, without a name, verifies) the volume with the keyslot of
// the first binding that answers. cryptsetup is always told the keyslot,
// so it never spends seconds on argon2 slots first. It returns once the
// attempts still running have stopped.
func (v *Volume) Unlock(ctx context.Context, o UnlockOptions) (*Unlocked, error) {
	h, err := v.Header()
	if err != nil {
		return nil, err
	}
	if h.Reencrypting() {
		return nil, ErrReencrypting
	}
	bs := Bindings(h)
	if len(bs) == 0 {
		return nil, fmt.Errorf("%s has no clevis or tether bindings", v.Path)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// On return, stop the attempts still running and wait for them. A
	// TPM attempt cut off by the process's exit would leave its objects
	// loaded in a TPM without a resource manager (/dev/tpm0, swtpm), which
	// then refuses the next unseal with TPM_RC_OBJECT_MEMORY until reboot.
	// Every pin stops at once on cancel; TPM commands take milliseconds.
	defer wg.Wait()
	defer cancel()
	type result struct {
		b    Binding
		pass []byte
		err  error
	}
	results := make(chan result, len(bs))
	for _, b := range bs {
		if b.Err != nil {
			results <- result{b: b, err: b.Err}
			continue
		}
		wg.Add(1)
		go func(b Binding) {
			defer wg.Done()
			tctx, tcancel := context.WithTimeout(ctx, v.PinOptions.PerTry())
			defer tcancel()
			pass, err := pin.Decrypt(tctx, b.JWE, v.PinOptions)
			if err == nil {
				if err = v.Runner.TestKey(ctx, v.Path, b.Slot, pass); err != nil {
					clear(pass)
					err = fmt.Errorf("decrypted, but the passphrase does not open the keyslot: %w", err)
				}
			}
			results <- result{b: b, pass: pass, err: err}
		}(b)
	}
	go func() { wg.Wait(); close(results) }()
	var errs []string
	for range bs {
		r, ok := <-results
		if !ok {
			break
		}
		if r.err != nil {
			errs = append(errs, fmt.Sprintf("keyslot %d (%s): %v", r.b.Slot, describe(r.b), r.err))
			continue
		}
		cancel()
		defer clear(r.pass)
		if o.Name != "" {
			if err := v.Runner.Open(context.WithoutCancel(ctx), v.Path, o.Name, r.b.Slot, r.pass, o.Open...); err != nil {
				return nil, fmt.Errorf("open %s as %s with keyslot %d: %w", v.Path, o.Name, r.b.Slot, err)
			}
		}
		return &Unlocked{Slot: r.b.Slot, Policy: describe(r.b)}, nil
	}
	sort.Strings(errs)
	return nil, fmt.Errorf("no binding unlocked %s:\n  %s", v.Path, strings.Join(errs, "\n  "))
}

func describe(b Binding) string {
	if b.JWE == nil {
		return "unreadable token"
	}
	return pin.Describe(b.JWE)
}

// Check is the report on one binding.
type Check struct {
	Slot   int
	Policy string
	// Rotated lists the Tang servers whose key this binding uses that
	// no longer advertise it: run regen.
	Rotated []string
	// Unknown lists servers that could not be asked.
	Unknown []string
}

// Report checks every binding's Tang keys against what the servers
// advertise now. Bindings made before a server rotated its keys still
// unlock (the old key is kept, hidden), but should be regenerated so that
// the old key can be retired.
func (v *Volume) Report(ctx context.Context) ([]Check, error) {
	h, err := v.Header()
	if err != nil {
		return nil, err
	}
	advs := map[string]*jose.KeySet{}
	advErr := map[string]error{}
	client := &tang.Client{}
	var out []Check
	for _, b := range Bindings(h) {
		c := Check{Slot: b.Slot, Policy: describe(b)}
		if b.Err != nil {
			c.Unknown = append(c.Unknown, b.Err.Error())
			out = append(out, c)
			continue
		}
		for _, l := range pin.TangKeys(b.JWE) {
			ks, seen := advs[l.URL]
			if !seen && advErr[l.URL] == nil {
				tctx, cancel := context.WithTimeout(ctx, v.PinOptions.PerTry())
				data, err := client.Advertisement(tctx, l.URL, "")
				cancel()
				if err == nil {
					ks, _, err = tang.VerifyAdvertisement(data)
				}
				if err != nil {
					advErr[l.URL] = err
				} else {
					advs[l.URL] = ks
				}
			}
			if err := advErr[l.URL]; err != nil {
				c.Unknown = append(c.Unknown, fmt.Sprintf("%s: %v", l.URL, err))
				continue
			}
			current := false
			for _, k := range ks.WithOp("deriveKey") {
				current = current || k.MatchesThumbprint(l.Kid)
			}
			if !current {
				c.Rotated = append(c.Rotated, l.URL)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// ErrNoDeviceMapper explains why a volume cannot be opened here.
var ErrNoDeviceMapper = errors.New("device-mapper is not available on this system (the kernel lists no device-mapper in /proc/misc), so the volume cannot be opened")
