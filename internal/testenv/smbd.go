package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SMBD is a Samba smbd serving one share on loopback, SMB3 only, with one
// user and password.
type SMBD struct {
	Port     int
	Share    string // share name
	Dir      string // the share's directory on this machine
	User     string
	Password string
	cmd      *exec.Cmd
}

// SMBUser is the Unix account smbd maps the share user to; smbd needs one.
const SMBUser = "tethertest"

// StartSMBD starts smbd in the foreground with its own configuration and
// state under a temporary directory. It needs root (to create the Unix
// account once and to run smbd).
func StartSMBD(t testing.TB) *SMBD {
	t.Helper()
	smbd := RequireCmd(t, "smbd")
	smbpasswd := RequireCmd(t, "smbpasswd")
	RequireRoot(t)
	if exec.Command("id", SMBUser).Run() != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/usr/sbin/nologin", SMBUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v\n%s", err, out)
		}
	}
	base, err := os.MkdirTemp("", "smbd")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o755)
	t.Cleanup(func() { os.RemoveAll(base) })
	for _, d := range []string{"share", "private", "lock", "state", "cache", "ncalrpc", "pid"} {
		os.MkdirAll(filepath.Join(base, d), 0o755)
	}
	var port int
	addr := FreePort(t)
	fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &port)
	s := &SMBD{Port: port, Share: "keys", Dir: filepath.Join(base, "share"), User: SMBUser, Password: "pw-" + filepath.Base(base)}
	conf := fmt.Sprintf(`[global]
  smb ports = %d
  bind interfaces only = yes
  interfaces = lo
  pid directory = %[2]s/pid
  lock directory = %[2]s/lock
  state directory = %[2]s/state
  cache directory = %[2]s/cache
  private dir = %[2]s/private
  ncalrpc dir = %[2]s/ncalrpc
  log file = %[2]s/log.%%m
  passdb backend = tdbsam:%[2]s/private/passdb.tdb
  server min protocol = SMB3
  server role = standalone server
  map to guest = never
  load printers = no
  disable spoolss = yes
[keys]
  path = %[2]s/share
  read only = no
  valid users = %[3]s
`, port, base, SMBUser)
	cfg := filepath.Join(base, "smb.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	pw := exec.Command(smbpasswd, "-c", cfg, "-a", "-s", SMBUser)
	pw.Stdin = strings.NewReader(s.Password + "\n" + s.Password + "\n")
	if out, err := pw.CombinedOutput(); err != nil {
		t.Fatalf("smbpasswd: %v\n%s", err, out)
	}
	s.cmd = exec.Command(smbd, "--foreground", "--no-process-group", "-s", cfg)
	logs := &SyncBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = logs, logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("smbd output:\n%s", logs.String())
		}
	})
	WaitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	return s
}

// Stop stops smbd (the share goes down); calling it twice is fine.
func (s *SMBD) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// WriteKey writes a key file into the share, readable by the share user.
func (s *SMBD) WriteKey(t testing.TB, name string, data []byte) {
	t.Helper()
	p := filepath.Join(s.Dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// MakeWritable lets the share user create files in the share's directory
// (smbd writes as that Unix account; the directory is root's).
func (s *SMBD) MakeWritable(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("chown", SMBUser, s.Dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v\n%s", s.Dir, err, out)
	}
}
