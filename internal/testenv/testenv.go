// Package testenv starts the real peers tests run against — stock tangd,
// the tether binary, clevis — and decides what happens when one is
// missing: locally the test is skipped with the command that installs it;
// in CI (CI=true) a missing peer fails the test, so a green run means the
// peers really ran.
package testenv

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require fails (in CI) or skips (locally) the test with why.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("required test component missing: %s (run scripts/setup.sh)", why)
	}
	t.Skipf("skipping: %s (install it with: sudo scripts/setup.sh)", why)
}

// RequireCmd requires an executable, by name on PATH or by absolute path,
// and returns its path.
func RequireCmd(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, name+" is not installed")
	return p
}

// RequireRoot requires the tests to run as root (for losetup, tangd keys).
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "test needs root")
}

// RepoRoot returns the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	inMain    bool // Main is running the tests
)

// Main runs a package's tests, then removes the binaries TetherBin built
// for them. Every package whose tests call TetherBin runs its tests
// through it:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	if n := os.Getenv(noFileEnv); n != "" {
		execWithFileLimit(n) // the wrapper of ServerOptions.NoFile; does not return
	}
	inMain = true
	code := m.Run()
	if code == 0 {
		if err := checkNoStrayClose(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			code = 1
		}
	}
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// checkNoStrayClose catches a file descriptor closed twice: a test that
// wraps a raw descriptor in os.NewFile and also closes the number by hand
// leaves the *os.File's finalizer to close that number again at some later
// garbage collection, when it belongs to someone else (CI once failed in
// another test with "unlinkat: bad file descriptor"). It takes the lowest
// free descriptors, where such a number lands, lets the finalizers run,
// and checks that every one is still open.
func checkNoStrayClose() error {
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	for range 32 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return nil // out of descriptors: nothing to check with
		}
		held = append(held, f)
	}
	for range 3 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond) // finalizers run in their own goroutine
	}
	for _, f := range held {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			return fmt.Errorf("file descriptor %d was closed by someone else after the tests: an *os.File made with os.NewFile whose descriptor was also closed by hand (unix.Close) was collected; let the File alone close it (%v)", f.Fd(), err)
		}
	}
	return nil
}

// TetherBin builds the tether, tether-server and tether-smb binaries once
// per test process, into one temporary directory that Main removes, and
// returns tether's path. They are built as
// they ship: without cgo, static binaries that start faster and run in any
// initramfs.
func TetherBin(t testing.TB) string {
	t.Helper()
	if !inMain {
		t.Fatal("testenv.TetherBin: run the package's tests through testenv.Main (func TestMain(m *testing.M) { testenv.Main(m) }), which removes the binaries afterwards")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tether-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "tether")
		// Side by side as they are installed: tether runs tether-server
		// for "tether server" and "tether admin", and tether-smb for the
		// smb pin.
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/tether", "./cmd/tether-server", "./cmd/tether-smb")
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// FreePort returns a loopback address with a port nobody listens on now.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Tangd is a stock tangd serving a key directory on loopback.
type Tangd struct {
	URL    string
	KeyDir string
	stop   func()
}

// Stop stops the server before the test ends: connections to it are
// refused from then on.
func (d *Tangd) Stop() { d.stop() }

// StartTangd starts the Debian tangd, socket-activated per connection by
// systemd-socket-activate --inetd as its systemd units do, with fresh keys
// from tangd-keygen. It is stopped when the test ends.
func StartTangd(t testing.TB) *Tangd {
	t.Helper()
	dir := t.TempDir()
	return StartTangdDir(t, dir, true)
}

// StartTangdDir is StartTangd on an existing key directory; keygen makes
// fresh keys in it first.
func StartTangdDir(t testing.TB, dir string, keygen bool) *Tangd {
	t.Helper()
	tangd := "/usr/libexec/tangd"
	_, err := os.Stat(tangd)
	Require(t, err == nil, "tang (tangd) is not installed")
	sa := RequireCmd(t, "systemd-socket-activate")
	if keygen {
		out, err := exec.Command("/usr/libexec/tangd-keygen", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("tangd-keygen: %v\n%s", err, out)
		}
	}
	addr := FreePort(t)
	cmd := exec.Command(sa, "--inetd", "-a", "-l", addr, tangd, dir)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(stop)
	url := "http://" + addr
	WaitHTTP(t, url+"/adv")
	return &Tangd{URL: url, KeyDir: dir, stop: stop}
}

// Server is a tether server process.
type Server struct {
	URL  string
	Data string
	Cmd  *exec.Cmd
	Logs *SyncBuffer
}

// StartServer runs "tether server" on a free loopback port with a fresh
// data directory (or data, if not empty) and extra arguments.
func StartServer(t testing.TB, data string, extra ...string) *Server {
	t.Helper()
	return StartServerWith(t, ServerOptions{Data: data, Args: extra})
}

// ServerOptions are how StartServerWith starts a server.
type ServerOptions struct {
	Data string   // data directory; a fresh one if empty
	Args []string // more arguments of "tether server"
	// NoFile, if not 0, is the server's RLIMIT_NOFILE, soft and hard: the
	// server sizes its connection caps from it, so a test of the caps
	// sets it rather than take the machine's. Above the test's own hard
	// limit it needs CAP_SYS_RESOURCE (see CanSetFileLimit).
	NoFile uint64
}

// StartServerWith runs "tether server" on a free loopback port as o says.
func StartServerWith(t testing.TB, o ServerOptions) *Server {
	t.Helper()
	data := o.Data
	if data == "" {
		data = t.TempDir()
	}
	addr := FreePort(t)
	args := append([]string{"server", "--listen", addr, "--data", data}, o.Args...)
	cmd := exec.Command(TetherBin(t), args...)
	if o.NoFile != 0 {
		// The test binary itself is the wrapper (see Main): it sets the
		// limit and execs the server, which keeps its process ID, so
		// killing cmd kills the server.
		cmd = exec.Command(os.Args[0], append([]string{TetherBin(t)}, args...)...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", noFileEnv, o.NoFile))
	}
	logs := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("tether server log:\n%s", logs.String())
		}
	})
	s := &Server{URL: "http://" + addr, Data: data, Cmd: cmd, Logs: logs}
	for _, a := range o.Args {
		if a == "--tls-cert" {
			s.URL = "https://" + addr
		}
	}
	if !strings.HasPrefix(s.URL, "https") {
		WaitHTTP(t, s.URL+"/healthz")
	} else {
		WaitTCP(t, addr)
	}
	return s
}

// CanSetFileLimit reports whether ServerOptions.NoFile may be n: at most
// the test's hard limit, or above it with CAP_SYS_RESOURCE (which root in
// a container may lack). It asks the wrapper itself, run on this test
// binary with no tests.
func CanSetFileLimit(t testing.TB, n uint64) bool {
	t.Helper()
	if !inMain {
		t.Fatal("testenv.CanSetFileLimit: run the package's tests through testenv.Main, which is the wrapper that sets the limit")
	}
	cmd := exec.Command(os.Args[0], os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", noFileEnv, n))
	return cmd.Run() == nil
}

// noFileEnv asks a test binary run through Main to be the wrapper of
// ServerOptions.NoFile instead of running tests.
const noFileEnv = "TETHER_TESTENV_NOFILE"

// execWithFileLimit sets RLIMIT_NOFILE, soft and hard, to n and executes
// os.Args[1:] in place of the test binary.
func execWithFileLimit(n string) {
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "testenv: run %v with RLIMIT_NOFILE %s: %v\n", os.Args[1:], n, err)
		os.Exit(2)
	}
	limit, err := strconv.ParseUint(n, 10, 64)
	if err != nil || len(os.Args) < 2 {
		fail(fmt.Errorf("bad wrapper invocation (%v)", err))
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		fail(err)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, noFileEnv+"=") })
	fail(syscall.Exec(os.Args[1], os.Args[1:], env))
}

// WaitHTTP waits until url answers 200, for at most 10 seconds.
func WaitHTTP(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not come up within 10s", url)
}

// WaitTCP waits until addr accepts connections, for at most 10 seconds.
func WaitTCP(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not accept connections within 10s", addr)
}

// Blackhole listens on loopback and accepts connections but never answers
// them: a server that is up but silent. It returns the URL.
func Blackhole(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "http://" + l.Addr().String()
}

// Proxy forwards loopback TCP connections to a server, and counts them.
// After Silence it accepts connections and never answers: a server that
// has hung.
type Proxy struct {
	URL  string // http://ADDR
	Addr string

	mu       sync.Mutex
	silent   bool
	accepted int
	conns    []net.Conn
}

// StartProxy starts a Proxy to target ("host:port"), stopped when the test
// ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{URL: "http://" + l.Addr().String(), Addr: l.Addr().String()}
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.accepted++
			p.conns = append(p.conns, c)
			silent := p.silent
			p.mu.Unlock()
			if !silent {
				go p.forward(c, target)
			}
		}
	}()
	return p
}

// forward copies c to and from a new connection to target.
func (p *Proxy) forward(c net.Conn, target string) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	p.mu.Lock()
	p.conns = append(p.conns, u)
	p.mu.Unlock()
	go func() {
		io.Copy(u, c)
		u.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(c, u)
}

// Silence makes the proxy answer no new connection.
func (p *Proxy) Silence() {
	p.mu.Lock()
	p.silent = true
	p.mu.Unlock()
}

// Resume makes a silenced proxy forward new connections again: the
// server is back.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.silent = false
	p.mu.Unlock()
}

// Accepted returns how many connections the proxy has accepted. A client's
// connection is accepted before the client can have its answer, so the
// count is exact once the client has finished.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// ClosedPort returns a URL on a loopback port where nothing listens. The
// port stays bound (but not listening) until the test ends, so that no
// other listener of a parallel test (a Blackhole, a server) can take it and
// turn "connection refused" into something else.
func ClosedPort(t testing.TB) string {
	t.Helper()
	_, addr := boundSocket(t)
	return "http://" + addr
}

// HostDown returns a URL on loopback where a connect never completes, as
// for a machine that is powered off: a listener whose accept queue (of
// one) is full, so that the kernel drops every further SYN.
func HostDown(t testing.TB) string {
	t.Helper()
	fd, addr := boundSocket(t)
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	filler, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("HostDown: the kernel accepted a connection over a full queue")
	}
	return "http://" + addr
}

// boundSocket returns a TCP socket bound to a free loopback port, closed
// when the test ends, and its address.
func boundSocket(t testing.TB) (fd int, addr string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// Run runs a command with stdin and returns stdout, stderr and the exit
// code. It fails the test only if the command could not be started.
func Run(t testing.TB, stdin []byte, name string, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return o.Bytes(), e.Bytes(), ee.ExitCode()
		}
		t.Fatalf("run %s: %v", name, err)
	}
	return o.Bytes(), e.Bytes(), 0
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes, for logs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
