package smb_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/internal/remote"
	_ "github.com/tether-nbde/tether/pin/sss"
	_ "github.com/tether-nbde/tether/pin/tang"
	_ "github.com/tether-nbde/tether/pin/tpm2"
)

// tangd is a stock tangd behind a proxy that can take it away.
type tangd struct {
	url  string
	stop func()
}

func startTangd(t *testing.T) tangd {
	td := testenv.StartTangd(t)
	p := testenv.StartProxy(t, strings.TrimPrefix(td.URL, "http://"))
	return tangd{url: p.URL, stop: p.Silence}
}

func writeSecret(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func itoa(i int) string { return strconv.Itoa(i) }

// withFields returns cfg with more fields set (nil: removed).
func withFields(t *testing.T, cfg json.RawMessage, kv map[string]any) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range kv {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// header returns the JWE's protected header as text.
func header(t *testing.T, j *jose.JWE) string {
	t.Helper()
	b, err := jose.B64.DecodeString(j.Protected)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func shareWithKey(t *testing.T) *testenv.SMBD {
	useHelper(t)
	s := testenv.StartSMBD(t)
	material := make([]byte, 64)
	rand.Read(material)
	s.WriteKey(t, "ha.key", material)
	return s
}

// TestPlainPasswordRefused: without "protect" the share password is not
// written into the header unless the configuration says so, and the share
// is not even asked (the refusal costs nothing and leaks nothing).
func TestPlainPasswordRefused(t *testing.T) {
	useHelper(t)
	// An address nothing listens on: a refusal after fetching would say
	// "unreachable" instead.
	host, port, _ := strings.Cut(strings.TrimPrefix(testenv.ClosedPort(t), "http://"), ":")
	cfg := json.RawMessage(`{"server":"` + host + `","port":` + port + `,"share":"s","path":"k","attempts":1,"password_file":"` +
		writeSecret(t, "hunter2") + `"}`)
	_, err := pin.Encrypt(context.Background(), "smb", cfg, []byte("x"), opts)
	var pe *pin.PlainCredentialsError
	if !errors.As(err, &pe) || pe.Pin != "smb" {
		t.Fatalf("got %v, want a PlainCredentialsError", err)
	}
	for _, want := range []string{"the share password", "in the clear", `another pin ("protect")`, `"allow_plain_credentials":true`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// "protect" without a pin is a mistake, not a request for the clear.
	_, err = pin.Encrypt(context.Background(), "smb", withFields(t, cfg, map[string]any{"protect": map[string]any{}}), []byte("x"), opts)
	if err == nil || !strings.Contains(err.Error(), `"protect" needs "pin"`) {
		t.Fatalf("protect without pin: %v", err)
	}
	// The refusal holds inside sss too, and keeps its type through it.
	sss, _ := json.Marshal(map[string]any{"t": 1, "pins": map[string]any{"smb": []json.RawMessage{cfg}}})
	if _, err := pin.Encrypt(context.Background(), "sss", sss, []byte("x"), opts); !errors.As(err, &pe) {
		t.Fatalf("smb inside sss: got %v", err)
	}
}

// TestPlainPasswordOptIn: "allow_plain_credentials" stores the password as
// before, with a warning that says what a thief gets.
func TestPlainPasswordOptIn(t *testing.T) {
	s := shareWithKey(t)
	var warn bytes.Buffer
	o := opts
	o.Warn = &warn
	// config allows the password in the clear.
	j, err := pin.Encrypt(context.Background(), "smb", config(t, s, "ha.key", s.Password), []byte("secret"), o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(header(t, j), s.Password) {
		t.Fatal("opted-in password is not in the header")
	}
	w := warn.String()
	for _, want := range []string{"tether: warning: smb:", "the share password", "in the clear", `\\127.0.0.1\` + s.Share} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q does not say %q", w, want)
		}
	}
	if d := pin.Describe(j); !strings.Contains(d, "credentials in the clear") {
		t.Errorf("describe: %s", d)
	}
	if got, err := pin.Decrypt(context.Background(), j, opts); err != nil || string(got) != "secret" {
		t.Fatalf("decrypt: %q %v", got, err)
	}
}

// TestNoCredentialsNothingStored: a guest share needs no password, so
// there is nothing to refuse, protect or store.
func TestNoCredentialsNothingStored(t *testing.T) {
	useHelper(t)
	host, port, _ := strings.Cut(strings.TrimPrefix(testenv.ClosedPort(t), "http://"), ":")
	cfg := json.RawMessage(`{"server":"` + host + `","port":` + port + `,"share":"s","path":"k","attempts":1}`)
	_, err := pin.Encrypt(context.Background(), "smb", cfg, []byte("x"), opts)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("a guest configuration was not tried against the share: %v", err)
	}
}

// TestOldHeaderDecrypts: bindings made before credentials had to be
// protected carry "cred":{"password":..} and nothing that says it was
// allowed; they keep unlocking.
func TestOldHeaderDecrypts(t *testing.T) {
	s := shareWithKey(t)
	material := make([]byte, 64)
	rand.Read(material)
	s.WriteKey(t, "old.key", material)
	// The header exactly as the pin wrote it before (field order included).
	j, err := remote.Encrypt("smb", material, []byte("old secret"), func(salt string) (json.RawMessage, error) {
		return json.RawMessage(`{"pin":"smb","smb":{"server":"127.0.0.1","port":` + itoa(s.Port) + `,"share":"` + s.Share +
			`","path":"old.key","user":"` + s.User + `","salt":"` + salt + `","attempts":2,"cred":{"password":"` + s.Password + `"}}}`), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	j, _ = jose.ParseCompact(j.Compact())
	if got, err := pin.Decrypt(context.Background(), j, opts); err != nil || string(got) != "old secret" {
		t.Fatalf("decrypt an old header: %q %v", got, err)
	}
}

// TestPasswordProtected protects the share password with each pin a device
// may have — stock tangd, sss of two tangds, a TPM — and checks that the
// header holds no password, that unlocking works, and that without the
// protecting pin (tangd gone, PCR changed) the password, and so the key,
// stays out of reach even with the share up.
func TestPasswordProtected(t *testing.T) {
	s := shareWithKey(t)
	ctx := context.Background()
	type protector struct {
		name    string
		protect func(t *testing.T) (cfg any, describe string, takeAway func())
	}
	for _, p := range []protector{
		{"tang", func(t *testing.T) (any, string, func()) {
			td := startTangd(t)
			return map[string]any{"pin": "tang", "config": map[string]any{"url": td.url}}, "tang(" + td.url + ")", td.stop
		}},
		{"sss", func(t *testing.T) (any, string, func()) {
			a, b := startTangd(t), startTangd(t)
			return map[string]any{"pin": "sss", "config": map[string]any{"t": 2, "pins": map[string]any{
					"tang": []any{map[string]any{"url": a.url}, map[string]any{"url": b.url}}}}},
				"sss(", b.stop // one of two down is enough for t=2
		}},
		{"tpm2", func(t *testing.T) (any, string, func()) {
			sw := tpmtest.Start(t)
			t.Setenv("TETHER_TPM_TCTI", sw.TCTI)
			return map[string]any{"pin": "tpm2", "config": map[string]any{"pcr_bank": "sha256", "pcr_ids": "16"}},
				"tpm2", func() { sw.Extend(t, "sha256", 16) }
		}},
	} {
		t.Run(p.name, func(t *testing.T) {
			protect, describe, takeAway := p.protect(t)
			var warn bytes.Buffer
			o := pin.Options{Timeout: 3 * time.Second, Trust: true, Warn: &warn}
			j, err := pin.Encrypt(ctx, "smb", withFields(t, config(t, s, "ha.key", s.Password), map[string]any{"protect": protect, "allow_plain_credentials": nil}), []byte("secret"), o)
			if err != nil {
				t.Fatal(err)
			}
			h := header(t, j)
			if strings.Contains(h, s.Password) || strings.Contains(h, `"cred":`) || !strings.Contains(h, `"cred_jwe":`) {
				t.Fatalf("header holds the password or no protected credentials: %s", h)
			}
			if strings.Contains(warn.String(), "in the clear") {
				t.Errorf("warned about protected credentials: %s", warn.String())
			}
			if d := pin.Describe(j); !strings.Contains(d, "credentials protected by "+describe) {
				t.Errorf("describe: %s", d)
			}
			j, _ = jose.ParseCompact(j.Compact())
			if got, err := pin.Decrypt(ctx, j, opts); err != nil || string(got) != "secret" {
				t.Fatalf("decrypt: %q %v", got, err)
			}
			takeAway()
			_, err = pin.Decrypt(ctx, j, pin.Options{Timeout: time.Second})
			if err == nil || !strings.Contains(err.Error(), "unlock credentials") {
				t.Fatalf("decrypt without the protecting pin: %v", err)
			}
		})
	}
}

// rewriteHeader returns j with its protected header's clevis.smb changed
// by edit, as someone with write access to the disk could: the JWE no
// longer authenticates, but everything before that step still runs.
func rewriteHeader(t *testing.T, j *jose.JWE, edit func(m map[string]any)) *jose.JWE {
	t.Helper()
	var hdr map[string]any
	if err := json.Unmarshal([]byte(header(t, j)), &hdr); err != nil {
		t.Fatal(err)
	}
	edit(hdr["clevis"].(map[string]any)["smb"].(map[string]any))
	b, _ := json.Marshal(hdr)
	parts := strings.Split(j.Compact(), ".")
	parts[0] = jose.B64.EncodeToString(b)
	j2, err := jose.ParseCompact(strings.Join(parts, "."))
	if err != nil {
		t.Fatal(err)
	}
	return j2
}

// TestProtectedPasswordStaysWithItsShare: whoever can rewrite the LUKS
// header can point the binding at a server of their own. Protected
// credentials are sealed with the server, share and account they are for,
// and are refused before any connection when the header names another.
// Credentials protected before that (no audience sealed) still unlock.
func TestProtectedPasswordStaysWithItsShare(t *testing.T) {
	s := shareWithKey(t)
	ctx := context.Background()
	td := startTangd(t)
	o := pin.Options{Timeout: 3 * time.Second, Trust: true, Warn: io.Discard}
	cfg := withFields(t, config(t, s, "ha.key", s.Password), map[string]any{"allow_plain_credentials": nil,
		"protect": map[string]any{"pin": "tang", "config": map[string]any{"url": td.url}}})
	j, err := pin.Encrypt(ctx, "smb", cfg, []byte("secret"), o)
	if err != nil {
		t.Fatal(err)
	}
	// The attacker's "server": a relay to the real share, which would
	// see the whole authentication.
	relay := testenv.StartProxy(t, "127.0.0.1:"+itoa(s.Port))
	_, port, _ := strings.Cut(relay.Addr, ":")
	for name, edit := range map[string]func(map[string]any){
		"server":  func(m map[string]any) { m["port"], _ = strconv.Atoi(port) },
		"account": func(m map[string]any) { m["user"] = "administrator" },
	} {
		_, err := pin.Decrypt(ctx, rewriteHeader(t, j, edit), o)
		if err == nil || !strings.Contains(err.Error(), "refusing to send them there") {
			t.Fatalf("%s rewritten: %v", name, err)
		}
	}
	if n := relay.Accepted(); n != 0 {
		t.Fatalf("the rewritten header's server got %d connections", n)
	}
	if got, err := pin.Decrypt(ctx, j, o); err != nil || string(got) != "secret" {
		t.Fatalf("the unaltered JWE: %q %v", got, err)
	}

	// Sealed as before audiences: the password alone in the tang JWE.
	old, err := pin.Encrypt(ctx, "tang", json.RawMessage(`{"url":"`+td.url+`"}`), []byte(`{"password":"`+s.Password+`"}`), o)
	if err != nil {
		t.Fatal(err)
	}
	material := make([]byte, 64)
	rand.Read(material)
	s.WriteKey(t, "old.key", material)
	oj, err := remote.Encrypt("smb", material, []byte("old secret"), func(salt string) (json.RawMessage, error) {
		return json.RawMessage(`{"pin":"smb","smb":{"server":"127.0.0.1","port":` + itoa(s.Port) + `,"share":"` + s.Share +
			`","path":"old.key","user":"` + s.User + `","salt":"` + salt + `","cred_jwe":"` + old.Compact() + `"}}`), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pin.Decrypt(ctx, oj, o); err != nil || string(got) != "old secret" {
		t.Fatalf("credentials protected before audiences: %q %v", got, err)
	}
}
