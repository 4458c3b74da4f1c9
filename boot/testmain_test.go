package boot_test

import (
	"os"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestMain removes the binaries testenv.TetherBin builds, once the tests are
// done. Started with TETHER_TEST_ASKPASS set, the test binary is instead an
// askpass stand-in (see passfifo_test.go).
func TestMain(m *testing.M) {
	if fifo := os.Getenv("TETHER_TEST_ASKPASS"); fifo != "" {
		os.Exit(askpassHelper(fifo))
	}
	testenv.Main(m)
}
