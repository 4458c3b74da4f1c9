package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKEK(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kek")
	k, created, err := LoadOrCreateKEK(p)
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
	k2, created, err := LoadOrCreateKEK(p)
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
	if _, _, err := LoadOrCreateKEK(p); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("world-readable KEK: %v", err)
	}
}
