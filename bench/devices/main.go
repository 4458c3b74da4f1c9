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
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/store"
)

func main() {
	data := flag.String("data", "", "server data directory (created)")
	n := flag.Int("n", 100000, "devices to create")
	flag.Parse()
	if *data == "" {
		fmt.Fprintln(os.Stderr, "devices: -data is required")
		os.Exit(2)
	}
	if err := run(*data, *n); err != nil {
		fmt.Fprintln(os.Stderr, "devices:", err)
		os.Exit(1)
	}
}

func run(data string, n int) error {
	ctx := context.Background()
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	kek, _, err := server.LoadOrCreateKEK(filepath.Join(data, "kek"))
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(data, "tether.db"))
	if err != nil {
		return err
	}
	defer st.Close()
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
				if err := create(ctx, st, kek, i); err != nil {
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
	return nil
}

func create(ctx context.Context, st store.Store, kek *server.KEK, i int) error {
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
	return st.CreateDevice(ctx, &store.Device{
		ID: id, Name: fmt.Sprintf("host-%d", i), Group: "fleet", KeyID: server.SPKIPin(spki), PublicKey: spki,
		State: store.Enabled, ExchangeKey: wrapped, ExchangePub: string(pub), Created: now, Updated: now, LastSeen: now,
	})
}
