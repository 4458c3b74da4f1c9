package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDecideOrder(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	yes := true
	base := func() Input {
		return Input{
			Device: &Device{ID: "d", State: Enabled, LastSeen: now.Add(-time.Minute)},
			Source: netip.MustParseAddr("10.1.2.3"), Now: now,
		}
	}
	cases := []struct {
		name   string
		mod    func(*Input)
		want   Outcome
		reason string
	}{
		{"plain", func(*Input) {}, Allow, ""},
		{"lockdown beats everything", func(in *Input) { in.Lockdown = true; in.Device.State = Revoked }, Deny, "lockdown"},
		{"revoked", func(in *Input) { in.Device.State = Revoked }, Deny, "revoked"},
		{"pending", func(in *Input) { in.Device.State = Pending }, Deny, "pending"},
		{"disabled", func(in *Input) { in.Device.State = Disabled; in.Device.Reason = "lost" }, Deny, "disabled (lost)"},
		{"keep-alive expired", func(in *Input) { in.Policy.KeepAlive = Duration(30 * time.Second) }, Deny, "keep-alive"},
		{"keep-alive fresh", func(in *Input) { in.Policy.KeepAlive = Duration(5 * time.Minute) }, Allow, ""},
		{"cidr out", func(in *Input) { in.Policy.CIDRs = []string{"192.168.0.0/16"} }, Deny, "not in the allowed networks"},
		{"cidr in", func(in *Input) { in.Policy.CIDRs = []string{"192.168.0.0/16", "10.0.0.0/8"} }, Allow, ""},
		{"cidr before approval", func(in *Input) { in.Policy.CIDRs = []string{"192.168.0.0/16"}; in.Policy.Approval = &yes }, Deny, "networks"},
		{"approval", func(in *Input) { in.Policy.Approval = &yes }, Wait, "approval"},
	}
	for _, c := range cases {
		in := base()
		c.mod(&in)
		d := Decide(in)
		if d.Outcome != c.want || !strings.Contains(d.Reason, c.reason) {
			t.Errorf("%s: got %v %q, want %v %q", c.name, d.Outcome, d.Reason, c.want, c.reason)
		}
	}
}

func TestRateLimit(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	l := &Limiter{}
	in := Input{Device: &Device{ID: "d", State: Enabled}, Now: now, Limiter: l, Policy: Policy{Rate: 3}}
	for i := 0; i < 3; i++ {
		if d := Decide(in); d.Outcome != Allow {
			t.Fatalf("unlock %d: %v %s", i, d.Outcome, d.Reason)
		}
	}
	if d := Decide(in); d.Outcome != Deny || !strings.Contains(d.Reason, "rate limit") {
		t.Fatalf("4th unlock in a minute: %v %s", d.Outcome, d.Reason)
	}
	// Another device has its own bucket.
	other := in
	other.Device = &Device{ID: "e", State: Enabled}
	if d := Decide(other); d.Outcome != Allow {
		t.Fatal("rate limit leaked across devices")
	}
	in.Now = now.Add(20 * time.Second) // one token back
	if d := Decide(in); d.Outcome != Allow {
		t.Fatalf("after refill: %v %s", d.Outcome, d.Reason)
	}
	if d := Decide(in); d.Outcome != Deny {
		t.Fatal("bucket refilled more than one token in 20s at 3/min")
	}
}

func TestEffective(t *testing.T) {
	yes, no := true, false
	g := Policy{CIDRs: []string{"10.0.0.0/8"}, KeepAlive: Duration(time.Minute), Approval: &yes, Rate: 5}
	p := Effective(g, Policy{Approval: &no, KeepAlive: -1})
	if *p.Approval || p.KeepAlive != 0 || p.Rate != 5 || p.CIDRs[0] != "10.0.0.0/8" {
		t.Fatalf("%+v", p)
	}
	if Validate(Policy{CIDRs: []string{"10.0.0.0/33"}}) == nil {
		t.Fatal("bad CIDR accepted")
	}
}
