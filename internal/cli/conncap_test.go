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
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestHoldConnections is not a test: run with TETHER_HOLD_ADDR it is the
// helper process of TestIdleTangConnectionsSpareManaged, which needs more
// connections than one process may hold (RLIMIT_NOFILE here is 20,000,
// hard). It opens TETHER_HOLD_N idle connections to TETHER_HOLD_ADDR from
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

// TestIdleTangConnectionsSpareManaged: 20,300 idle connections to the
// Tang port of a server whose descriptor limit is 20,000 (this machine's
// hard limit). The Tang listener stops at its cap, logs it and counts it;
// the managed API keeps answering the enrolled device's unlocks.
func TestIdleTangConnectionsSpareManaged(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 20,300 connections")
	}
	f := startManagedFixture(t)
	tangAddr := strings.TrimPrefix(f.srv.URL, "http://")
	type holder struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
	}
	var holders []holder
	total := 0
	for i, from := range []string{"127.0.0.2", "127.0.0.3"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHoldConnections$")
		cmd.Env = append(os.Environ(), "TETHER_HOLD_ADDR="+tangAddr, "TETHER_HOLD_FROM="+from,
			"TETHER_HOLD_N="+strconv.Itoa(10150))
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
	t.Logf("%d idle connections opened to the Tang port", total)
	if total < 20000 {
		t.Fatalf("only %d connections could be opened", total)
	}
	// Every unlock of the enrolled device goes through, and the admin API
	// answers.
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, testenv.TetherBin(t), "decrypt")
		cmd.Env = append(os.Environ(), f.devEnv...)
		cmd.Stdin = strings.NewReader(f.jwe)
		start := time.Now()
		out, err := cmd.Output()
		cancel()
		if err != nil || string(out) != "disk key" {
			t.Fatalf("unlock %d with %d idle Tang connections: %v %q", i+1, total, err, out)
		}
		t.Logf("unlock %d: %v", i+1, time.Since(start).Round(time.Millisecond))
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
	var body []byte
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get(f.srv.URL + "/metrics")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Tang port does not answer after the idle connections closed: %v", err)
		}
	}
	m := regexp.MustCompile(`tether_connections_refused_total\{listener="tang"\} (\d+)`).FindSubmatch(body)
	max := regexp.MustCompile(`tether_connections_max\{listener="tang"\} (\d+)`).FindSubmatch(body)
	if m == nil || max == nil || string(m[1]) == "0" {
		t.Fatalf("metrics lack refused Tang connections:\n%s", body)
	}
	t.Logf("Tang cap %s connections; %s refused", max[1], m[1])
}
