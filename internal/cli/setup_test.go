package cli_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

// setup runs tether setup on the bed, non-interactively.
func (b *doctorBed) setup(stdin []byte, args ...string) (string, string, int) {
	b.t.Helper()
	return b.exec(stdin, "tether", append([]string{"setup", "--root", b.root, "--bin", "/usr/bin/tether", "--timeout", "3s"}, args...)...)
}

// snapshot is what setup may change: the files under the root, the
// state directory and the images' contents.
func (b *doctorBed) snapshot(files ...string) string {
	b.t.Helper()
	h := sha256.New()
	for _, dir := range []string{b.root, b.state} {
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				fmt.Fprintf(h, "%s %v\n", p, fi.Mode())
				if fi.Mode().IsRegular() {
					data, _ := os.ReadFile(p)
					h.Write(data)
				}
			}
			return nil
		})
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		fmt.Fprintf(h, "%s %v %d\n", f, err, len(data))
		h.Write(data)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestSetupFlags: the flag form creates a container bound to a stock
// tangd, installs the units, writes crypttab and fstab keeping what was
// there, and the result unlocks and satisfies tether doctor; run again,
// it adds a second key source to the same volume.
func TestSetupFlags(t *testing.T) {
	tangd := testenv.StartTangd(t)
	b := newBed(t)
	b.writeFile("etc/crypttab", "# mine\nold UUID=1234 none luks\n")
	b.writeFile("etc/fstab", "UUID=abcd / ext4 defaults 0 1\n")
	img := filepath.Join(b.dir, "cloud_container.img")
	rec := filepath.Join(b.dir, "recovery.key")
	thp := advThp(t, b, tangd.URL)
	out, errOut, code := b.setup(nil, "--create", img, "--size", "80M", "--server", tangd.URL, "--thp", thp,
		"--mount", "/srv/cloud", "--recovery-file", rec, "-n", "vault")
	if code != 0 {
		t.Fatalf("setup: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"What unlocks it:   the server " + tangd.URL, "Recovery passphrase: in " + rec, "keyslot"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("summary lacks %q:\n%s", want, errOut)
		}
	}
	tab, _ := os.ReadFile(filepath.Join(b.root, "etc/crypttab"))
	if want := "# mine\nold UUID=1234 none luks\nvault\t" + img + "\t/run/tether/keyd.sock\tluks,_netdev,nofail\n"; string(tab) != want {
		t.Errorf("crypttab:\n%s\nwant\n%s", tab, want)
	}
	fstab, _ := os.ReadFile(filepath.Join(b.root, "etc/fstab"))
	if want := "UUID=abcd / ext4 defaults 0 1\n/dev/mapper/vault\t/srv/cloud\tauto\t_netdev,nofail\t0\t2\n"; string(fstab) != want {
		t.Errorf("fstab:\n%s\nwant\n%s", fstab, want)
	}
	// The recovery passphrase opens it; the binding unlocks it.
	b.run(nil, "cryptsetup", "open", "--test-passphrase", "--key-file", rec, img)
	b.run(nil, "tether", "luks", "unlock", "-d", img, "--test")
	if fi, err := os.Stat(rec); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("recovery file: %v %v", fi.Mode(), err)
	}
	b.healthy()

	// Again, with the TPM as a second source: a second binding.
	sw := tpmtest.Start(t)
	b.env = append(b.env, "TPM2TOOLS_TCTI="+sw.TCTI, "TETHER_TPM_TCTI=")
	recKey, _ := os.ReadFile(rec)
	if out, errOut, code := b.setup(recKey, "-d", img, "-k", "-", "--tpm", "--pcr", "none"); code != 0 {
		t.Fatalf("setup again: exit %d\n%s%s", code, out, errOut)
	}
	list := b.run(nil, "tether", "luks", "list", "-d", img)
	if !strings.Contains(list, "tang") || !strings.Contains(list, "tpm2") {
		t.Errorf("after the second run the volume has:\n%s", list)
	}
	if tab2, _ := os.ReadFile(filepath.Join(b.root, "etc/crypttab")); string(tab2) != string(tab) {
		t.Errorf("the second run changed the crypttab line (it must keep the volume's name):\n%s", tab2)
	}
	b.healthy()

	// A third time, replacing the tang binding (its keyslot from the
	// list) with a TPM binding to PCR 7.
	slot := ""
	for _, l := range strings.Split(list, "\n") {
		if n, rest, ok := strings.Cut(l, ": "); ok && strings.HasPrefix(rest, "tang ") {
			slot = n
		}
	}
	if out, errOut, code := b.setup(recKey, "-d", img, "-k", "-", "--replace", slot, "--tpm"); code != 0 {
		t.Fatalf("setup --replace %s: exit %d\n%s%s", slot, code, out, errOut)
	}
	list = b.run(nil, "tether", "luks", "list", "-d", img)
	if strings.Contains(list, "tang") || strings.Count(list, "tpm2") != 2 || !strings.Contains(list, `"pcr_ids":"7"`) {
		t.Errorf("after --replace %s the volume has:\n%s", slot, list)
	}
	b.healthy()
	if _, errOut, code := b.setup(recKey, "-d", img, "-k", "-", "--replace", "9", "--tpm"); code != 1 || !strings.Contains(errOut, "replace keyslot 9") {
		t.Errorf("--replace of an unbound keyslot: exit %d: %s", code, errOut)
	}
}

// TestSetupHTTPS: an HTTPS endpoint's key is shown, pinned, and the
// container unlocks from it; a wrong pin is refused before anything is
// written.
func TestSetupHTTPS(t *testing.T) {
	material := make([]byte, 64)
	rand.Read(material)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(material) }))
	defer ts.Close()
	b := newBed(t)
	img := filepath.Join(b.dir, "web.img")
	out, errOut, code := b.setup(nil, "--create", img, "--size", "80M", "--https", ts.URL+"/key", "--https-pin", "AAAA")
	if code != 1 || !strings.Contains(errOut, "shows the key ") || out != "" {
		t.Fatalf("wrong pin: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(img); err == nil {
		t.Fatal("a refused setup created the container")
	}
	out, errOut, code = b.setup(nil, "--create", img, "--size", "80M", "--https", ts.URL+"/key", "--trust-https")
	if code != 0 || !strings.Contains(errOut, "(--trust-https)") {
		t.Fatalf("setup: exit %d\n%s%s", code, out, errOut)
	}
	if out == "" {
		t.Error("no recovery passphrase on stdout")
	}
	b.run([]byte(out), "cryptsetup", "open", "--test-passphrase", "--key-file", "-", img)
	b.healthy()
}

func advThp(t *testing.T, b *doctorBed, url string) string {
	t.Helper()
	var r struct {
		Config struct{ Thp string } `json:"config"`
	}
	if err := json.Unmarshal([]byte(b.run(nil, "tether", "adv", "--json", url)), &r); err != nil || r.Config.Thp == "" {
		t.Fatalf("tether adv --json %s: %v", url, err)
	}
	return r.Config.Thp
}

// TestSetupRefuses: wrong answers in the flag form each get a clear
// message, exit 1, and change nothing: not the image, not the root, not
// the state directory.
func TestSetupRefuses(t *testing.T) {
	tangd := testenv.StartTangd(t)
	smbd := testenv.StartSMBD(t)
	key := make([]byte, 64)
	rand.Read(key)
	smbd.WriteKey(t, "ha.key", key)
	b := newBed(t)
	img := b.image("data")
	thp := advThp(t, b, tangd.URL)
	wrongPw := filepath.Join(b.dir, "wrong-password")
	os.WriteFile(wrongPw, []byte("not the password"), 0o600)
	rightPw := filepath.Join(b.dir, "password")
	os.WriteFile(rightPw, []byte(smbd.Password), 0o600)
	share := fmt.Sprintf("//127.0.0.1:%d/%s/ha.key", smbd.Port, smbd.Share)

	// A mounted file system on a loop device, of an image file.
	testenv.RequireCmd(t, "mkfs.ext4")
	plainImg := filepath.Join(b.dir, "plain.img")
	os.WriteFile(plainImg, nil, 0o600)
	os.Truncate(plainImg, 64<<20)
	b.run(nil, "mkfs.ext4", "-q", "-F", plainImg)
	loop := strings.TrimSpace(b.run(nil, "losetup", "--find", "--show", plainImg))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	mnt := filepath.Join(b.dir, "mnt")
	os.Mkdir(mnt, 0o755)
	b.run(nil, "mount", loop, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	rootDev := ""
	if out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", "/").Output(); err == nil {
		rootDev = strings.TrimSpace(string(out))
	}

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"mounted device", []string{"-d", loop, "--server", tangd.URL, "--thp", thp, "--confirm", loop}, "is mounted on " + mnt},
		{"mounted image", []string{"-d", plainImg, "--server", tangd.URL, "--thp", thp, "--confirm", plainImg}, "is mounted on " + mnt + " (through " + loop + ")"},
		{"unreachable server", []string{"-d", img, "-k", "-", "--server", testenv.ClosedPort(t), "--trust-server"}, "connection refused"},
		{"wrong thumbprint", []string{"-d", img, "-k", "-", "--server", tangd.URL, "--thp", "AAAA" + thp[4:]}, "is not one of its signing keys"},
		{"wrong share password", []string{"-d", img, "-k", "-", "--smb", share, "--smb-user", smbd.User, "--smb-password-file", wrongPw,
			"--server", tangd.URL, "--thp", thp}, "password"},
		{"existing file", []string{"--create", img, "--size", "80M", "--server", tangd.URL, "--thp", thp}, "exists already"},
		{"unencrypted without confirm", []string{"-d", filepath.Join(b.dir, "plain2.img"), "--server", tangd.URL, "--thp", thp}, "is not encrypted yet"},
		{"smb-create over a key file", []string{"-d", img, "-k", "-", "--smb", share, "--smb-user", smbd.User, "--smb-password-file", rightPw,
			"--smb-create", "--server", tangd.URL, "--thp", thp}, "exists already: it is not replaced"},
		{"no terminal, no flags", nil, "setup asks its questions on a terminal, and stdin is not one"},
		{"password in the clear", []string{"-d", img, "-k", "-", "--smb", share, "--smb-user", smbd.User, "--smb-password-file", rightPw}, "would be stored in the clear"},
	}
	if strings.HasPrefix(rootDev, "/dev/") {
		cases = append(cases, struct {
			name string
			args []string
			want string
		}{"running root", []string{"-d", rootDev, "--server", tangd.URL, "--thp", thp, "--confirm", rootDev}, "holds the running system"})
	}
	p2 := filepath.Join(b.dir, "plain2.img")
	os.WriteFile(p2, nil, 0o600)
	os.Truncate(p2, 64<<20)
	b.run(nil, "mkfs.ext4", "-q", "-F", p2, "30M")
	// Key sources without a disk, and thumbprints without servers: wrong
	// use, exit 2.
	for _, args := range [][]string{{"--server", tangd.URL, "--thp", thp}, {"-d", img, "-k", "-", "--server", tangd.URL, "--thp", thp, "--thp", thp}} {
		if out, errOut, code := b.setup([]byte(recoveryPass), args...); code != 2 || out != "" {
			t.Errorf("setup %s: exit %d, want 2\n%s", strings.Join(args, " "), code, errOut)
		}
	}
	smbd.MakeWritable(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := b.snapshot(img, plainImg, p2, filepath.Join(smbd.Dir, "ha.key"))
			out, errOut, code := b.setup([]byte(recoveryPass), c.args...)
			if code != 1 || !strings.Contains(errOut, c.want) || out != "" {
				t.Fatalf("exit %d, want 1 and %q\nstdout: %s\nstderr: %s", code, c.want, out, errOut)
			}
			if !strings.Contains(errOut, "tether: error: ") {
				t.Errorf("no error line: %s", errOut)
			}
			if after := b.snapshot(img, plainImg, p2, filepath.Join(smbd.Dir, "ha.key")); after != before {
				t.Errorf("setup changed something although it failed")
			}
		})
	}
}

// tmuxTerm is a terminal in a tmux server of the test's own.
type tmuxTerm struct {
	t    *testing.T
	sock string
}

func startTmux(t *testing.T, env []string, cmd string) *tmuxTerm {
	t.Helper()
	testenv.RequireCmd(t, "tmux")
	m := &tmuxTerm{t: t, sock: "tether-setup-" + filepath.Base(t.TempDir())}
	args := []string{"-L", m.sock, "-f", "/dev/null", "new-session", "-d", "-s", "setup", "-x", "160", "-y", "50",
		cmd + "; echo SETUP-EXIT=$?; sleep 600"}
	c := exec.Command("tmux", args...)
	c.Env = env
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screen:\n%s", m.screen())
		}
		exec.Command("tmux", "-L", m.sock, "kill-server").Run()
	})
	exec.Command("tmux", "-L", m.sock, "set-option", "-g", "history-limit", "5000").Run()
	return m
}

// screen is everything the terminal showed, scrollback included.
func (m *tmuxTerm) screen() string {
	out, _ := exec.Command("tmux", "-L", m.sock, "capture-pane", "-p", "-J", "-S", "-5000", "-t", "setup").Output()
	return string(out)
}

// waitFor waits until the screen shows want n times (counting from the
// start), and returns the screen.
func (m *tmuxTerm) waitFor(want string, n int) string {
	m.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		s := m.screen()
		if strings.Count(s, want) >= n {
			return s
		}
		if strings.Contains(s, "SETUP-EXIT=") && !strings.Contains(want, "SETUP-EXIT") {
			m.t.Fatalf("setup ended before showing %q", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Fatalf("the screen did not show %q (%d times) within 60s", want, n)
	return ""
}

// answer types a line.
func (m *tmuxTerm) answer(s string) {
	m.t.Helper()
	if s != "" {
		if out, err := exec.Command("tmux", "-L", m.sock, "send-keys", "-t", "setup", "-l", s).CombinedOutput(); err != nil {
			m.t.Fatalf("send-keys: %v %s", err, out)
		}
	}
	exec.Command("tmux", "-L", m.sock, "send-keys", "-t", "setup", "Enter").Run()
}

// TestSetupInteractive drives the Home Assistant journey through the
// screens: an existing container file whose key is a file on an SMB share
// (a real smbd; setup creates the file), with a tether server as the
// second source that must answer too. On the way it gives the wrong answers a person gives — a
// mounted device, a server that does not answer, a wrong share password —
// and checks that each is explained and asked again.
func TestSetupInteractive(t *testing.T) {
	smbd := testenv.StartSMBD(t)
	smbd.MakeWritable(t) // setup creates the key file
	srv := testenv.StartServer(t, "")
	b := newBed(t)
	img := b.image("cloud_container")
	thp := advThp(t, b, srv.URL)
	closed := testenv.ClosedPort(t)

	testenv.RequireCmd(t, "mkfs.ext4")
	plainImg := filepath.Join(b.dir, "mounted.img")
	os.WriteFile(plainImg, nil, 0o600)
	os.Truncate(plainImg, 64<<20)
	b.run(nil, "mkfs.ext4", "-q", "-F", plainImg)
	loop := strings.TrimSpace(b.run(nil, "losetup", "--find", "--show", plainImg))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	mnt := filepath.Join(b.dir, "mnt")
	os.Mkdir(mnt, 0o755)
	b.run(nil, "mount", loop, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	before := b.snapshot(img)
	// --discover=false: no multicast query on this machine's own network.
	cmd := fmt.Sprintf("%s setup --root %s --bin /usr/bin/tether --timeout 3s --discover=false", b.bin, b.root)
	term := startTmux(t, b.env, cmd)

	term.waitFor("Step 1 of 4: the disk", 1)
	term.waitFor("Choose 1 or 2: ", 1)
	term.answer("2")
	term.waitFor("Device or container file", 1)
	term.answer(loop)
	term.waitFor("is mounted on "+mnt, 1)
	term.waitFor("Device or container file", 2)
	term.answer(img)
	term.waitFor("is encrypted (LUKS2): setup adds a key to it", 1)
	term.waitFor("Enter an existing passphrase of "+img, 1)
	term.answer("wrong passphrase")
	term.waitFor("That passphrase does not open it", 1)
	term.waitFor("Enter an existing passphrase of "+img, 2)
	term.answer(recoveryPass)
	s := term.waitFor("Step 2 of 4: where the key lives", 1)
	if strings.Contains(s, recoveryPass) || strings.Contains(s, "wrong passphrase") {
		t.Fatal("a passphrase was echoed on the screen")
	}
	term.waitFor("Choose one, or two", 1)
	term.answer("2,1")
	term.waitFor("Key source 1 of 2", 1)
	term.answer(fmt.Sprintf("//127.0.0.1:%d/%s/ha.key", smbd.Port, smbd.Share))
	term.waitFor("User name on the share", 1)
	term.answer(smbd.User)
	term.waitFor("Password of "+smbd.User, 1)
	term.answer("not the password")
	s = term.waitFor("Password of "+smbd.User, 2)
	if !strings.Contains(strings.ToLower(s[strings.Index(s, "Reading the key file"):]), "password") {
		t.Errorf("a wrong share password is not explained:\n%s", s)
	}
	term.answer(smbd.Password)
	term.waitFor(`The key file \\127.0.0.1\keys\ha.key is not there yet.`, 1)
	term.waitFor("Create it now on the share, with 64 random bytes? [y/N]: ", 1)
	term.answer("y")
	term.waitFor("Created. Keep it there", 1)
	if key, err := os.ReadFile(filepath.Join(smbd.Dir, "ha.key")); err != nil || len(key) != 64 {
		t.Fatalf("the key file on the share: %d bytes, %v", len(key), err)
	}
	term.waitFor("Key source 2 of 2", 1)
	term.waitFor("Server address", 1)
	term.answer(closed)
	term.waitFor("Cannot use "+closed, 1)
	term.waitFor("Server address", 2)
	term.answer(srv.URL)
	s = term.waitFor("Is it the same? [y/N]: ", 1)
	if !strings.Contains(s, "    "+thp) {
		t.Fatalf("the server's thumbprint %s is not shown:\n%s", thp, s)
	}
	term.answer("y")
	term.waitFor("both or either [both]: ", 1)
	term.answer("")
	term.waitFor("Name of the unlocked volume, /dev/mapper/NAME [cloud_container]: ", 1)
	term.answer("")
	term.waitFor("Mount it at boot on which directory?", 1)
	term.answer("/srv/cloud")
	s = term.waitFor("Type the device name "+img+" to go ahead", 1)
	if !strings.Contains(s, `unlocked by the key file \\127.0.0.1\keys\ha.key and the server `+srv.URL+" (both must answer)") {
		t.Errorf("the confirmation does not say what unlocks it:\n%s", s)
	}
	if b.snapshot(img) != before {
		t.Fatal("something changed before the confirmation")
	}
	term.answer("yes")
	term.waitFor("That is not "+img, 1)
	term.answer(img)
	s = term.waitFor("SETUP-EXIT=", 1)
	if !strings.Contains(s, "SETUP-EXIT=0") || !strings.Contains(s, "Done. "+img+" unlocks with its binding") {
		t.Fatalf("setup did not finish")
	}
	if os.Getenv("SHOW_SCREEN") != "" {
		t.Logf("screen:\n%s", s)
	}
	for _, want := range []string{"What unlocks it:", "If the key source is gone", "Recovery passphrase: your existing passphrase"} {
		if !strings.Contains(s, want) {
			t.Errorf("the summary lacks %q", want)
		}
	}
	list := b.run(nil, "tether", "luks", "list", "-d", img)
	if want := `smb(\\127.0.0.1\keys\ha.key, credentials protected by tang(` + srv.URL + `))`; !strings.Contains(list, want) {
		t.Errorf("binding:\n%s\nwant %s", list, want)
	}
	if tab, _ := os.ReadFile(filepath.Join(b.root, "etc/crypttab")); !bytes.Contains(tab, []byte("cloud_container\t"+img+"\t/run/tether/keyd.sock\tluks,_netdev,nofail")) {
		t.Errorf("crypttab:\n%s", tab)
	}
	b.healthy()
	// Both must answer: without the server the share's key is not enough.
	srv.Cmd.Process.Kill()
	srv.Cmd.Wait()
	if _, _, code := b.exec(nil, "tether", "luks", "unlock", "-d", img, "--test", "--timeout", "2s"); code == 0 {
		t.Error("the volume unlocks without the server, though both must answer")
	}
}

// TestSetupEither: two servers with --need any make an sss policy of
// t=1: the volume still unlocks when one of them is gone.
func TestSetupEither(t *testing.T) {
	tangd := testenv.StartTangd(t)
	srv := testenv.StartServer(t, "")
	b := newBed(t)
	img := b.image("either")
	out, errOut, code := b.setup([]byte(recoveryPass), "-d", img, "-k", "-", "--server", srv.URL, "--thp", advThp(t, b, srv.URL),
		"--server", tangd.URL, "--thp", advThp(t, b, tangd.URL), "--need", "any")
	if code != 0 || !strings.Contains(errOut, "(either one is enough)") {
		t.Fatalf("setup: exit %d\n%s%s", code, out, errOut)
	}
	if list := b.run(nil, "tether", "luks", "list", "-d", img); !strings.Contains(list, `sss '{"pins":{"tang":[`) || !strings.Contains(list, `"t":1`) {
		t.Errorf("binding: %s", list)
	}
	srv.Cmd.Process.Kill()
	srv.Cmd.Wait()
	b.run(nil, "tether", "luks", "unlock", "-d", img, "--test", "--timeout", "2s")
}
