package smb_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/smb"
)

// useHelper points the pin at a freshly built tether-smb: a test binary has
// none next to it.
func useHelper(t *testing.T) {
	t.Setenv(smb.HelperEnv, filepath.Join(filepath.Dir(testenv.TetherBin(t)), "tether-smb"))
}

// config is a binding of the key file path with the password in the clear
// (allowed explicitly): the tests of fetching need no protecting pin.
func config(t *testing.T, s *testenv.SMBD, path, password string) json.RawMessage {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"server": "127.0.0.1", "port": s.Port, "share": s.Share, "path": path,
		"user": s.User, "password_file": pw, "attempts": 2, "allow_plain_credentials": true})
	return b
}

var opts = pin.Options{Timeout: 3 * time.Second, Warn: io.Discard}

// TestAgainstSmbd binds and unlocks against a real smbd (SMB3, user and
// password), then checks each failure: wrong password, missing file,
// share down, and that deleting the key file revokes the binding.
func TestAgainstSmbd(t *testing.T) {
	useHelper(t)
	s := testenv.StartSMBD(t)
	material := make([]byte, 64)
	rand.Read(material)
	s.WriteKey(t, "ha.key", material)
	ctx := context.Background()

	j, err := pin.Encrypt(ctx, "smb", config(t, s, "ha.key", s.Password), []byte("luks passphrase"), opts)
	if err != nil {
		t.Fatal(err)
	}
	compact := j.Compact()
	if strings.Contains(compact, jose.B64.EncodeToString(material)) {
		t.Fatal("key material stored in the JWE")
	}
	j, _ = jose.ParseCompact(compact)
	got, err := pin.Decrypt(ctx, j, opts)
	if err != nil || string(got) != "luks passphrase" {
		t.Fatalf("decrypt: %q %v", got, err)
	}

	t.Run("wrong password", func(t *testing.T) {
		_, err := pin.Encrypt(ctx, "smb", config(t, s, "ha.key", "not-it"), []byte("x"), opts)
		if err == nil || !strings.Contains(err.Error(), "wrong user or password") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := pin.Encrypt(ctx, "smb", config(t, s, "nope.key", s.Password), []byte("x"), opts)
		if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), `\\127.0.0.1\`+s.Share+`\nope.key`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("other material does not decrypt", func(t *testing.T) {
		other := make([]byte, 64)
		rand.Read(other)
		s.WriteKey(t, "ha.key", other)
		defer s.WriteKey(t, "ha.key", material)
		if _, err := pin.Decrypt(ctx, j, opts); err == nil {
			t.Fatal("decrypted with replaced key material")
		}
	})
	t.Run("deleting the file revokes", func(t *testing.T) {
		if err := os.Remove(filepath.Join(s.Dir, "ha.key")); err != nil {
			t.Fatal(err)
		}
		defer s.WriteKey(t, "ha.key", material)
		_, err := pin.Decrypt(ctx, j, opts)
		if err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("got %v", err)
		}
	})
	if _, err := pin.Decrypt(ctx, j, opts); err != nil {
		t.Fatalf("restored file: %v", err)
	}
	t.Run("share down", func(t *testing.T) {
		s.Stop()
		_, err := pin.Decrypt(ctx, j, opts)
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"share":"s","path":"p"}`:   `missing "server"`,
		`{"server":"h","path":"p"}`:  `missing "share"`,
		`{"server":"h","share":"s"}`: `missing "path"`,
		`{"server":"h","share":"s","path":"p","password_file":"/nonexistent/pw"}`: "read password file",
		`{"server":1}`: "malformed",
	} {
		_, err := pin.Encrypt(context.Background(), "smb", json.RawMessage(cfg), []byte("x"), opts)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", cfg, err, want)
		}
	}
}

// TestHelperHonoursTimeout: a share that accepts but never answers fails
// within the per-attempt timeout, through the helper, with a message that
// says so.
func TestHelperHonoursTimeout(t *testing.T) {
	useHelper(t)
	addr := strings.TrimPrefix(testenv.Blackhole(t), "http://")
	host, port, _ := strings.Cut(addr, ":")
	cfg := json.RawMessage(`{"server":"` + host + `","port":` + port + `,"share":"s","path":"k","attempts":1}`)
	start := time.Now()
	_, err := pin.Encrypt(context.Background(), "smb", cfg, []byte("x"), pin.Options{Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "did not answer in time") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v with a 1s timeout", d)
	}
}

// TestHelperUsage: run by hand, tether-smb explains itself instead of
// waiting on stdin.
func TestHelperUsage(t *testing.T) {
	helper := filepath.Join(filepath.Dir(testenv.TetherBin(t)), "tether-smb")
	for arg, code := range map[string]int{"--help": 0, "bogus": 2} {
		out, errOut, c := testenv.Run(t, nil, helper, arg)
		if c != code || len(out) != 0 || !strings.Contains(string(errOut), "Usage: tether-smb") {
			t.Errorf("tether-smb %s: exit %d, stdout %q, stderr %q", arg, c, out, errOut)
		}
	}
}

// TestHelperFailsAtOnce: without tether-smb, or with a helper that answers
// nothing tether reads, the pin says what is wrong at once (no retries)
// instead of a bare exec or JSON error.
func TestHelperFailsAtOnce(t *testing.T) {
	for helper, want := range map[string]string{
		filepath.Join(t.TempDir(), "tether-smb"): "tether-smb",
		testenv.RequireCmd(t, "true"):            "gave no reply",
	} {
		t.Setenv(smb.HelperEnv, helper)
		cfg := json.RawMessage(`{"server":"127.0.0.1","share":"s","path":"k","attempts":3}`)
		start := time.Now()
		_, err := pin.Encrypt(context.Background(), "smb", cfg, []byte("x"), opts)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("helper %s: got %v, want %q", helper, err, want)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("helper %s: took %v: it was retried", helper, d)
		}
	}
}

// TestCreateKeyFile: tether setup's way to a key file: 64 random bytes
// written through the share, read back, usable by a binding; an existing
// file is never replaced (that would revoke its bindings).
func TestCreateKeyFile(t *testing.T) {
	useHelper(t)
	s := testenv.StartSMBD(t)
	s.MakeWritable(t)
	ctx := context.Background()
	cfg := config(t, s, `keys\new.key`, s.Password)
	os.Mkdir(filepath.Join(s.Dir, "keys"), 0o755)
	testenv.Run(t, nil, "chown", testenv.SMBUser, filepath.Join(s.Dir, "keys"))
	if err := smb.CreateKeyFile(ctx, cfg, opts); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(s.Dir, "keys", "new.key"))
	if err != nil || len(data) != 64 {
		t.Fatalf("key file: %d bytes, %v", len(data), err)
	}
	j, err := pin.Encrypt(ctx, "smb", cfg, []byte("secret"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pin.Decrypt(ctx, j, opts); err != nil || string(got) != "secret" {
		t.Fatalf("decrypt with the new key file: %q %v", got, err)
	}
	err = smb.CreateKeyFile(ctx, cfg, opts)
	if err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("second create: %v", err)
	}
	if again, _ := os.ReadFile(filepath.Join(s.Dir, "keys", "new.key")); string(again) != string(data) {
		t.Fatal("an existing key file was replaced")
	}
	if err := smb.CreateKeyFile(ctx, config(t, s, "x.key", "not-it"), opts); err == nil || !strings.Contains(err.Error(), "wrong user or password") {
		t.Fatalf("wrong password: %v", err)
	}
}
