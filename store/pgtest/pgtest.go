// Package pgtest starts a throw-away PostgreSQL server for tests: initdb
// in a temporary directory as the postgres user, then pg_ctl start with a
// Unix socket in that directory and no TCP listener. Without PostgreSQL
// installed the test is skipped locally and fails in CI (testenv.Require).
package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// binDir finds the PostgreSQL server programs (Debian keeps them out of PATH).
func binDir() string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1])
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

// Server is a running PostgreSQL.
type Server struct {
	Dir  string // data directory and socket directory parent
	Sock string // socket directory
	Port int
	bin  string
	run  func(args ...string) *exec.Cmd
}

// DSN returns a connection URL for database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", db, s.Sock, s.Port)
}

// CreateDB creates a new empty database and returns its DSN.
func (s *Server) CreateDB(t testing.TB, name string) string {
	t.Helper()
	out, err := s.run(filepath.Join(s.bin, "createdb"), "-h", s.Sock, "-p", strconv.Itoa(s.Port), "-U", "postgres", name).CombinedOutput()
	if err != nil {
		t.Fatalf("createdb %s: %v\n%s", name, err, out)
	}
	return s.DSN(name)
}

// Dump returns database db as plain SQL (pg_dump without owners or
// grants, so that it loads into any server).
func (s *Server) Dump(t testing.TB, db string) []byte {
	t.Helper()
	cmd := s.run(filepath.Join(s.bin, "pg_dump"), "-h", s.Sock, "-p", strconv.Itoa(s.Port), "-U", "postgres",
		"--no-owner", "--no-privileges", db)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump %s: %v\n%s", db, err, stderr.Bytes())
	}
	return out
}

// Load creates database name from a plain SQL dump and returns its DSN.
// Any error in the dump fails the test.
func (s *Server) Load(t testing.TB, name string, dump []byte) string {
	t.Helper()
	dsn := s.CreateDB(t, name)
	cmd := s.run(filepath.Join(s.bin, "psql"), "-h", s.Sock, "-p", strconv.Itoa(s.Port), "-U", "postgres",
		"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", name)
	cmd.Stdin = bytes.NewReader(dump)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql: load dump into %s: %v\n%s", name, err, out)
	}
	return dsn
}

// Start starts a PostgreSQL server that is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binDir()
	testenv.Require(t, bin != "", "PostgreSQL (the postgresql package) is not installed")
	run := func(args ...string) *exec.Cmd { return exec.Command(args[0], args[1:]...) }
	owner := ""
	if os.Geteuid() == 0 {
		// initdb refuses to run as root.
		u, err := user.Lookup("postgres")
		testenv.Require(t, err == nil, "no postgres user to run PostgreSQL as")
		owner = u.Username
		run = func(args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", owner, "--"}, args...)...)
		}
	}
	dir, err := os.MkdirTemp("", "tether-pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	data := filepath.Join(dir, "data")
	os.Mkdir(sock, 0o700)
	if owner != "" {
		u, _ := user.Lookup(owner)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, sock} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		os.Chmod(dir, 0o755)
	}
	if out, err := run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	s := &Server{Dir: dir, Sock: sock, Port: port, bin: bin, run: run}
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories=%s -p %d -c fsync=off -c max_connections=100", sock, port)
	if out, err := run(filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	t.Cleanup(func() {
		run(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop").Run()
	})
	return s
}

// freePort picks a port number for the socket name (PostgreSQL puts the
// port in the socket file name, so it only has to be unique per directory;
// a free TCP port keeps logs unambiguous anyway).
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
