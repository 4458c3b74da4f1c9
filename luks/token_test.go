package luks

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// fakePin is a pin clevis does not know: a fixed key, for tests only.
type fakePin struct{}

var fakeKey = make([]byte, 32)

func (fakePin) Encrypt(_ context.Context, _ json.RawMessage, secret []byte, _ pin.Options) (*jose.JWE, error) {
	return jose.Encrypt(jose.Header{Alg: "dir", Clevis: json.RawMessage(`{"pin":"luks-test-fake"}`)}, fakeKey, secret)
}

func (fakePin) Decrypt(_ context.Context, j *jose.JWE, _ pin.Options) ([]byte, error) {
	return j.Decrypt(fakeKey)
}

func init() { pin.Register("luks-test-fake", fakePin{}) }

func jweWithPin(t *testing.T, clevis string) *jose.JWE {
	t.Helper()
	j, err := jose.Encrypt(jose.Header{Alg: "dir", Clevis: json.RawMessage(clevis)}, fakeKey, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestTokenType(t *testing.T) {
	tangChild := jweWithPin(t, `{"pin":"tang","tang":{}}`).Compact()
	fakeChild := jweWithPin(t, `{"pin":"luks-test-fake"}`).Compact()
	for clevis, want := range map[string]string{
		`{"pin":"tang","tang":{}}`: TypeClevis,
		`{"pin":"tpm2","tpm2":{}}`: TypeClevis,
		`{"pin":"https"}`:          TypeTether,
		`{"pin":"sss","sss":{"t":1,"jwe":["` + tangChild + `"]}}`:                     TypeClevis,
		`{"pin":"sss","sss":{"t":1,"jwe":["` + tangChild + `","` + fakeChild + `"]}}`: TypeTether,
	} {
		tok, err := tokenJSON(3, jweWithPin(t, clevis))
		if err != nil {
			t.Fatal(err)
		}
		var bt bindingToken
		json.Unmarshal(tok, &bt)
		if bt.Type != want || len(bt.Keyslots) != 1 || bt.Keyslots[0] != "3" {
			t.Errorf("%s: token %s, want type %s", clevis[:20], tok, want)
		}
		if _, err := jose.ParseFlattened(bt.JWE); err != nil {
			t.Errorf("token JWE: %v", err)
		}
	}
}

// TestTetherToken binds with a pin clevis does not know: the token is a
// "tether" token that cryptsetup stores, tether reads back and unlocks
// with, and clevis leaves alone.
func TestTetherToken(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCmd(t, "cryptsetup")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("truncate", "-s", "20M", img).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	r := &Runner{}
	ctx := context.Background()
	if err := r.Format(ctx, img, []byte("pw"), FormatOptions{KDF: MachineKDF("")}); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	v := &Volume{Path: img, StateDir: state}
	slot, err := v.Bind(ctx, BindOptions{Pin: "luks-test-fake", Config: json.RawMessage(`{}`), Key: []byte("pw"), KeySlot: -1, Slot: -1})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeaderFile(img)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BindingFor(h, slot)
	if err != nil || b.Type != TypeTether {
		t.Fatalf("binding %+v, %v", b, err)
	}
	pass, err := v.Passphrase(ctx, slot)
	if err != nil || r.TestKey(ctx, img, slot, pass) != nil {
		t.Fatalf("passphrase: %v", err)
	}
	u, err := v.Unlock(ctx, UnlockOptions{})
	if err != nil || u.Slot != slot {
		t.Fatalf("unlock: %+v %v", u, err)
	}
	if _, err := exec.LookPath("clevis"); err == nil {
		out, _ := exec.Command("clevis", "luks", "list", "-d", img).CombinedOutput()
		if strings.Contains(string(out), "luks-test-fake") {
			t.Errorf("clevis lists the tether token: %s", out)
		}
	}
	if err := v.Unbind(ctx, slot); err != nil {
		t.Fatal(err)
	}
	if h, _ := ReadHeaderFile(img); len(h.Slots()) != 1 || len(h.TokenIDs()) != 0 {
		t.Fatalf("after unbind: %v %v", h.Slots(), h.TokenIDs())
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v %v", fi.Mode(), err)
	}
}

// lingerPin never answers: on cancel it takes a while to stop (as a TPM
// attempt flushes its objects) and then says it has stopped.
type lingerPin struct{}

var lingerStopped atomic.Bool

func (lingerPin) Encrypt(_ context.Context, _ json.RawMessage, secret []byte, _ pin.Options) (*jose.JWE, error) {
	return jose.Encrypt(jose.Header{Alg: "dir", Clevis: json.RawMessage(`{"pin":"luks-test-linger"}`)}, fakeKey, secret)
}

func (lingerPin) Decrypt(ctx context.Context, _ *jose.JWE, _ pin.Options) ([]byte, error) {
	<-ctx.Done()
	time.Sleep(300 * time.Millisecond)
	lingerStopped.Store(true)
	return nil, ctx.Err()
}

func init() { pin.Register("luks-test-linger", lingerPin{}) }

// TestUnlockWaitsForTheOthers: the first binding to answer opens the
// volume, and Unlock returns only once the attempts that lost have
// stopped. One cut off by the process's exit could leave objects loaded
// in a TPM without a resource manager (found in CI: TPM_RC_OBJECT_MEMORY
// on the command after an unlock --test).
func TestUnlockWaitsForTheOthers(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCmd(t, "cryptsetup")
	img := filepath.Join(t.TempDir(), "disk.img")
	if out, err := exec.Command("truncate", "-s", "20M", img).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	ctx := context.Background()
	if err := (&Runner{}).Format(ctx, img, []byte("pw"), FormatOptions{KDF: MachineKDF("")}); err != nil {
		t.Fatal(err)
	}
	v := &Volume{Path: img, StateDir: filepath.Join(t.TempDir(), "state")}
	for _, p := range []string{"luks-test-linger", "luks-test-fake"} {
		if _, err := v.Bind(ctx, BindOptions{Pin: p, Config: json.RawMessage(`{}`), Key: []byte("pw"), KeySlot: -1, Slot: -1}); err != nil {
			t.Fatalf("bind %s: %v", p, err)
		}
	}
	lingerStopped.Store(false)
	if _, err := v.Unlock(ctx, UnlockOptions{}); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if !lingerStopped.Load() {
		t.Fatal("Unlock returned while an attempt that lost was still running")
	}
}
