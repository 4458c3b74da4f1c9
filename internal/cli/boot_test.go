package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/test/vm"
)

// TestInstallSystemdUnitsVerify: the shipped units pass systemd-analyze
// verify, and are enabled the way systemctl enable would.
func TestInstallSystemdUnitsVerify(t *testing.T) {
	sa := testenv.RequireCmd(t, "systemd-analyze")
	bin := testenv.TetherBin(t)
	root := t.TempDir()
	out, errOut, code := testenv.Run(t, nil, bin, "install", "systemd", "--root", root, "--bin", bin, "--volume", "backup")
	if code != 0 {
		t.Fatalf("install: %s", errOut)
	}
	dir := filepath.Join(root, "etc/systemd/system")
	for _, f := range []string{"tether-keyd.socket", "tether-keyd.service", "tether-askpass.path", "tether-askpass.service",
		"systemd-cryptsetup@.service.d/tether.conf", "tether-keyd.socket.d/volumes.conf", "cryptsetup.target.wants/tether-keyd.socket"} {
		if !strings.Contains(string(out), filepath.Join(dir, f)) {
			t.Errorf("install did not list %s", f)
		}
		if _, err := os.Lstat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	svc, _ := os.ReadFile(filepath.Join(dir, "tether-keyd.service"))
	if !strings.Contains(string(svc), "ExecStart="+bin+" keyd") {
		t.Errorf("ExecStart does not run %s:\n%s", bin, svc)
	}
	if strings.Contains(string(svc), "\nAfter=network-online.target") {
		t.Error("keyd must not be ordered after network-online.target (it would deadlock local volumes)")
	}
	cmd := exec.Command(sa, "verify", "tether-keyd.socket", "tether-keyd.service", "tether-askpass.path", "tether-askpass.service")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// Installing again replaces, it does not fail.
	if _, errOut, code := testenv.Run(t, nil, bin, "install", "systemd", "--root", root, "--bin", bin); code != 0 {
		t.Errorf("second install: %s", errOut)
	}
}

// TestInstallInitramfsScripts: the dracut module and the initramfs-tools
// scripts are valid shell, executable, run this tether, and put the smb
// pin's helper from next to it in the initramfs.
func TestInstallInitramfsScripts(t *testing.T) {
	bin := testenv.TetherBin(t)
	for _, target := range []string{"dracut", "initramfs-tools"} {
		root := t.TempDir()
		out, errOut, code := testenv.Run(t, nil, bin, "install", target, "--root", root, "--bin", "/usr/bin/tether")
		if code != 0 {
			t.Fatalf("install %s: %s", target, errOut)
		}
		helper := false
		for _, f := range strings.Fields(string(out)) {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(f)
			if strings.Contains(string(data), "@BIN@") || strings.Contains(string(data), "@SMB@") {
				t.Errorf("%s: @BIN@ or @SMB@ not replaced", f)
			}
			helper = helper || strings.Contains(string(data), "/usr/bin/tether-smb")
			if !strings.HasPrefix(string(data), "#!") {
				continue
			}
			if fi.Mode()&0o111 == 0 {
				t.Errorf("%s is not executable", f)
			}
			shell := "sh" // initramfs-tools and dracut hooks run under /bin/sh (dash)
			if strings.HasPrefix(string(data), "#!/bin/bash") {
				shell = "bash"
			}
			if out, err := exec.Command(shell, "-n", f).CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v\n%s", shell, f, err, out)
			}
		}
		if !helper {
			t.Errorf("%s: no file installs /usr/bin/tether-smb", target)
		}
	}
	if _, errOut, code := testenv.Run(t, nil, bin, "install", "grub"); code != 2 || !strings.Contains(string(errOut), "unknown command") && !strings.Contains(string(errOut), "needs a subcommand") {
		t.Errorf("install grub: exit %d: %s", code, errOut)
	}
}

// TestKeydSocketActivated: keyd started by systemd-socket-activate (the
// LISTEN_FDS protocol of tether-keyd.socket) serves a bound image's key to
// a client that speaks systemd-cryptsetup's side of the protocol.
func TestKeydSocketActivated(t *testing.T) {
	ssa := testenv.RequireCmd(t, "systemd-socket-activate")
	testenv.RequireCmd(t, "cryptsetup")
	dir := t.TempDir()
	srv := testenv.StartServer(t, "")
	bin := testenv.TetherBin(t)
	img := filepath.Join(dir, "data.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 20<<20)
	if _, e, c := testenv.Run(t, []byte("recovery"), "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img); c != 0 {
		t.Fatal(string(e))
	}
	vm.BindTang(t, bin, img, "recovery", srv.URL, vm.FetchAdv(t, srv.URL), 1)
	tab := filepath.Join(dir, "crypttab")
	line, errOut, code := testenv.Run(t, nil, bin, "crypttab", "-d", img, "-n", "data", "--socket", filepath.Join(dir, "keyd.sock"))
	if code != 0 {
		t.Fatalf("crypttab: %s", errOut)
	}
	os.WriteFile(tab, line, 0o644)

	sock := filepath.Join(dir, "keyd.sock")
	var logs testenv.SyncBuffer
	cmd := exec.Command(ssa, "-l", sock, bin, "keyd", "--crypttab", tab, "--deadline", "3s")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The client's end bound to the abstract name, as systemd-cryptsetup does.
	laddr := &net.UnixAddr{Name: "@0123456789abcdef/cryptsetup/data", Net: "unix"}
	c, err := net.DialUnix("unix", laddr, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var key []byte
	buf := make([]byte, 256)
	for {
		n, err := c.Read(buf)
		key = append(key, buf[:n]...)
		if err != nil {
			break
		}
	}
	c.Close()
	if _, e, c := testenv.Run(t, key, "cryptsetup", "open", "--test-passphrase", "--key-slot", "1", "--key-file", "-", img); c != 0 {
		t.Fatalf("served key %q does not open keyslot 1: %s\nkeyd log:\n%s", key, e, logs.String())
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), `keyd: volume "data": key sent`) }, logs.String)
}

func waitFor(t *testing.T, ok func() bool, log func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !ok() {
		if ctx.Err() != nil {
			t.Fatalf("timed out; log:\n%s", log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrypttabWrite: the crypttab line names the volume's LUKS UUID (a
// path for an image) and the keyd socket; --write replaces the volume's
// line and keeps everything else.
func TestCrypttabWrite(t *testing.T) {
	testenv.RequireCmd(t, "cryptsetup")
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "d.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 20<<20)
	if _, e, c := testenv.Run(t, []byte("x"), "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img); c != 0 {
		t.Fatal(string(e))
	}
	tab := filepath.Join(dir, "crypttab")
	os.WriteFile(tab, []byte("# keep me\nswap /dev/sdb2 /dev/urandom swap\ndata /dev/old none luks\nother UUID=1 none luks\n"), 0o600)
	if _, errOut, code := testenv.Run(t, nil, bin, "crypttab", "-d", img, "-n", "data", "--write", tab); code != 0 {
		t.Fatalf("%s", errOut)
	}
	got, _ := os.ReadFile(tab)
	want := "# keep me\nswap /dev/sdb2 /dev/urandom swap\ndata\t" + img + "\t/run/tether/keyd.sock\tluks,_netdev,nofail\nother UUID=1 none luks\n"
	if string(got) != want {
		t.Errorf("crypttab:\n%s\nwant:\n%s", got, want)
	}
	if fi, _ := os.Stat(tab); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode changed to %v", fi.Mode())
	}
	out, _, _ := testenv.Run(t, nil, bin, "crypttab", "-d", img, "-n", "root", "--root")
	if !strings.HasSuffix(strings.TrimSpace(string(out)), "none\tluks,initramfs") {
		t.Errorf("--root: %q", out)
	}
	if _, errOut, code := testenv.Run(t, nil, bin, "crypttab", "-d", filepath.Join(dir, "nope"), "-n", "x"); code != 1 || !strings.Contains(string(errOut), "hint:") {
		t.Errorf("missing device: exit %d %s", code, errOut)
	}
}

// TestCrypttabWriteKeepsOptions: --write on a volume that already has a
// line keeps that line's options (the user's nofail, headless=,
// keyfile-timeout=) and adds tether's; a relative image path is written
// absolute; a crypttab that is a symbolic link stays one; nothing is left
// behind but the new file.
func TestCrypttabWriteKeepsOptions(t *testing.T) {
	testenv.RequireCmd(t, "cryptsetup")
	bin := testenv.TetherBin(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "cloud_container.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 20<<20)
	if _, e, c := testenv.Run(t, []byte("x"), "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img); c != 0 {
		t.Fatal(string(e))
	}
	etc := filepath.Join(dir, "etc")
	os.Mkdir(etc, 0o755)
	real := filepath.Join(etc, "crypttab.real")
	tab := filepath.Join(etc, "crypttab")
	os.WriteFile(real, []byte("# comment\n\ncloud /old/path.img none plain,headless=true,nofail,keyfile-timeout=10\nswap /dev/sdb2 /dev/urandom swap"), 0o640)
	if err := os.Symlink("crypttab.real", tab); err != nil {
		t.Fatal(err)
	}
	// Relative to the directory the command runs in.
	cmd := exec.Command(bin, "crypttab", "-d", "cloud_container.img", "-n", "cloud", "--write", tab)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("crypttab --write: %v", err)
	}
	line := "cloud\t" + img + "\t/run/tether/keyd.sock\tluks,_netdev,nofail,headless=true,keyfile-timeout=10"
	if strings.TrimSpace(string(out)) != line {
		t.Errorf("printed %q, want %q", out, line)
	}
	got, _ := os.ReadFile(tab)
	want := "# comment\n\n" + line + "\nswap /dev/sdb2 /dev/urandom swap\n"
	if string(got) != want {
		t.Errorf("crypttab:\n%s\nwant:\n%s", got, want)
	}
	if fi, err := os.Lstat(tab); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("%s is no longer a symbolic link: %v", tab, err)
	}
	if fi, _ := os.Stat(real); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v", fi.Mode())
	}
	if ents, _ := os.ReadDir(etc); len(ents) != 2 {
		t.Errorf("left behind in %s: %v", etc, ents)
	}
	// Again, now for the password agent: the options stay, nothing doubles.
	if _, errOut, code := testenv.Run(t, nil, bin, "crypttab", "-d", img, "-n", "cloud", "--askpass", "--write", tab); code != 0 {
		t.Fatal(string(errOut))
	}
	got, _ = os.ReadFile(tab)
	if !strings.Contains(string(got), "cloud\t"+img+"\tnone\tluks,_netdev,nofail,headless=true,keyfile-timeout=10\n") {
		t.Errorf("after --askpass:\n%s", got)
	}
	// A path crypttab cannot hold.
	blank := filepath.Join(dir, "my disk.img")
	os.Link(img, blank)
	if _, errOut, code := testenv.Run(t, nil, bin, "crypttab", "-d", blank, "-n", "x", "--write", tab); code != 1 ||
		!strings.Contains(string(errOut), "blanks") || !strings.Contains(string(errOut), "hint:") {
		t.Errorf("image path with a blank: exit %d: %s", code, errOut)
	}
	if again, _ := os.ReadFile(tab); string(again) != string(got) {
		t.Errorf("a refused write changed the file:\n%s", again)
	}
}

// TestServiceSandboxHidesNoVolume: systemd's own parser (systemd-analyze
// security --offline) reads the installed keyd and askpass services and
// finds none of the settings that hide or replace paths, devices or the
// network a key comes through (ProtectHome= made keyd blind to
// /home/haadmin/cloud_container.img; PrivateTmp= hides /tmp images and
// orders the unit after /var/tmp's mount), while the hardening that
// hides nothing is still there.
func TestServiceSandboxHidesNoVolume(t *testing.T) {
	sa := testenv.RequireCmd(t, "systemd-analyze")
	bin := testenv.TetherBin(t)
	root := t.TempDir()
	if _, errOut, code := testenv.Run(t, nil, bin, "install", "systemd", "--root", root, "--bin", bin); code != 0 {
		t.Fatalf("install: %s", errOut)
	}
	hiding := []string{"RootDirectory=/RootImage=", "PrivateDevices=", "PrivateMounts=", "PrivateTmp=", "ProtectHome=",
		"ProtectSystem=", "DeviceAllow=", "PrivateNetwork=", "PrivateUsers="}
	kept := []string{"NoNewPrivileges=", "RestrictSUIDSGID=", "LockPersonality=", "RestrictRealtime=", "SystemCallArchitectures="}
	for _, unit := range []string{"tether-keyd.service", "tether-askpass.service"} {
		path := filepath.Join(root, "etc/systemd/system", unit)
		out, err := exec.Command(sa, "security", "--offline=true", "--json=short", path).Output()
		if err != nil && len(out) == 0 {
			t.Fatalf("systemd-analyze security %s: %v", unit, err)
		}
		var checks []struct {
			Name string `json:"name"`
			Set  *bool  `json:"set"`
		}
		if err := json.Unmarshal(out, &checks); err != nil {
			t.Fatalf("%s: %v\n%s", unit, err, out)
		}
		set := map[string]bool{}
		for _, c := range checks {
			set[c.Name] = c.Set != nil && *c.Set
		}
		for _, h := range hiding {
			if _, ok := set[h]; !ok {
				t.Errorf("%s: systemd-analyze reports nothing on %s", unit, h)
			}
			if set[h] {
				t.Errorf("%s sets %s: it hides volumes or what reaches their keys", unit, h)
			}
		}
		for _, k := range kept {
			if !set[k] {
				t.Errorf("%s lost the hardening %s", unit, k)
			}
		}
		// Path settings systemd-analyze security does not score.
		data, _ := os.ReadFile(path)
		for _, d := range []string{"InaccessiblePaths=", "TemporaryFileSystem=", "BindPaths=", "BindReadOnlyPaths=", "ReadOnlyPaths=", "ProtectHome=", "PrivateTmp="} {
			if strings.Contains(string(data), "\n"+d) {
				t.Errorf("%s sets %s", unit, d)
			}
		}
	}
}

// TestAgentUnits: tether install systemd installs tether-agent.service
// (enabled, after network-online.target, restarted on failure) and its
// template for other state directories; systemd-analyze verifies both;
// and the template's ExecStart, run as systemd would for an enrolment,
// sends heartbeats to a real managed server and exits 0 on SIGTERM (so
// Restart=on-failure does not restart a clean stop).
func TestAgentUnits(t *testing.T) {
	sa := testenv.RequireCmd(t, "systemd-analyze")
	bin := testenv.TetherBin(t)
	root := t.TempDir()
	if _, errOut, code := testenv.Run(t, nil, bin, "install", "systemd", "--root", root, "--bin", bin); code != 0 {
		t.Fatalf("install: %s", errOut)
	}
	dir := filepath.Join(root, "etc/systemd/system")
	for _, f := range []string{"tether-agent.service", "tether-agent@.service"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"\nWants=network-online.target\n", "\nAfter=network-online.target\n", "\nRestart=on-failure\n", "\nConditionPathExists="} {
			if !strings.Contains(string(data), want) {
				t.Errorf("%s lacks %q", f, strings.TrimSpace(want))
			}
		}
	}
	if to, err := os.Readlink(filepath.Join(dir, "multi-user.target.wants/tether-agent.service")); err != nil || to != "/etc/systemd/system/tether-agent.service" {
		t.Errorf("tether-agent.service is not enabled: %q %v", to, err)
	}
	state := t.TempDir()
	esc, err := exec.Command("systemd-escape", "--path", state).Output()
	if err != nil {
		t.Fatal(err)
	}
	instance := "tether-agent@" + strings.TrimSpace(string(esc)) + ".service"
	os.Symlink("tether-agent@.service", filepath.Join(dir, instance))
	cmd := exec.Command(sa, "verify", "tether-agent.service", instance)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// Enrol into the instance's state directory, then run its ExecStart.
	f := startManagedFixture(t)
	tok := strings.TrimSpace(mustTether(t, f.adminEnv, "", "admin", "token", "create"))
	id := strings.TrimSpace(mustTether(t, nil, tok, "enroll", "--server", "https://"+f.addr, "--token-file", "-", "--state", state, "--key-store", "file"))
	lastSeen := func() string {
		var devs []struct {
			ID       string `json:"id"`
			LastSeen string `json:"last_seen"`
		}
		json.Unmarshal([]byte(mustTether(t, f.adminEnv, "", "admin", "device", "list", "--json")), &devs)
		for _, d := range devs {
			if d.ID == id {
				return d.LastSeen
			}
		}
		t.Fatalf("device %s is not listed", id)
		return ""
	}
	before := lastSeen()
	time.Sleep(1100 * time.Millisecond)
	unit, _ := os.ReadFile(filepath.Join(dir, "tether-agent@.service"))
	var exec_ []string
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			exec_ = strings.Fields(strings.ReplaceAll(v, "%f", state))
		}
	}
	if len(exec_) == 0 || exec_[0] != bin {
		t.Fatalf("ExecStart of tether-agent@.service: %q", exec_)
	}
	var logs testenv.SyncBuffer
	agent := exec.Command(exec_[0], exec_[1:]...)
	agent.Stdout, agent.Stderr = &logs, &logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- agent.Wait() }()
	t.Cleanup(func() { agent.Process.Kill() })
	waitFor(t, func() bool { return lastSeen() != before }, logs.String)
	agent.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent stopped by SIGTERM: %v (Restart=on-failure would restart it)\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("agent did not stop on SIGTERM\n%s", logs.String())
	}

	// Revoked: the agent stops with the status the unit does not restart.
	if !strings.Contains(string(unit), "\nRestartPreventExitStatus=3\n") {
		t.Errorf("tether-agent@.service does not keep a revoked device's agent stopped:\n%s", unit)
	}
	mustTether(t, f.adminEnv, "", "admin", "device", "revoke", "--yes", id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	again := exec.CommandContext(ctx, exec_[0], exec_[1:]...)
	var errOut bytes.Buffer
	again.Stderr = &errOut
	err = again.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(errOut.String(), "revoked") || !strings.Contains(errOut.String(), "hint:") {
		t.Errorf("agent of a revoked device: %v (want exit status 3 at once, naming the revocation)\n%s", err, errOut.String())
	}
}

// TestKeydHomeHidden: the defect of ProtectHome=, reproduced with a real
// mount namespace (what systemd builds for it: an empty file system over
// /home): keyd there cannot see a container file that exists, and says so
// at once, naming the likely cause, instead of retrying "no such device"
// for the whole deadline. The same keyd outside the namespace serves the
// key.
func TestKeydHomeHidden(t *testing.T) {
	testenv.RequireRoot(t)
	unshare := testenv.RequireCmd(t, "unshare")
	testenv.RequireCmd(t, "cryptsetup")
	bin := testenv.TetherBin(t)
	srv := testenv.StartServer(t, "")
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	os.MkdirAll(filepath.Join(home, "haadmin"), 0o755)
	img := filepath.Join(home, "haadmin", "cloud_container.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 20<<20)
	if _, e, c := testenv.Run(t, []byte("recovery"), "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img); c != 0 {
		t.Fatal(string(e))
	}
	vm.BindTang(t, bin, img, "recovery", srv.URL, vm.FetchAdv(t, srv.URL), 1)
	tab := filepath.Join(dir, "crypttab")
	os.WriteFile(tab, []byte("cloud "+img+" /run/tether/keyd.sock luks,_netdev\n"), 0o644)

	serve := func(hidden bool) (key []byte, took time.Duration, log string) {
		sock := filepath.Join(t.TempDir(), "keyd.sock")
		var logs testenv.SyncBuffer
		script := `exec "$0" keyd --socket "$1" --crypttab "$2" --deadline 30s`
		if hidden {
			script = `mount -t tmpfs -o mode=755 tmpfs "$3" && ` + script
		}
		cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c", script, bin, sock, tab, home)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
		waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil }, logs.String)
		start := time.Now()
		c, err := net.DialUnix("unix", &net.UnixAddr{Name: "@00c0ffee/cryptsetup/cloud", Net: "unix"}, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.CloseWrite()
		c.SetReadDeadline(time.Now().Add(time.Minute))
		var b bytes.Buffer
		b.ReadFrom(c)
		took = time.Since(start)
		waitFor(t, func() bool { return strings.Contains(logs.String(), `volume "cloud": `) }, logs.String)
		return b.Bytes(), took, logs.String()
	}
	key, took, log := serve(true)
	if len(key) != 0 || took > 10*time.Second {
		t.Errorf("/home hidden: key %d bytes after %v; want none, at once", len(key), took)
	}
	if !strings.Contains(log, "container file "+img+" does not exist") || !strings.Contains(log, "ProtectHome=") {
		t.Errorf("/home hidden: the log does not say what is wrong:\n%s", log)
	}
	key, _, log = serve(false)
	if _, e, c := testenv.Run(t, key, "cryptsetup", "open", "--test-passphrase", "--key-slot", "1", "--key-file", "-", img); c != 0 {
		t.Errorf("/home visible: served key does not open the image: %s\n%s", e, log)
	}
}

// TestHealUnit: tether install systemd installs tether-heal.service but
// does not enable it (off: nothing is resealed by itself); --heal enables
// it as systemctl enable would; systemd-analyze verifies it; its
// ExecStart, with options as /etc/tether/heal.conf would give them, runs
// this tether's heal.
func TestHealUnit(t *testing.T) {
	sa := testenv.RequireCmd(t, "systemd-analyze")
	bin := testenv.TetherBin(t)
	root := t.TempDir()
	if _, errOut, code := testenv.Run(t, nil, bin, "install", "systemd", "--root", root, "--bin", bin); code != 0 {
		t.Fatalf("install: %s", errOut)
	}
	dir := filepath.Join(root, "etc/systemd/system")
	unit, err := os.ReadFile(filepath.Join(dir, "tether-heal.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nType=oneshot\n", "\nWants=network-online.target\n",
		"\nAfter=network-online.target cryptsetup.target remote-cryptsetup.target\n",
		"\nEnvironmentFile=-/etc/tether/heal.conf\n", "\nExecStart=" + bin + " tpm heal $OPTIONS\n", "\nWantedBy=multi-user.target\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("tether-heal.service lacks %q", strings.TrimSpace(want))
		}
	}
	link := filepath.Join(dir, "multi-user.target.wants/tether-heal.service")
	if _, err := os.Lstat(link); err == nil {
		t.Fatal("tether install systemd enabled tether-heal.service")
	}
	cmd := exec.Command(sa, "verify", "--man=no", "tether-heal.service")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if _, errOut, code := testenv.Run(t, nil, bin, "install", "systemd", "--root", root, "--bin", bin, "--heal"); code != 0 {
		t.Fatalf("install --heal: %s", errOut)
	}
	if to, err := os.Readlink(link); err != nil || to != "/etc/systemd/system/tether-heal.service" {
		t.Errorf("--heal did not enable tether-heal.service: %q %v", to, err)
	}
	if _, errOut, code := testenv.Run(t, nil, bin, "install", "dracut", "--root", root, "--bin", bin, "--heal"); code != 2 || !strings.Contains(string(errOut), "--heal is for install systemd") {
		t.Errorf("install dracut --heal: exit %d: %s", code, errOut)
	}

	// The ExecStart line, $OPTIONS as heal.conf would set them: nothing
	// to heal in an empty system.
	var argv []string
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			empty := t.TempDir()
			argv = strings.Fields(strings.ReplaceAll(v, "$OPTIONS", "--crypttab "+empty+"/crypttab --secrets "+empty))
		}
	}
	if len(argv) == 0 {
		t.Fatal("no ExecStart")
	}
	if _, errOut, code := testenv.Run(t, nil, argv[0], argv[1:]...); code != 0 || !strings.Contains(string(errOut), "nothing to heal") {
		t.Errorf("%v: exit %d: %s", argv, code, errOut)
	}
}
