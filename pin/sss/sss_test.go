package sss_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/sss"
	_ "github.com/tether-nbde/tether/pin/tang"
	"github.com/tether-nbde/tether/tang"
)

// fakePin is a child pin for tests: its JWE holds the plaintext under a
// fixed key, and its config says whether decryption works, fails or hangs.
type fakePin struct{}

type fakeCfg struct {
	Mode string `json:"mode"` // "", "fail", "final" (pin.Permanent), "hang" or "linger"
	ID   string `json:"id,omitempty"`
}

var fakeKey = bytes.Repeat([]byte{0x42}, 32)

func init() { pin.Register("fake", fakePin{}) }

// lingerStopped holds the IDs of the "linger" children that have stopped.
var lingerStopped sync.Map

func (fakePin) Encrypt(_ context.Context, cfg json.RawMessage, secret []byte, _ pin.Options) (*jose.JWE, error) {
	var c fakeCfg
	if err := json.Unmarshal(cfg, &c); err != nil {
		return nil, err
	}
	if c.Mode == "refuse" {
		return nil, errors.New("fake pin refuses to encrypt")
	}
	ch, _ := json.Marshal(map[string]any{"pin": "fake", "fake": c})
	return jose.Encrypt(jose.Header{Alg: "dir", Clevis: ch}, fakeKey, secret)
}

func (fakePin) Decrypt(ctx context.Context, j *jose.JWE, o pin.Options) ([]byte, error) {
	var h struct{ Fake fakeCfg }
	json.Unmarshal(j.Header.Clevis, &h)
	switch h.Fake.Mode {
	case "fail":
		return nil, fmt.Errorf("fake child %s failed", h.Fake.ID)
	case "final":
		return nil, pin.Permanent(fmt.Errorf("fake child %s refused for good", h.Fake.ID))
	case "linger":
		// Never answers; on cancel it takes a while to stop, as a tpm2
		// child flushes its objects, and then says it has stopped.
		<-ctx.Done()
		time.Sleep(300 * time.Millisecond)
		lingerStopped.Store(h.Fake.ID, true)
		return nil, ctx.Err()
	case "hang":
		ctx, cancel := context.WithTimeout(ctx, o.PerTry())
		defer cancel()
		<-ctx.Done()
		return nil, fmt.Errorf("fake child %s did not answer in time", h.Fake.ID)
	}
	return j.Decrypt(fakeKey)
}

func fakeChild(t testing.TB, mode, id string, share []byte) string {
	t.Helper()
	cfg, _ := json.Marshal(fakeCfg{Mode: mode, ID: id})
	j, err := fakePin{}.Encrypt(context.Background(), cfg, share, pin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return j.Compact()
}

// shares is an independent Shamir implementation for building sss JWEs by
// hand: the test knows the polynomial, so it can test Decrypt alone.
type shares struct {
	p      *big.Int
	coeffs []*big.Int
}

// testP is 2^256 − 189, the largest 256-bit prime: Decrypt needs a prime
// field, not a safe prime.
var testP, _ = new(big.Int).SetString("115792089237316195423570985008687907853269984665640564039457584007913129639747", 10)

func newShares(t testing.TB, threshold int) *shares {
	s := &shares{p: testP}
	for i := 0; i < threshold; i++ {
		c, err := rand.Int(rand.Reader, testP)
		if err != nil {
			t.Fatal(err)
		}
		s.coeffs = append(s.coeffs, c)
	}
	return s
}

func (s *shares) at(x int64) []byte {
	X := big.NewInt(x)
	y := new(big.Int)
	xp := big.NewInt(1)
	for _, c := range s.coeffs {
		y.Add(y, new(big.Int).Mul(c, xp))
		xp.Mul(xp, X)
	}
	y.Mod(y, s.p)
	out := make([]byte, 64)
	X.FillBytes(out[:32])
	y.FillBytes(out[32:])
	return out
}

func (s *shares) jwe(t testing.TB, secret []byte, children ...string) *jose.JWE {
	t.Helper()
	ch, _ := json.Marshal(map[string]any{"pin": "sss", "sss": map[string]any{
		"jwe": children, "p": jose.B64.EncodeToString(s.p.FillBytes(make([]byte, 32))), "t": len(s.coeffs),
	}})
	j, err := jose.Encrypt(jose.Header{Alg: "dir", Clevis: ch}, s.coeffs[0].FillBytes(make([]byte, 32)), secret)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestDecryptThresholds(t *testing.T) {
	t.Parallel()
	secret := []byte("sss secret")
	s := newShares(t, 2)
	ok1, ok2, ok3 := fakeChild(t, "", "1", s.at(1)), fakeChild(t, "", "2", s.at(2)), fakeChild(t, "", "3", s.at(3))
	fail := fakeChild(t, "fail", "F", s.at(4))
	fail2 := fakeChild(t, "fail", "G", s.at(5))
	hang := fakeChild(t, "hang", "H", s.at(6))
	short := fakeChild(t, "", "S", []byte("short"))
	tests := []struct {
		name     string
		children []string
		timeout  time.Duration
		wantErr  []string // substrings of the error; nil means success
	}{
		{"2 of 2", []string{ok1, ok2}, 0, nil},
		{"2 of 3", []string{ok1, ok2, ok3}, 0, nil},
		{"one fails", []string{fail, ok1, ok3}, 0, nil},
		{"duplicate plus one", []string{ok1, ok1, ok2}, 0, nil},
		{"one hangs", []string{hang, ok1, ok2}, time.Minute, nil},
		{"malformed child", []string{"not.a.jwe", ok1, ok2}, 0, nil},
		{"duplicates only", []string{ok1, ok1}, 0, []string{"only 1 of the 2"}},
		{"two fail", []string{fail, fail2, ok2}, 0, []string{"only 1 of the 2", "fake child F failed", "fake child G failed"}},
		{"two hang", []string{hang, hang, ok1}, 300 * time.Millisecond, []string{"only 1 of the 2", "did not answer"}},
		{"short share", []string{short, ok1}, 0, []string{"share is 5 bytes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := s.jwe(t, secret, tc.children...)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			start := time.Now()
			got, err := pin.Decrypt(ctx, j, pin.Options{Timeout: tc.timeout})
			elapsed := time.Since(start)
			if tc.wantErr == nil {
				if err != nil || !bytes.Equal(got, secret) {
					t.Fatalf("got %q, %v", got, err)
				}
			} else {
				if err == nil {
					t.Fatal("decrypt succeeded")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if len(got) != 0 {
					t.Errorf("output on error: %q", got)
				}
			}
			// A hanging child must not hold up the answer: with a one
			// minute per-child timeout, success comes long before.
			if tc.timeout == time.Minute && elapsed > 20*time.Second {
				t.Errorf("took %v: waited for the hanging child", elapsed)
			}
		})
	}
}

// TestDecryptWaitsForTheOthers: once t children have answered, the
// others are stopped and waited for before Decrypt returns, so none is
// cut off mid-way by the process's exit (a tpm2 child would leave its
// objects loaded in a TPM without a resource manager).
func TestDecryptWaitsForTheOthers(t *testing.T) {
	t.Parallel()
	secret := []byte("sss secret")
	s := newShares(t, 2)
	j := s.jwe(t, secret, fakeChild(t, "linger", "L", s.at(1)), fakeChild(t, "", "1", s.at(2)), fakeChild(t, "", "2", s.at(3)))
	got, err := pin.Decrypt(context.Background(), j, pin.Options{Timeout: time.Minute})
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, ok := lingerStopped.Load("L"); !ok {
		t.Fatal("Decrypt returned while a child was still running")
	}
}

// TestDecryptPermanent: sss gives up for good (pin.PermanentError) as
// soon as the children that refused for good leave fewer than t that can
// still succeed, without waiting for a hanging child; while enough
// children might still answer, its failure is not permanent.
func TestDecryptPermanent(t *testing.T) {
	t.Parallel()
	s := newShares(t, 2)
	ok1 := fakeChild(t, "", "1", s.at(1))
	final := fakeChild(t, "final", "R", s.at(2))
	final2 := fakeChild(t, "final", "Q", s.at(3))
	fail := fakeChild(t, "fail", "F", s.at(4))
	hang := fakeChild(t, "hang", "H", s.at(5))
	tests := []struct {
		name      string
		children  []string
		timeout   time.Duration
		permanent bool
	}{
		// ok1 and the hanging child could still make 2: waited for.
		{"final and hang leave two", []string{final, hang, ok1}, 300 * time.Millisecond, false},
		{"two final of three", []string{final, final2, hang}, time.Minute, true},
		{"final of two", []string{final, hang}, time.Minute, true},
		{"final and a transient failure", []string{final, fail, ok1}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			start := time.Now()
			_, err := pin.Decrypt(ctx, s.jwe(t, []byte("x"), tc.children...), pin.Options{Timeout: tc.timeout})
			took := time.Since(start)
			switch {
			case err == nil:
				t.Fatal("decrypt succeeded")
			case pin.IsPermanent(err) != tc.permanent:
				t.Errorf("permanent = %v, want %v: %v", pin.IsPermanent(err), tc.permanent, err)
			}
			if !tc.permanent && tc.timeout > 0 && took < tc.timeout {
				t.Errorf("gave up after %v, before the hanging child's timeout %v", took, tc.timeout)
			}
			if tc.permanent {
				if took > 5*time.Second {
					t.Errorf("took %v: waited for the hanging child although it could not help", took)
				}
				if !strings.Contains(err.Error(), "refused for good") {
					t.Errorf("error does not say why it gave up: %v", err)
				}
			}
		})
	}
}

func TestDecryptHeaderErrors(t *testing.T) {
	t.Parallel()
	s := newShares(t, 2)
	ok := fakeChild(t, "", "1", s.at(1))
	mk := func(clevis string) *jose.JWE {
		j, _ := jose.Encrypt(jose.Header{Alg: "dir", Clevis: json.RawMessage(clevis)}, fakeKey, []byte("x"))
		return j
	}
	for name, j := range map[string]*jose.JWE{
		"t too large": mk(`{"pin":"sss","sss":{"jwe":["` + ok + `"],"p":"` + jose.B64.EncodeToString(testP.Bytes()) + `","t":2}}`),
		"t zero":      mk(`{"pin":"sss","sss":{"jwe":["` + ok + `"],"p":"` + jose.B64.EncodeToString(testP.Bytes()) + `","t":0}}`),
		"no p":        mk(`{"pin":"sss","sss":{"jwe":["` + ok + `"],"t":1}}`),
		"p too long":  mk(`{"pin":"sss","sss":{"jwe":["` + ok + `"],"p":"` + jose.B64.EncodeToString(make([]byte, 33)) + `","t":1}}`),
		"p tiny":      mk(`{"pin":"sss","sss":{"jwe":["` + ok + `"],"p":"Ag","t":1}}`),
		"sss array":   mk(`{"pin":"sss","sss":[]}`),
	} {
		if _, err := pin.Decrypt(context.Background(), j, pin.Options{}); err == nil {
			t.Errorf("%s: decrypt succeeded", name)
		}
	}
	j := s.jwe(t, []byte("x"), ok, ok)
	j.Header.Alg = "ECDH-ES"
	if _, err := pin.Decrypt(context.Background(), j, pin.Options{}); err == nil {
		t.Error("alg ECDH-ES accepted")
	}
}

func TestEncryptRoundTrip(t *testing.T) {
	t.Parallel()
	secret := []byte("round trip")
	for _, tc := range []struct {
		cfg  string
		fail []int // children (in order) to make fail at decryption
	}{
		{`{"t":1,"pins":{"fake":{}}}`, nil},
		{`{"t":2,"pins":{"fake":[{},{},{}]}}`, nil},
		{`{"t":3,"pins":{"fake":[{},{},{}]}}`, nil},
		{`{"t":2,"pins":{"fake":[{"mode":"fail"},{},{}]}}`, nil},
		{`{"t":2,"pins":{"fake":[{},{}],"sss":{"t":1,"pins":{"fake":[{"mode":"fail"},{}]}}}}`, nil},
	} {
		j, err := pin.Encrypt(context.Background(), "sss", json.RawMessage(tc.cfg), secret, pin.Options{})
		if err != nil {
			t.Fatalf("%s: %v", tc.cfg, err)
		}
		// The header has clevis's shape and a 256-bit safe prime.
		var ch struct {
			Pin string
			SSS struct {
				JWE []string
				P   string
				T   int
			}
		}
		if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil || ch.Pin != "sss" || j.Header.Alg != "dir" {
			t.Fatalf("%s: header %s", tc.cfg, j.Header.Clevis)
		}
		pb, _ := jose.B64.DecodeString(ch.SSS.P)
		p := new(big.Int).SetBytes(pb)
		if len(pb) != 32 || !p.ProbablyPrime(20) || !new(big.Int).Rsh(p, 1).ProbablyPrime(20) {
			t.Errorf("%s: p is not a 256-bit safe prime", tc.cfg)
		}
		got, err := pin.Decrypt(context.Background(), j, pin.Options{})
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("%s: decrypt: %q, %v", tc.cfg, got, err)
		}
		if d := pin.Describe(j); !strings.HasPrefix(d, "sss(t=") {
			t.Errorf("Describe = %q", d)
		}
	}
}

func TestEncryptConfigErrors(t *testing.T) {
	t.Parallel()
	for _, cfg := range []string{
		`{"t":0,"pins":{"fake":{}}}`,
		`{"t":2,"pins":{"fake":{}}}`,
		`{"t":1,"pins":{}}`,
		`{"t":1}`,
		`{"t":1,"pins":{"fake":1}}`,
		`{"t":1,"pins":{"fake":[1]}}`,
		`{"t":"1","pins":{"fake":{}}}`,
		`[]`,
		`{"t":1,"pins":{"nosuchpin":{}}}`,
		`{"t":1,"pins":{"fake":{"mode":"refuse"}}}`,
	} {
		if _, err := pin.Encrypt(context.Background(), "sss", json.RawMessage(cfg), []byte("x"), pin.Options{}); err == nil {
			t.Errorf("%s: accepted", cfg)
		}
	}
}

// TestClevisVector decrypts an sss JWE made by clevis (t=2 of three tang
// children at 127.84.1.{1,2,3}:7500), with one or two servers down.
func TestClevisVector(t *testing.T) {
	want, err := os.ReadFile("../tang/testdata/secret.txt")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile("../tang/testdata/sss.jwe")
	j, err := jose.ParseCompact(string(data))
	if err != nil {
		t.Fatal(err)
	}
	listen := func(addr string) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("cannot listen on %s (the vector's server address): %v", addr, err)
		}
		s := &tang.Server{Dir: "../tang/testdata/keys"}
		if err := s.Load(); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: s}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
	}
	listen("127.84.1.1:7500")
	// One server: 1 of 2 needed, the error names the two others.
	_, err = pin.Decrypt(context.Background(), j, pin.Options{Timeout: 5 * time.Second})
	var ce *sss.ChildError
	if !errors.As(err, &ce) || ce.Got != 1 || ce.T != 2 {
		t.Fatalf("one server up: %v", err)
	}
	for _, name := range []string{"127.84.1.2:7500", "127.84.1.3:7500"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	listen("127.84.1.3:7500")
	got, err := pin.Decrypt(context.Background(), j, pin.Options{Timeout: 5 * time.Second})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("two servers up: %q, %v", got, err)
	}
}

// fakeID is the id in a fake child's header.
func fakeID(j *jose.JWE) string {
	var h struct{ Fake fakeCfg }
	json.Unmarshal(j.Header.Clevis, &h)
	return h.Fake.ID
}

// TestSkip: pin.Options.Skip is asked for every child, and a child it
// refuses is not decrypted: sss succeeds with the others, or fails naming
// why each child was left out.
func TestSkip(t *testing.T) {
	t.Parallel()
	s := newShares(t, 1)
	j := s.jwe(t, []byte("x"), fakeChild(t, "", "A", s.at(1)), fakeChild(t, "", "B", s.at(2)))
	skip := func(ids ...string) func(*jose.JWE) error {
		return func(c *jose.JWE) error {
			for _, id := range ids {
				if fakeID(c) == id {
					return errors.New("left out for the test")
				}
			}
			return nil
		}
	}
	for range 5 { // A might be asked first or last
		if got, err := pin.Decrypt(context.Background(), j, pin.Options{Skip: skip("A")}); err != nil || string(got) != "x" {
			t.Fatalf("A left out: %q, %v", got, err)
		}
	}
	_, err := pin.Decrypt(context.Background(), j, pin.Options{Skip: skip("A", "B")})
	if err == nil || strings.Count(err.Error(), "fake: left out for the test") != 2 {
		t.Fatalf("both left out: %v", err)
	}
	// The sss JWE itself is asked about too.
	_, err = pin.Decrypt(context.Background(), j, pin.Options{Skip: func(c *jose.JWE) error {
		if n, _ := c.Header.Pin(); n == "sss" {
			return errors.New("no sss here")
		}
		return nil
	}})
	if err == nil || err.Error() != "sss: no sss here" {
		t.Fatalf("sss left out: %v", err)
	}
}

// TestOpenRewrap: Open decrypts as Decrypt does and keeps the polynomial;
// Rewrap replaces only the children renew picks, with fresh points of the
// same polynomial, and keeps the others byte for byte: any t children of
// the new JWE, the replacement among them, decrypt its new plaintext.
func TestOpenRewrap(t *testing.T) {
	t.Parallel()
	s := newShares(t, 2)
	a, b, broken := fakeChild(t, "", "A", s.at(1)), fakeChild(t, "", "B", s.at(2)), fakeChild(t, "fail", "C", s.at(3))
	j := s.jwe(t, []byte("old"), a, b, broken)
	ctx := context.Background()
	op, err := sss.Open(ctx, j, pin.Options{})
	if err != nil || string(op.Plaintext) != "old" {
		t.Fatalf("open: %q, %v", op.Plaintext, err)
	}
	renewed := 0
	nj, err := op.Rewrap(ctx, []byte("new"), func(c *jose.JWE) func(context.Context, []byte) (*jose.JWE, error) {
		if fakeID(c) != "C" {
			return nil
		}
		return func(_ context.Context, point []byte) (*jose.JWE, error) {
			renewed++
			if len(point) != 64 {
				t.Errorf("point of %d bytes", len(point))
			}
			cfg, _ := json.Marshal(fakeCfg{ID: "C2"})
			return fakePin{}.Encrypt(ctx, cfg, point, pin.Options{})
		}
	})
	if err != nil || renewed != 1 {
		t.Fatalf("rewrap: %v (renewed %d)", err, renewed)
	}
	kids, err := sss.Children(nj)
	if err != nil || len(kids) != 3 {
		t.Fatalf("children: %d, %v", len(kids), err)
	}
	if kids[0].Compact() != a || kids[1].Compact() != b || fakeID(kids[2]) != "C2" {
		t.Errorf("children after rewrap: %s %s %s", fakeID(kids[0]), fakeID(kids[1]), fakeID(kids[2]))
	}
	var oh, nh struct {
		SSS struct {
			P string
			T int
		}
	}
	json.Unmarshal(j.Header.Clevis, &oh)
	json.Unmarshal(nj.Header.Clevis, &nh)
	if oh.SSS != nh.SSS {
		t.Errorf("p or t changed: %+v -> %+v", oh.SSS, nh.SSS)
	}
	without := func(id string) pin.Options {
		return pin.Options{Skip: func(c *jose.JWE) error {
			if fakeID(c) == id {
				return errors.New("left out")
			}
			return nil
		}}
	}
	for _, id := range []string{"A", "B", "C2"} {
		if got, err := pin.Decrypt(ctx, nj, without(id)); err != nil || string(got) != "new" {
			t.Errorf("the new JWE without %s: %q, %v", id, got, err)
		}
	}
	// A replacement that fails stops Rewrap, naming the child.
	_, err = op.Rewrap(ctx, []byte("new"), func(c *jose.JWE) func(context.Context, []byte) (*jose.JWE, error) {
		return func(context.Context, []byte) (*jose.JWE, error) { return nil, errors.New("no TPM") }
	})
	if err == nil || !strings.Contains(err.Error(), "child 1 (fake): no TPM") {
		t.Errorf("failing replacement: %v", err)
	}
	// Fewer than t children: Open says so as Decrypt does.
	var ce *sss.ChildError
	if _, err := sss.Open(ctx, j, without("A")); !errors.As(err, &ce) || ce.Got != 1 {
		t.Errorf("open with one child: %v", err)
	}
}
