package connlimit

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestConnBudget(t *testing.T) {
	for _, c := range []struct {
		limit        uint64
		managed      bool
		tang, managd int64
	}{
		{20000, true, 17276, 2468},
		{20000, false, 19744, 0},
		{1024, true, 672, 96},
		{100, true, 64, 64}, // a tiny limit still caps both
	} {
		b := Share(c.limit, c.managed)
		if b.Tang != c.tang || b.Managed != c.managd {
			t.Errorf("Share(%d, %v) = tang %d, managed %d; want %d, %d", c.limit, c.managed, b.Tang, b.Managed, c.tang, c.managd)
		}
		if c.limit > 1000 && uint64(b.Tang+b.Managed) > c.limit-Reserved {
			t.Errorf("Share(%d): the caps take the reserved descriptors", c.limit)
		}
	}
}

// fileLimitChildEnv makes TestFileLimit the child process that lowers its
// own limit and calls FileLimit.
const fileLimitChildEnv = "CONNLIMIT_TEST_FILELIMIT_CHILD"

// TestFileLimit: FileLimit raises the soft RLIMIT_NOFILE to the hard limit
// and reports it, from a soft limit far below and from one already there.
// It changes the limit of the process it runs in, so the checks run in a
// child process (this test binary again): other tests keep their limit.
func TestFileLimit(t *testing.T) {
	if os.Getenv(fileLimitChildEnv) != "" {
		fileLimitChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFileLimit$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), fileLimitChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFileLimit") {
		t.Fatalf("the child process: %v\n%s", err, out)
	}
	t.Logf("the child process:\n%s", out)
}

func fileLimitChild(t *testing.T) {
	rl := get(t)
	if rl.Max < 256 {
		t.Fatalf("the hard limit is %d: too low to check a raise", rl.Max)
	}
	// The machine's hard limit, then a lower one (lowering a hard limit
	// cannot be undone, hence the child process).
	for _, hard := range []uint64{rl.Max, rl.Max / 2} {
		set(t, syscall.Rlimit{Cur: 64, Max: hard})
		got := FileLimit()
		t.Logf("soft 64, hard %d: FileLimit() = %d", hard, got)
		if got != hard {
			t.Errorf("soft 64, hard %d: FileLimit() = %d, want %d", hard, got, hard)
		}
		if now := get(t); now.Cur != hard || now.Max != hard {
			t.Errorf("soft 64, hard %d: after FileLimit the limit is soft %d, hard %d; want both %d", hard, now.Cur, now.Max, hard)
		}
		if got := FileLimit(); got != hard {
			t.Errorf("soft and hard %d: FileLimit() = %d, want %d", hard, got, hard)
		}
	}
}

func get(t *testing.T) syscall.Rlimit {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	return rl
}

func set(t *testing.T, rl syscall.Rlimit) {
	t.Helper()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("setrlimit %+v: %v", rl, err)
	}
}
