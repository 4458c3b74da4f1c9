// Package policy decides whether a managed device may unlock now. Decide
// is one pure function of the device, its group's policy, the server-wide
// settings, the request's source address and the time; the server records
// every answer in the audit log. The order of the checks is part of the
// contract (docs/MANAGED.md): the first one that refuses gives the reason.
//
// The domain types the decisions look at (Device, its State, Policy) live
// here too, and the store persists them: policy imports nothing of the
// module, so the decisions build and test without a database.
package policy

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Outcome of a decision.
type Outcome int

const (
	Allow Outcome = iota
	Deny
	Wait // allowed once an administrator approves
)

func (o Outcome) String() string {
	return [...]string{"allow", "deny", "wait"}[o]
}

// Decision is an outcome with the reason for it.
type Decision struct {
	Outcome Outcome
	Reason  string
	// Quiet is set when the device missed its keep-alive: the server
	// disables it (and tells the webhooks) before answering.
	Quiet bool
	// Gone is set when the device can never unlock again (revoked).
	Gone bool
}

// Effective merges a group policy and a device policy: each field set on
// the device overrides the group's.
func Effective(group, device Policy) Policy {
	p := group
	if len(device.CIDRs) > 0 {
		p.CIDRs = device.CIDRs
	}
	if device.KeepAlive != 0 {
		p.KeepAlive = device.KeepAlive
	}
	if device.Approval != nil {
		p.Approval = device.Approval
	}
	if device.Rate != 0 {
		p.Rate = device.Rate
	}
	if device.PCRQuorum != 0 {
		p.PCRQuorum = device.PCRQuorum
	}
	if p.KeepAlive < 0 { // an explicit negative turns a group's keep-alive off
		p.KeepAlive = 0
	}
	return p
}

// Validate checks a policy an administrator sets.
func Validate(p Policy) error {
	for _, c := range p.CIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("policy: cidrs: %v", err)
		}
	}
	if p.Rate < 0 {
		return fmt.Errorf("policy: rate must not be negative")
	}
	if p.PCRQuorum < 0 {
		return fmt.Errorf("policy: pcr_quorum must not be negative")
	}
	return nil
}

// Input is what a decision looks at.
type Input struct {
	Device   *Device
	Policy   Policy // Effective(group, device)
	Lockdown bool
	Source   netip.Addr
	Now      time.Time
	// Limiter, if set, enforces the rate limit (it is the only stateful
	// check: a token is taken only when every earlier check passed).
	Limiter     *Limiter
	DefaultRate int // unlocks per minute when the policy sets none; 0 = unlimited
}

// Decide applies the checks in order: lockdown, device state, keep-alive,
// source network, rate limit, approval.
func Decide(in Input) Decision {
	d := in.Device
	if in.Lockdown {
		return Decision{Outcome: Deny, Reason: "server is in lockdown"}
	}
	switch d.State {
	case Revoked:
		return Decision{Outcome: Deny, Reason: "device is revoked", Gone: true}
	case Pending:
		return Decision{Outcome: Deny, Reason: "device enrolment is pending approval"}
	case Disabled:
		r := "device is disabled"
		if d.Reason != "" {
			r += " (" + d.Reason + ")"
		}
		return Decision{Outcome: Deny, Reason: r}
	case Enabled:
	default:
		return Decision{Outcome: Deny, Reason: "device state is unknown"}
	}
	if ka := time.Duration(in.Policy.KeepAlive); ka > 0 && in.Now.Sub(d.LastSeen) > ka {
		return Decision{Outcome: Deny, Reason: fmt.Sprintf("keep-alive timeout: not heard from since %s", d.LastSeen.Format(time.RFC3339)), Quiet: true}
	}
	if len(in.Policy.CIDRs) > 0 {
		ok := false
		for _, c := range in.Policy.CIDRs {
			if p, err := netip.ParsePrefix(c); err == nil && p.Contains(in.Source.Unmap()) {
				ok = true
				break
			}
		}
		if !ok {
			return Decision{Outcome: Deny, Reason: fmt.Sprintf("source %s is not in the allowed networks", in.Source)}
		}
	}
	rate := in.Policy.Rate
	if rate == 0 {
		rate = in.DefaultRate
	}
	if rate > 0 && in.Limiter != nil && !in.Limiter.Take(d.ID, rate, in.Now) {
		return Decision{Outcome: Deny, Reason: fmt.Sprintf("rate limit: more than %d unlocks per minute", rate)}
	}
	if in.Policy.Approval != nil && *in.Policy.Approval {
		return Decision{Outcome: Wait, Reason: "unlock requires approval"}
	}
	return Decision{Outcome: Allow}
}

// Limiter is a token bucket per device: a burst of `rate`, refilled at
// `rate` per minute. It lives in one server's memory: with several
// replicas each enforces its own share (documented in docs/MANAGED.md).
type Limiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// Take takes one token for key and reports whether there was one.
func (l *Limiter) Take(key string, rate int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[string]*bucket{}
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: float64(rate), last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(rate), b.tokens+el.Minutes()*float64(rate))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
