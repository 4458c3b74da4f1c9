package p521

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuLoop runs f under b.Loop and reports the thread CPU time per
// iteration, which is steadier than wall time on a shared machine.
func cpuLoop(b *testing.B, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n := 0
	c0 := threadCPU()
	for b.Loop() {
		f()
		n++
	}
	b.ReportMetric(float64(threadCPU()-c0)/float64(n), "cpu-ns/op")
}
