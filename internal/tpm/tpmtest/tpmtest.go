// Package tpmtest runs a real software TPM (swtpm) for tests: one fresh
// TPM per call, on free loopback ports, stopped when the test ends. A
// missing swtpm skips the test locally and fails it in CI (testenv).
package tpmtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
)

// SWTPM is a running swtpm.
type SWTPM struct {
	// TCTI names it in the syntax of TPM2TOOLS_TCTI and tpm.Open.
	TCTI string
	Port int // server (command) port; the control port is Port+1
	Dir  string
}

// Start starts a fresh swtpm with its state in a temporary directory.
func Start(t testing.TB) *SWTPM {
	t.Helper()
	bin := testenv.RequireCmd(t, "swtpm")
	dir := t.TempDir()
	var lastErr error
	for try := 0; try < 5; try++ {
		port, err := freePortPair()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "socket", "--tpm2",
			"--tpmstate", "dir="+dir,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--flags", "startup-clear")
		var logs testenv.SyncBuffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		s := &SWTPM{TCTI: fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port), Port: port, Dir: dir}
		if err := s.wait(done); err != nil {
			cmd.Process.Kill()
			<-done
			lastErr = fmt.Errorf("%v\n%s", err, logs.String())
			continue // most likely a port race: try other ports
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
		})
		return s
	}
	t.Fatalf("swtpm did not start: %v", lastErr)
	return nil
}

// wait waits until the TPM answers a command.
func (s *SWTPM) wait(exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("swtpm exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		tp, err := tpm.Open(ctx, s.TCTI)
		cancel()
		if err == nil {
			_, err = tp.ReadPCRs("sha256", []int{0})
			tp.Close()
			if err == nil {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("swtpm did not answer within 10s")
}

// Open opens the swtpm; the connection is closed when the test ends. swtpm
// serves one connection at a time: close it (Close) before another
// program (tpm2-tools, the tether binary) uses the TPM.
func (s *SWTPM) Open(t testing.TB) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(context.Background(), s.TCTI)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// Command returns a command (tpm2-tools, clevis, tether) pointed at this
// TPM by TPM2TOOLS_TCTI.
func (s *SWTPM) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), tpm.EnvTools+"="+s.TCTI, tpm.EnvTCTI+"=")
	return cmd
}

// Extend extends a PCR of bank with some data, on a connection of its own.
func (s *SWTPM) Extend(t testing.TB, bank string, pcr int) {
	t.Helper()
	tp, err := tpm.Open(context.Background(), s.TCTI)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if err := tp.ExtendPCR(bank, pcr, []byte("tpmtest "+strconv.Itoa(pcr))); err != nil {
		t.Fatal(err)
	}
}

// freePortPair finds a port P such that P and P+1 are free on loopback.
func freePortPair() (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free pair of loopback ports")
}
