// Command mstorm is a boot storm in managed mode: every device of a fleet
// made by bench/devices -keys unlocks at the same moment, each on its own
// mutually authenticated TLS connection, as after a site-wide power cut.
// Each unlock is what `tether decrypt` with the managed pin sends: POST
// /v1/rec with the device's identity certificate, so the server checks the
// device, its policy, records the audit entry and touches last-seen.
//
// The TLS client certificates and the request points are made before the
// clock starts; the blinded point is the device's exchange public key itself
// (a valid point), so no client elliptic-curve work counts against the server.
//
//	mstorm -data DIR -keys DIR/fleet.keys [-n 10000] [-json]
//
// DIR is the server's data directory: its admin.json names the managed API
// and its TLS key pin.
package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tether-nbde/tether/bench/internal/loadstat"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin/managed"
)

// device is one simulated machine, ready to unlock.
type device struct {
	client *managed.Client
	kid    string
	x      *jose.JWK
}

func main() {
	data := flag.String("data", "", "the server's data directory (admin.json: URL and pin)")
	keysPath := flag.String("keys", "", "the fleet's keys, written by bench/devices -keys")
	n := flag.Int("n", 0, "devices to unlock (default: all in the keys file)")
	jsonOut := flag.Bool("json", false, "print the result as JSON")
	flag.Parse()
	if *data == "" || *keysPath == "" {
		fmt.Fprintln(os.Stderr, "usage: mstorm -data DIR -keys FILE [-n N] [-json]")
		os.Exit(2)
	}
	devs, err := prepare(*data, *keysPath, *n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mstorm:", err)
		os.Exit(1)
	}
	r := storm(devs)
	if *jsonOut {
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	fmt.Println(r)
}

func prepare(data, keysPath string, n int) ([]*device, error) {
	var cfg struct{ URL, Pin string }
	b, err := os.ReadFile(filepath.Join(data, "admin.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.URL == "" || cfg.Pin == "" {
		return nil, fmt.Errorf("%s: no url and pin (%v)", filepath.Join(data, "admin.json"), err)
	}
	f, err := os.Open(keysPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var devs []*device
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() && (n == 0 || len(devs) < n) {
		d, err := newDevice(cfg.URL, cfg.Pin, sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", keysPath, len(devs)+1, err)
		}
		devs = append(devs, d)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if n > 0 && len(devs) < n {
		return nil, fmt.Errorf("%s holds %d devices, not %d", keysPath, len(devs), n)
	}
	return devs, nil
}

func newDevice(url, pin, line string) (*device, error) {
	id, rest, ok1 := strings.Cut(line, "\t")
	keyB64, pubJSON, ok2 := strings.Cut(rest, "\t")
	if !ok1 || !ok2 {
		return nil, errors.New("want ID, key and exchange key separated by tabs")
	}
	der, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("identity key cannot sign")
	}
	ident := &managed.Identity{State: managed.State{Server: url, Pin: pin, Device: id, KeyStore: "file"}, Signer: signer}
	client, err := managed.NewClient(url, pin, ident, "")
	if err != nil {
		return nil, err
	}
	x, err := jose.ParseJWK([]byte(pubJSON))
	if err != nil {
		return nil, fmt.Errorf("exchange key: %w", err)
	}
	kid, err := x.Thumbprint("S256")
	if err != nil {
		return nil, err
	}
	x.Alg, x.KeyOps = "ECMR", nil
	return &device{client: client, kid: kid, x: x}, nil
}

// storm releases every device at once and times each unlock from the
// release; Seconds is the time to the last answer.
func storm(devs []*device) loadstat.Result {
	var rec loadstat.Recorder
	var ready, wg sync.WaitGroup
	gate := make(chan struct{})
	for _, d := range devs {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-gate
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rec.Do(func() error {
				y, err := d.client.Rec(ctx, d.kid, d.x, nil)
				if err == nil && y.X == "" {
					err = errors.New("reply has no point")
				}
				return err
			})
		}()
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	wg.Wait()
	return rec.Result(time.Since(start))
}
