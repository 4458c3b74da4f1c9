// Command devices fills a managed-mode data directory with N enrolled
// devices, for the memory benchmark (bench/run.sh): what a server holds
// when a fleet of 100,000 machines is enrolled.
//
// Each device is what enrolment would store: an identity public key, a
// per-device exchange key wrapped under the KEK, state and timestamps. It
// writes through the same store API as the server, in parallel.
//
//	devices -data DIR -n 100000
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

func main() {
	data := flag.String("data", "", "server data directory (created)")
	n := flag.Int("n", 100000, "devices to create")
	keys := flag.String("keys", "", "also write the devices' keys to this file, for bench/mstorm")
	flag.Parse()
	if *data == "" {
		fmt.Fprintln(os.Stderr, "devices: -data is required")
		os.Exit(2)
	}
	if err := run(*data, *n, *keys); err != nil {
		fmt.Fprintln(os.Stderr, "devices:", err)
		os.Exit(1)
	}
}

func run(data string, n int, keysPath string) error {
	ctx := context.Background()
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	kek, _, err := managed.LoadOrCreateKEK(ctx, filepath.Join(data, "kek"))
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(data, "tether.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	var keys *fleetKeys
	if keysPath != "" {
		if keys, err = createFleetKeys(keysPath); err != nil {
			return err
		}
		defer keys.close()
	}
	start := time.Now()
	var done atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := create(ctx, st, kek, keys, i); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
				if c := done.Add(1); c%10000 == 0 {
					fmt.Fprintf(os.Stderr, "devices: %d/%d (%.0f/s)\n", c, n, float64(c)/time.Since(start).Seconds())
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return e
	}
	fmt.Fprintf(os.Stderr, "devices: %d created in %.1fs\n", n, time.Since(start).Seconds())
	if keys != nil {
		return keys.close()
	}
	return nil
}

// fleetKeys is the -keys file: "ID<TAB>identity key (PKCS#8, base64)<TAB>
// exchange public JWK" per line.
type fleetKeys struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
}

func createFleetKeys(path string) (*fleetKeys, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return &fleetKeys{f: f, w: bufio.NewWriter(f)}, nil
}

func (k *fleetKeys) add(id string, key *ecdsa.PrivateKey, exchangePub []byte) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	_, err = fmt.Fprintf(k.w, "%s\t%s\t%s\n", id, base64.StdEncoding.EncodeToString(der), exchangePub)
	return err
}

func (k *fleetKeys) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.f == nil {
		return nil
	}
	err := k.w.Flush()
	if cerr := k.f.Close(); err == nil {
		err = cerr
	}
	k.f = nil
	return err
}

func create(ctx context.Context, st store.Store, kek *managed.KEK, keys *fleetKeys, i int) error {
	idKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	spki, _ := x509.MarshalPKIXPublicKey(&idKey.PublicKey)
	id := fmt.Sprintf("dev-bench%07d", i)
	S, err := jose.P256.GenerateKey("ECMR", "deriveKey")
	if err != nil {
		return err
	}
	sjson, _ := json.Marshal(S)
	wrapped, err := kek.Wrap("device-key:"+id, sjson)
	if err != nil {
		return err
	}
	pub, _ := json.Marshal(S.Public())
	now := time.Now()
	err = st.CreateDevice(ctx, &policy.Device{
		ID: id, Name: fmt.Sprintf("host-%d", i), Group: "fleet", KeyID: managed.SPKIPin(spki), PublicKey: spki,
		State: policy.Enabled, ExchangeKey: wrapped, ExchangePub: string(pub), Created: now, Updated: now, LastSeen: now,
	})
	if err != nil || keys == nil {
		return err
	}
	return keys.add(id, idKey, pub)
}
