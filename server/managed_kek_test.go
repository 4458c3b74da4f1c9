package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/tang" // registers the tang pin
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
