//go:build amd64 && !purego

package p521

import (
	"testing"

	"golang.org/x/sys/cpu"
)

// TestDetectBMI2 checks the package's own CPUID probe against
// golang.org/x/sys/cpu, which the package no longer imports.
func TestDetectBMI2(t *testing.T) {
	if got, want := detectBMI2(), cpu.X86.HasBMI2; got != want {
		t.Fatalf("detectBMI2() = %v, golang.org/x/sys/cpu says %v", got, want)
	}
	t.Logf("BMI2: %v", hasMULX)
}
