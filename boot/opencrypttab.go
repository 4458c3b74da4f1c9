package boot

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"
)

// Opener opens a LUKS device as /dev/mapper/name with a key; Cryptsetup
// is the real one.
type Opener interface {
	Open(ctx context.Context, device, name string, key Key) error
}

// OpenCrypttab opens, at the same time, every crypttab entry (or those
// named) that is not open yet and has bindings, each bounded by deadline:
// what an initramfs does before its own prompt. Entries without bindings
// are skipped quietly (the prompt handles them). It returns the number of
// bound volumes left closed, each of which got one log line saying why.
func OpenCrypttab(ctx context.Context, ents []CrypttabEntry, names []string, r Recoverer, o Opener, deadline time.Duration, l *log.Logger) int {
	if l == nil {
		l = log.Default()
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var mu sync.Mutex
	failed := 0
	var wg sync.WaitGroup
	for _, e := range ents {
		if len(want) > 0 && !want[e.Name] {
			continue
		}
		if _, err := os.Stat("/dev/mapper/" + e.Name); err == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			dctx, cancel := context.WithTimeout(ctx, deadline)
			defer cancel()
			var dev string
			key, err := Retry(dctx, 0, 0, func(ctx context.Context) (Key, error) {
				d, err := ResolveDevice(e.Device)
				if err != nil {
					return Key{}, err
				}
				dev = d
				return r.Recover(ctx, d)
			})
			if err == nil {
				defer clear(key.Passphrase)
				err = o.Open(ctx, dev, e.Name, key)
			}
			took := time.Since(start).Round(time.Millisecond)
			switch {
			case err == nil:
				l.Printf("tether: opened %s as /dev/mapper/%s (keyslot %d) after %s", dev, e.Name, key.Slot, took)
			case IsPermanent(err) && (dev != "") && isNotBound(err):
				// Not ours to open.
			default:
				mu.Lock()
				failed++
				mu.Unlock()
				l.Printf("tether: volume %q (%s) left closed after %s: %v", e.Name, e.Device, took, err)
			}
		}()
	}
	wg.Wait()
	return failed
}

func isNotBound(err error) bool { return errors.Is(err, ErrNotBound) }

// Check at compile time that Cryptsetup is an Opener.
var _ Opener = Cryptsetup{}

// String describes a key without revealing it.
func (k Key) String() string { return fmt.Sprintf("key(token %d, keyslot %d)", k.Token, k.Slot) }
