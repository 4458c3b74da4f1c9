package dashboard

import (
	"fmt"
	"testing"
	"time"
)

// fail makes one checked, failed attempt if the limiter allows it.
func (l *loginLimiter) tryFail(user, addr string, now time.Time) bool {
	ok, _ := l.reserve(user, addr, now)
	if ok {
		l.done(user, addr, false, now)
	}
	return ok
}

// TestLoginLimiterNeverForgetsABrake: a table full of senders never
// drops an entry that still brakes; newcomers are refused instead until
// entries recover, and refused requests add nothing to the table.
func TestLoginLimiterNeverForgetsABrake(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	l := &loginLimiter{max: 1000}
	for l.tryFail("alice", "192.0.2.1", now) {
	}
	braked := func() bool { ok, _ := l.reserve("alice", "192.0.2.1", now); return !ok }
	if !braked() {
		t.Fatal("alice from 192.0.2.1 is not braked after her failures")
	}
	refused := 0
	for i := 0; i < 5000; i++ {
		addr := fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
		if !l.tryFail(fmt.Sprintf("name%d", i), addr, now) {
			refused++
		}
		if len(l.buckets) > 1000 {
			t.Fatalf("table grew to %d entries, limit 1000", len(l.buckets))
		}
		if !braked() {
			t.Fatalf("after %d senders the brake on alice is forgotten", i+1)
		}
	}
	if refused == 0 {
		t.Fatal("a full table accepted every newcomer")
	}
	// Once entries recover they make room again; the brake on alice was
	// kept as long as it braked.
	now = now.Add(time.Hour)
	if !l.tryFail("bob", "10.200.0.1", now) {
		t.Fatal("newcomers are still refused after every entry recovered")
	}
	// Requests that the address limit refuses leave nothing behind: one
	// address spraying 150,000 names cannot fill the table.
	l = &loginLimiter{}
	for i := 0; i < 150000; i++ {
		l.tryFail(fmt.Sprintf("n%d", i), "198.51.100.7", now)
	}
	if len(l.buckets) > 100 {
		t.Fatalf("150,000 refused sign-ins from one address left %d entries", len(l.buckets))
	}
}

func TestLoginLimiterIPv6Prefix(t *testing.T) {
	now := time.Now()
	l := &loginLimiter{}
	n := 0
	for i := 0; i < 100 && l.tryFail(fmt.Sprintf("u%d", i), fmt.Sprintf("2001:db8::%x", i+1), now); i++ {
		n++
	}
	if n != 20 {
		t.Fatalf("one /64 got %d checks, want the address limit of 20", n)
	}
}
