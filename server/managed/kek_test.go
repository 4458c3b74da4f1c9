package managed

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/tang" // registers the tang pin
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/store"
	"github.com/tether-nbde/tether/tang"
)

func TestKEK(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kek")
	k, created, err := LoadOrCreateKEK(context.Background(), p)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("KEK file mode %v", fi.Mode().Perm())
	}
	w, err := k.Wrap("device-key:a", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	k2, created, err := LoadOrCreateKEK(context.Background(), p)
	if err != nil || created {
		t.Fatalf("reload: %v %v", created, err)
	}
	if got, err := k2.Unwrap("device-key:a", w); err != nil || string(got) != "secret" {
		t.Fatalf("unwrap after reload: %q %v", got, err)
	}
	// A wrapped key moved to another device's row does not open.
	if _, err := k2.Unwrap("device-key:b", w); err == nil {
		t.Fatal("wrapped key opened under another purpose")
	}
	w[len(w)-1] ^= 1
	if _, err := k2.Unwrap("device-key:a", w); err == nil {
		t.Fatal("tampered wrapped key opened")
	}
	os.Chmod(p, 0o644)
	if _, _, err := LoadOrCreateKEK(context.Background(), p); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("world-readable KEK: %v", err)
	}
}

// tangFor serves the Tang protocol from fresh keys on a loopback port and
// returns its URL and a function that takes it down.
func tangFor(t *testing.T) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	if _, err := tang.GenerateKeys(dir, jose.P256); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(&tang.Server{Dir: dir})
	t.Cleanup(ts.Close)
	return ts.URL, ts.Close
}

// A KEK sealed to a Tang server opens while that server answers, is the same
// key, and is useless without it; a failed seal changes nothing; unseal
// gives back the plain file.
func TestSealKEK(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "kek")
	k, _, err := LoadOrCreateKEK(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := os.ReadFile(p)
	w, _ := k.Wrap("device-key:a", []byte("secret"))

	// A policy that cannot be met here is refused before anything changes.
	dead := testenv.ClosedPort(t)
	if _, err := SealKEK(ctx, p, "tang", json.RawMessage(`{"url":"`+dead+`"}`), pin.Options{Trust: true}); err == nil {
		t.Fatal("sealed to an unreachable Tang server")
	}
	if now, _ := os.ReadFile(p); !bytes.Equal(now, plain) {
		t.Fatal("a failed seal changed the KEK file")
	}

	url, stop := tangFor(t)
	desc, err := SealKEK(ctx, p, "tang", json.RawMessage(`{"url":"`+url+`","thp":"any"}`), pin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := os.ReadFile(p)
	if !strings.Contains(desc, url) || bytes.Contains(sealed, []byte(kekFileHeader)) ||
		bytes.Contains(sealed, bytes.TrimPrefix(bytes.TrimSpace(plain), []byte(kekFileHeader))) {
		t.Fatalf("sealed file (%s) holds the key in the clear:\n%s", desc, sealed)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("sealed KEK mode %v", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKEK(ctx, p)
	if err != nil || created || k2.SealedBy() != desc {
		t.Fatalf("load sealed KEK: %v created=%v sealed by %q", err, created, k2.SealedBy())
	}
	if got, err := k2.Unwrap("device-key:a", w); err != nil || string(got) != "secret" {
		t.Fatalf("the unsealed KEK is another key: %q %v", got, err)
	}

	stop() // the server is gone: the file alone gives nothing
	if _, _, err := LoadOrCreateKEK(ctx, p); err == nil || !strings.Contains(err.Error(), "could not be unsealed") {
		t.Fatalf("sealed KEK without its Tang server: %v", err)
	}
	if err := UnsealKEK(ctx, p); err == nil {
		t.Fatal("unsealed without the Tang server")
	}
	if now, _ := os.ReadFile(p); !bytes.Equal(now, sealed) {
		t.Fatal("a failed unseal changed the KEK file")
	}

	url2, _ := tangFor(t)
	if _, err := SealKEK(ctx, p, "tang", json.RawMessage(`{"url":"`+url2+`"}`), pin.Options{Trust: true}); err == nil {
		t.Fatal("resealed while the first policy cannot be met")
	}
	os.WriteFile(p, plain, 0o600)
	if _, err := SealKEK(ctx, p, "tang", json.RawMessage(`{"url":"`+url2+`"}`), pin.Options{Trust: true}); err != nil {
		t.Fatal(err)
	}
	if err := UnsealKEK(ctx, p); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(p); !bytes.Equal(now, plain) {
		t.Fatalf("unseal gave %q, want the original file", now)
	}
	if err := UnsealKEK(ctx, p); err == nil || !strings.Contains(err.Error(), "not sealed") {
		t.Fatalf("unseal of a plain file: %v", err)
	}
}

// openManaged sets up managed mode on the store with the KEK at path, as a
// server start does, and returns the TLS key pin.
func openManaged(t *testing.T, st store.Store, path string) (string, error) {
	t.Helper()
	kek, _, err := LoadOrCreateKEK(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(context.Background(), st, kek, Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return "", err
	}
	m.Close()
	return m.Pin(), nil
}

// Rotation rewraps every key under a new KEK; the old KEK no longer opens
// the store; a device key that does not unwrap stops it with nothing
// changed; an interrupted rotation is finished by running it again.
func TestRotateKEK(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pin0, err := openManaged(t, st, path)
	if err != nil {
		t.Fatal(err)
	}
	old, _, _ := LoadOrCreateKEK(ctx, path)
	oldText, _ := os.ReadFile(path)
	for _, id := range []string{"d1", "d2"} {
		w, _ := old.Wrap("device-key:"+id, []byte("S of "+id))
		d := &policy.Device{ID: id, Name: id, KeyID: "k" + id, PublicKey: []byte{1}, State: policy.Enabled,
			ExchangeKey: w, ExchangePub: `{"kty":"EC"}`, Created: time.Unix(1e9, 0), Updated: time.Unix(1e9, 0), LastSeen: time.Unix(1e9, 0)}
		if err := st.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	opens := func(k *KEK) bool {
		for _, id := range []string{"d1", "d2"} {
			d, _ := st.Device(ctx, id)
			if got, err := k.Unwrap("device-key:"+id, d.ExchangeKey); err != nil || string(got) != "S of "+id {
				return false
			}
		}
		return true
	}

	// The PCR policy key (pcrsign.go) is rewrapped too.
	pcrPlain := []byte("PKCS #8 of the PCR policy key")
	pw, _ := old.Wrap(pcrKeyPurpose, pcrPlain)
	if err := st.SetSetting(ctx, pcrKeySetting, base64.StdEncoding.EncodeToString(pw)); err != nil {
		t.Fatal(err)
	}
	pcrOpens := func(k *KEK) bool {
		v, _ := st.Setting(ctx, pcrKeySetting)
		w, _ := base64.StdEncoding.DecodeString(v)
		got, err := k.Unwrap(pcrKeyPurpose, w)
		return err == nil && bytes.Equal(got, pcrPlain)
	}

	// A device key that does not unwrap: nothing changes.
	bad := &policy.Device{ID: "d3", Name: "d3", KeyID: "kd3", PublicKey: []byte{1}, State: policy.Enabled,
		ExchangeKey: []byte("not wrapped under this KEK at all"), ExchangePub: `{"kty":"EC"}`,
		Created: time.Unix(1e9, 0), Updated: time.Unix(1e9, 0), LastSeen: time.Unix(1e9, 0)}
	st.CreateDevice(ctx, bad)
	if _, err := RotateKEK(ctx, path, st); err == nil || !strings.Contains(err.Error(), "d3") {
		t.Fatalf("rotation over a key that does not unwrap: %v", err)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, oldText) || !opens(old) {
		t.Fatal("a failed rotation changed the KEK file or the store")
	}
	if _, err := os.Stat(path + ".new"); err == nil {
		t.Fatal("a failed rotation left its new KEK behind")
	}
	if _, err := openManaged(t, st, path); err != nil {
		t.Fatalf("after a failed rotation: %v", err)
	}
	// Revoked: d3 no longer has a key to rewrap.
	if err := st.UpdateDevice(ctx, &policy.Device{ID: "d3", Name: "d3", State: policy.Revoked, Version: 1}); err != nil {
		t.Fatal(err)
	}

	finished, err := RotateKEK(ctx, path, st)
	if err != nil || finished {
		t.Fatalf("rotate: %v (finished %v)", err, finished)
	}
	fresh, _, _ := LoadOrCreateKEK(ctx, path)
	if !opens(fresh) || opens(old) {
		t.Fatal("the device keys are not under the new KEK alone")
	}
	if !pcrOpens(fresh) || pcrOpens(old) {
		t.Fatal("the PCR policy key is not under the new KEK alone")
	}
	pin1, err := openManaged(t, st, path)
	if err != nil || pin1 != pin0 {
		t.Fatalf("managed mode after rotation: %v; TLS pin %s, was %s", err, pin1, pin0)
	}
	newText, _ := os.ReadFile(path)
	os.WriteFile(path, oldText, 0o600)
	if _, err := openManaged(t, st, path); !errors.Is(err, ErrKEKMismatch) {
		t.Fatalf("the old KEK still opens the store: %v", err)
	}

	// Interrupted after the store changed, before the new file replaced
	// the old: running it again finishes.
	os.WriteFile(path+".new", newText, 0o600)
	finished, err = RotateKEK(ctx, path, st)
	if err != nil || !finished {
		t.Fatalf("finish an interrupted rotation: %v (finished %v)", err, finished)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, newText) {
		t.Fatal("finishing did not install the new KEK")
	}
	if _, err := openManaged(t, st, path); err != nil {
		t.Fatal(err)
	}
}
