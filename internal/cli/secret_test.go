package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/tpm2"
)

// secretDir returns a directory other users can traverse (t.TempDir is
// 0700 up to the test's root), as /run/tether/secrets is.
func secretDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// readAs reports whether user can read path (setpriv drops root).
func readAs(t *testing.T, user, group, path string) ([]byte, bool) {
	t.Helper()
	out, err := exec.Command("setpriv", "--reuid="+user, "--regid="+group, "--clear-groups", "cat", path).Output()
	return out, err == nil
}

// TestSecretOpen: tether secret open decrypts a tpm2 JWE and a tang JWE
// into a file only the named owner can read, written atomically, with
// nothing of the secret on stdout or stderr; a PCR mismatch exits 3 (the
// unit does not restart) and leaves nothing behind; close removes it.
func TestSecretOpen(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCmd(t, "setpriv")
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI)
	t.Setenv(tpm.EnvTCTI, "")
	bin := testenv.TetherBin(t)
	secret := []byte("pwenc: 0f1e2d3c4b5a69788796a5b4c3d2e1f0\n")
	etc := t.TempDir()
	tpmJWE, tangJWE := filepath.Join(etc, "pwenc_secret.jwe"), filepath.Join(etc, "tang.jwe")
	out, errb, code := testenv.Run(t, secret, bin, "encrypt", "tpm2", `{"pcr_ids":"16"}`)
	if code != 0 {
		t.Fatalf("encrypt tpm2: %s", errb)
	}
	os.WriteFile(tpmJWE, out, 0o600)
	tang := testenv.StartTangd(t)
	out, errb, code = testenv.Run(t, secret, bin, "encrypt", "tang", `{"url":"`+tang.URL+`"}`, "-y")
	if code != 0 {
		t.Fatalf("encrypt tang: %s", errb)
	}
	os.WriteFile(tangJWE, append(out, '\n'), 0o600) // a trailing newline, as editors leave

	run := secretDir(t)
	for _, c := range []struct {
		jwe, owner, mode string
		uid, gid         int
		perm             os.FileMode
	}{
		{tpmJWE, "", "", 0, 0, 0o400},
		{tpmJWE, "nobody:nogroup", "0440", 65534, 65534, 0o440},
		{tangJWE, "nobody", "", 65534, 65534, 0o400},
	} {
		dst := filepath.Join(run, "secrets", "pwenc_secret")
		args := []string{"secret", "open", c.jwe, dst}
		if c.owner != "" {
			args = append(args, "--owner", c.owner)
		}
		if c.mode != "" {
			args = append(args, "--mode", c.mode)
		}
		stdout, stderr, code := testenv.Run(t, nil, bin, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if len(stdout) != 0 || bytes.Contains(stderr, []byte("0f1e2d3c")) {
			t.Fatalf("%v: the secret reached stdout or stderr:\n%s\n%s", args, stdout, stderr)
		}
		got, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("%v: %s holds %q, %v", args, dst, got, err)
		}
		fi, _ := os.Stat(dst)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != c.perm || int(st.Uid) != c.uid || int(st.Gid) != c.gid {
			t.Fatalf("%v: %s is %v %d:%d, want %v %d:%d", args, dst, fi.Mode(), st.Uid, st.Gid, c.perm, c.uid, c.gid)
		}
		if d, _ := os.Stat(filepath.Dir(dst)); d.Mode().Perm() != 0o711 {
			t.Errorf("the directory made for it is %v, want 0711", d.Mode())
		}
		if ents, _ := os.ReadDir(filepath.Dir(dst)); len(ents) != 1 {
			t.Errorf("temporary files left: %v", ents)
		}
		byNobody, ok := readAs(t, "nobody", "nogroup", dst)
		if ok != (c.uid == 65534) || (ok && !bytes.Equal(byNobody, secret)) {
			t.Errorf("%v: nobody reads it: %v", args, ok)
		}
		if _, ok := readAs(t, "daemon", "daemon", dst); ok {
			t.Errorf("%v: another user (daemon) reads it", args)
		}
		t.Logf("%v: %s", args, strings.TrimSpace(string(stderr)))
	}

	// Under the unit's umask (0077) the directory made is still 0711; a
	// directory the owner cannot pass is warned about.
	umaskDir := filepath.Join(run, "umask", "secrets")
	if _, errb, code := testenv.Run(t, nil, "sh", "-c", `umask 077 && exec "$0" "$@"`, bin, "secret", "open", "--owner", "nobody",
		tangJWE, filepath.Join(umaskDir, "s")); code != 0 {
		t.Fatalf("secret open under umask 077: %s", errb)
	}
	if d, _ := os.Stat(umaskDir); d.Mode().Perm() != 0o711 {
		t.Errorf("under umask 077 the directory made is %v, want 0711", d.Mode())
	}
	if _, ok := readAs(t, "nobody", "nogroup", filepath.Join(umaskDir, "s")); !ok {
		t.Error("under umask 077 the owner cannot read the secret")
	}
	closed := filepath.Join(run, "closed")
	os.Mkdir(closed, 0o700)
	if _, errb, code := testenv.Run(t, nil, bin, "secret", "open", "--owner", "nobody", tangJWE, filepath.Join(closed, "s")); code != 0 ||
		!strings.Contains(string(errb), "nobody cannot reach") {
		t.Errorf("a directory the owner cannot pass: exit %d, %s", code, errb)
	}

	// The PCR the secret is sealed to changes: refused for good (exit 3),
	// the file from before stays as it was, nothing else appears.
	dst := filepath.Join(run, "secrets", "other")
	sw.Extend(t, "sha256", 16)
	stdout, stderr, code := testenv.Run(t, nil, bin, "secret", "open", tpmJWE, dst)
	if code != 3 || len(stdout) != 0 || !strings.Contains(string(stderr), "sha256 PCR 16 changed") {
		t.Fatalf("after the PCR changed: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("a failed open left %s: %v", dst, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(run, "secrets")); len(ents) != 1 {
		t.Errorf("a failed open left files: %v", ents)
	}

	// Wrong use, refused before anything is decrypted.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "0644"}, "every user"},
		{[]string{"--mode", "rw"}, "octal"},
		{[]string{"--owner", "no-such-user-x"}, `no user "no-such-user-x"`},
		{[]string{"--owner", "nobody:no-such-group-x"}, `no group "no-such-group-x"`},
	} {
		args := append(append([]string{"secret", "open"}, c.args...), tangJWE, dst)
		_, stderr, code := testenv.Run(t, nil, bin, args...)
		if code != 2 || !strings.Contains(string(stderr), c.want) {
			t.Errorf("%v: exit %d: %s", args, code, stderr)
		}
	}
	if _, stderr, code := testenv.Run(t, nil, bin, "secret", "open", filepath.Join(etc, "missing.jwe"), dst); code != 1 ||
		!strings.Contains(string(stderr), "tether encrypt PIN CONFIG") {
		t.Errorf("missing JWE: exit %d: %s", code, stderr)
	}

	pw := filepath.Join(run, "secrets", "pwenc_secret")
	for i := 0; i < 2; i++ { // twice: a missing file is fine
		if _, stderr, code := testenv.Run(t, nil, bin, "secret", "close", pw); code != 0 {
			t.Fatalf("close: %s", stderr)
		}
	}
	if _, err := os.Stat(pw); !os.IsNotExist(err) {
		t.Errorf("close left %s", pw)
	}
}

// TestSecretOpenWithPINNoTerminal: a with_pin secret under a service (no
// terminal, no --pin-file) is refused for good (exit 3), so the unit does
// not retry forever; with --pin-file it opens.
func TestSecretOpenWithPINNoTerminal(t *testing.T) {
	testenv.RequireRoot(t)
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI)
	t.Setenv(tpm.EnvTCTI, "")
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	pinFile, jwe, dst := filepath.Join(dir, "pin"), filepath.Join(dir, "s.jwe"), filepath.Join(dir, "out", "s")
	os.WriteFile(pinFile, []byte("1234\n"), 0o600)
	out, errb, code := testenv.Run(t, []byte("s3cret"), "setsid", "-w", bin, "encrypt", "tpm2", `{"with_pin":true}`, "--pin-file", pinFile)
	if code != 0 {
		t.Fatalf("encrypt: %s", errb)
	}
	os.WriteFile(jwe, out, 0o600)
	_, errb, code = testenv.Run(t, nil, "setsid", "-w", bin, "secret", "open", jwe, dst)
	if code != 3 || !strings.Contains(string(errb), "no terminal") {
		t.Fatalf("no terminal, no --pin-file: exit %d: %s", code, errb)
	}
	if _, errb, code = testenv.Run(t, nil, "setsid", "-w", bin, "secret", "open", "--pin-file", pinFile, jwe, dst); code != 0 {
		t.Fatalf("--pin-file: exit %d: %s", code, errb)
	}
	if got, _ := os.ReadFile(dst); string(got) != "s3cret" {
		t.Fatalf("opened %q", got)
	}
}

// TestSecretUnitVerify: tether-secret@.service is installed, runs this
// tether's secret open and close on the instance's files, and an instance
// passes systemd-analyze verify.
func TestSecretUnitVerify(t *testing.T) {
	sa := testenv.RequireCmd(t, "systemd-analyze")
	bin := testenv.TetherBin(t)
	root := t.TempDir()
	if _, errb, code := testenv.Run(t, nil, bin, "install", "systemd", "--root", root, "--bin", bin); code != 0 {
		t.Fatalf("install: %s", errb)
	}
	dir := filepath.Join(root, "etc/systemd/system")
	unit, err := os.ReadFile(filepath.Join(dir, "tether-secret@.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStart=" + bin + " secret open $OPTIONS /etc/tether/secrets/%i.jwe /run/tether/secrets/%i\n",
		"ExecStop=" + bin + " secret close /run/tether/secrets/%i\n",
		"RestartPreventExitStatus=3\n", "EnvironmentFile=-/etc/tether/secrets/%i.conf\n", "RuntimeDirectoryPreserve=yes\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("tether-secret@.service lacks %q", want)
		}
	}
	// An instance, as systemctl enable tether-secret@pwenc_secret would
	// start it.
	inst := filepath.Join(dir, "tether-secret@pwenc_secret.service")
	if err := os.Symlink("tether-secret@.service", inst); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", "--man=no", inst)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSecretRegen: after the PCR a file's tpm2 part is sealed to changes,
// secret regen (the tang part decrypting) seals the tpm2 part inside sss to
// the values of now, keeping the file's mode; a file whose only pin no
// longer decrypts is left as it was, with a hint.
func TestSecretRegen(t *testing.T) {
	sw := tpmtest.Start(t)
	t.Setenv(tpm.EnvTools, sw.TCTI)
	t.Setenv(tpm.EnvTCTI, "")
	bin := testenv.TetherBin(t)
	tang := testenv.StartTangd(t)
	secret := []byte("pwenc 1122334455")
	dir := t.TempDir()
	sssFile, tpmFile := filepath.Join(dir, "sss.jwe"), filepath.Join(dir, "tpm.jwe")
	cfg := `{"t":1,"pins":{"tang":[{"url":"` + tang.URL + `"}],"tpm2":[{"pcr_ids":"16"}]}}`
	for f, c := range map[string][]string{sssFile: {"sss", cfg, "-y"}, tpmFile: {"tpm2", `{"pcr_ids":"16"}`}} {
		out, errb, code := testenv.Run(t, secret, bin, append([]string{"encrypt"}, c...)...)
		if code != 0 {
			t.Fatalf("encrypt %v: %s", c, errb)
		}
		os.WriteFile(f, out, 0o640)
	}
	tpmPart := func(file string) error {
		t.Helper()
		data, _ := os.ReadFile(file)
		j, err := jose.ParseCompact(string(data))
		if err != nil {
			t.Fatal(err)
		}
		var ch struct {
			SSS struct {
				JWE []string `json:"jwe"`
			} `json:"sss"`
		}
		json.Unmarshal(j.Header.Clevis, &ch)
		for _, c := range ch.SSS.JWE {
			cj, _ := jose.ParseCompact(c)
			if n, _ := cj.Header.Pin(); n == "tpm2" {
				got, err := (tpm2.Pin{TCTI: sw.TCTI}).Decrypt(context.Background(), cj, pin.Options{})
				if err == nil && len(got) == 0 {
					t.Fatal("empty share")
				}
				return err
			}
		}
		t.Fatalf("%s has no tpm2 part", file)
		return nil
	}
	if err := tpmPart(sssFile); err != nil {
		t.Fatalf("before the update: %v", err)
	}
	sw.Extend(t, "sha256", 16)
	var pm *tpm.PCRMismatchError
	if err := tpmPart(sssFile); !errors.As(err, &pm) {
		t.Fatalf("after the update: err = %v, want a PCR mismatch", err)
	}
	before, _ := os.ReadFile(sssFile)
	if _, errb, code := testenv.Run(t, nil, bin, "secret", "regen", sssFile); code != 0 {
		t.Fatalf("secret regen: %s", errb)
	}
	after, _ := os.ReadFile(sssFile)
	if bytes.Equal(before, after) {
		t.Fatal("secret regen left the file as it was")
	}
	if err := tpmPart(sssFile); err != nil {
		t.Fatalf("the tpm2 part inside sss after regen: %v", err)
	}
	if fi, _ := os.Stat(sssFile); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after regen: %v", fi.Mode())
	}
	if out, errb, code := testenv.Run(t, after, bin, "decrypt"); code != 0 || !bytes.Equal(out, secret) {
		t.Fatalf("decrypt after regen = %q: %s", out, errb)
	}

	// tpm2 alone, PCR changed: nothing decrypts it, nothing changes.
	before, _ = os.ReadFile(tpmFile)
	_, errb, code := testenv.Run(t, nil, bin, "secret", "regen", tpmFile)
	if code != 1 || !strings.Contains(string(errb), "sha256 PCR 16 changed") || !strings.Contains(string(errb), "encrypt the secret again") {
		t.Fatalf("secret regen of a tpm2 file whose PCR changed: exit %d: %s", code, errb)
	}
	if after, _ := os.ReadFile(tpmFile); !bytes.Equal(before, after) {
		t.Fatal("a failed regen changed the file")
	}
}
