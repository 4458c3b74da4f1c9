package cli_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/server/connlimit"
)

// TestHoldConnections is not a test: run with TETHER_HOLD_ADDR it is the
// helper process of TestIdleTangConnectionsSpareManaged, which needs more
// connections than it is sure one process may hold. It opens
// TETHER_HOLD_N idle connections to TETHER_HOLD_ADDR from
// TETHER_HOLD_FROM, prints how many it holds, and keeps them until stdin
// closes.
func TestHoldConnections(t *testing.T) {
	addr := os.Getenv("TETHER_HOLD_ADDR")
	if addr == "" {
		t.Skip("helper process only")
	}
	n, _ := strconv.Atoi(os.Getenv("TETHER_HOLD_N"))
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(os.Getenv("TETHER_HOLD_FROM"))}, Timeout: 5 * time.Second}
	var held []net.Conn
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			fmt.Printf("dial %d: %v\n", i, err)
			break
		}
		held = append(held, c)
	}
	fmt.Printf("held %d\n", len(held))
	io.Copy(io.Discard, os.Stdin)
	for _, c := range held {
		c.Close()
	}
}

// serverNoFile is the descriptor limit TestIdleTangConnectionsSpareManaged
// gives the server, whatever the machine's: the caps are sized from it, so
// with the machine's limit (often 1,048,576) nothing would be refused.
const serverNoFile = 20000

// TestIdleTangConnectionsSpareManaged: 20,300 idle connections to the
// Tang port of a server whose descriptor limit is 20,000 (set for the
// server alone, soft and hard). The Tang listener stops at its cap, logs
// it and counts it; the managed API keeps answering each of three
// enrolled devices' unlocks while the connections are held.
func TestIdleTangConnectionsSpareManaged(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 20,300 connections")
	}
	testenv.Require(t, testenv.CanSetFileLimit(t, serverNoFile),
		fmt.Sprintf("the server's RLIMIT_NOFILE cannot be set to %d: the test's hard limit is lower and it lacks CAP_SYS_RESOURCE", serverNoFile))
	// The connections are held by helper processes (this test binary),
	// as many as the test's own limit allows each, from one loopback
	// address each (a source address has some 28,000 ephemeral ports).
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	testenv.Require(t, rl.Max >= 1024, fmt.Sprintf("the hard RLIMIT_NOFILE is %d: too few for the helpers that hold the connections", rl.Max))
	const conns = 20300
	perHolder := int(min(10150, rl.Max-64))
	f := &managedFixture{data: t.TempDir(), addr: testenv.FreePort(t)}
	f.srv = testenv.StartServerWith(t, testenv.ServerOptions{
		Data:   f.data,
		Args:   []string{"--managed-listen", f.addr, "--curve", "P-256"},
		NoFile: serverNoFile,
	})
	f.adminEnv = []string{"TETHER_ADMIN_CONFIG=" + filepath.Join(f.data, "admin.json")}
	type device struct {
		env []string
		jwe string
	}
	var devices []device
	for range 3 {
		env, jwe := f.enrol(t)
		devices = append(devices, device{env, jwe})
	}
	want := connlimit.Share(serverNoFile, true)
	if max, _ := tangConnMetrics(t, f.srv.URL); max != want.Tang {
		t.Fatalf("the Tang cap is %d, want %d: the server does not run with RLIMIT_NOFILE %d", max, want.Tang, serverNoFile)
	}
	t.Logf("server RLIMIT_NOFILE %d: Tang cap %d, managed cap %d", serverNoFile, want.Tang, want.Managed)

	tangAddr := strings.TrimPrefix(f.srv.URL, "http://")
	type holder struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
	}
	var holders []holder
	total := 0
	opening := time.Now()
	for i := 0; i*perHolder < conns; i++ {
		from := fmt.Sprintf("127.0.0.%d", 2+i)
		cmd := exec.Command(os.Args[0], "-test.run=^TestHoldConnections$")
		cmd.Env = append(os.Environ(), "TETHER_HOLD_ADDR="+tangAddr, "TETHER_HOLD_FROM="+from,
			"TETHER_HOLD_N="+strconv.Itoa(min(perHolder, conns-i*perHolder)))
		stdin, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, holder{cmd, stdin})
		t.Cleanup(func() { stdin.Close(); cmd.Wait() })
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "held "); ok {
				k, _ := strconv.Atoi(n)
				total += k
				break
			}
			t.Logf("holder %d: %s", i, sc.Text())
		}
		go io.Copy(io.Discard, out)
	}
	t.Logf("%d idle connections opened to the Tang port by %d helpers in %v", total, len(holders), time.Since(opening).Round(time.Millisecond))
	if total < 20000 {
		t.Fatalf("only %d connections could be opened", total)
	}
	// Every enrolled device's unlocks go through, and the admin API
	// answers.
	for round := 1; round <= 3; round++ {
		for d, dev := range devices {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, testenv.TetherBin(t), "decrypt")
			cmd.Env = append(os.Environ(), dev.env...)
			cmd.Stdin = strings.NewReader(dev.jwe)
			start := time.Now()
			out, err := cmd.Output()
			cancel()
			if err != nil || string(out) != "disk key" {
				t.Fatalf("device %d, unlock %d with %d idle Tang connections: %v %q", d+1, round, total, err, out)
			}
			t.Logf("device %d, unlock %d: %v", d+1, round, time.Since(start).Round(time.Millisecond))
		}
	}
	mustTether(t, f.adminEnv, "", "admin", "device", "list")
	if !strings.Contains(f.srv.Logs.String(), "listener=tang") || !strings.Contains(f.srv.Logs.String(), "at its cap") {
		t.Fatalf("no log line for refused Tang connections:\n%.2000s", f.srv.Logs.String())
	}
	for _, h := range holders {
		h.stdin.Close()
		h.cmd.Wait()
	}
	// The metric, once the Tang port answers again.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get(f.srv.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Tang port does not answer after the idle connections closed: %v", err)
		}
	}
	max, refused := tangConnMetrics(t, f.srv.URL)
	if refused == 0 {
		t.Fatalf("no refused Tang connections counted")
	}
	t.Logf("Tang cap %d connections; %d refused", max, refused)
}

// tangConnMetrics reads the Tang listener's cap and refused connections
// from the server's /metrics.
func tangConnMetrics(t *testing.T, url string) (max, refused int64) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) int64 {
		m := regexp.MustCompile(name + `\{listener="tang"\} (\d+)`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("no %s in the metrics:\n%s", name, body)
		}
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return n
	}
	return get("tether_connections_max"), get("tether_connections_refused_total")
}

// TestServerFileLimit: testenv.ServerOptions.NoFile sets the server's
// descriptor limit, which the caps are sized from, below or above the
// test's own (the cheap check of what TestIdleTangConnectionsSpareManaged
// relies on).
func TestServerFileLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	limits := []uint64{4096}
	if above := rl.Max + 1000; testenv.CanSetFileLimit(t, above) {
		limits = append(limits, above)
	} else {
		t.Logf("RLIMIT_NOFILE %d, above the test's hard limit, is not allowed here: checked %d only", above, limits[0])
	}
	for _, n := range limits {
		srv := testenv.StartServerWith(t, testenv.ServerOptions{
			Args:   []string{"--managed-listen", testenv.FreePort(t), "--curve", "P-256"},
			NoFile: n,
		})
		want := connlimit.Share(n, true).Tang
		if max, _ := tangConnMetrics(t, srv.URL); max != want {
			t.Errorf("server started with RLIMIT_NOFILE %d: Tang cap %d, want %d", n, max, want)
		}
		limits := fmt.Sprintf("/proc/%d/limits", srv.Cmd.Process.Pid)
		b, err := os.ReadFile(limits)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`Max open files\s+(\d+)\s+(\d+)`)
		if m := re.FindSubmatch(b); m == nil || string(m[1]) != fmt.Sprint(n) || string(m[2]) != fmt.Sprint(n) {
			t.Errorf("%s: %q, want soft and hard %d", limits, m, n)
		}
	}
}
