// Package audit defines tether's audit record and its hash chain: every
// policy decision and every administrative change becomes one record, and
// each record carries the SHA-256 of the one before it, so that editing,
// deleting or reordering any stored record is detected by Verify.
//
// The package is pure: the store persists records (and serialises appends
// so that the chain stays linear across server replicas); this package
// says what a record is, how it is hashed, and how a chain is checked.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Decisions.
const (
	Allow = "allow" // the request was served
	Deny  = "deny"  // the request was refused (Reason says why)
	Wait  = "wait"  // the request waits for an administrator
	OK    = "ok"    // an administrative change or bookkeeping event
)

// Genesis is the prev of the first record.
var Genesis = strings.Repeat("0", 64)

// Record is one audit entry.
type Record struct {
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Device   string    `json:"device,omitempty"`
	Action   string    `json:"action"` // enroll, unlock, heartbeat, key, device.revoke, lockdown, ...
	Source   string    `json:"source,omitempty"`
	Decision string    `json:"decision"`
	Reason   string    `json:"reason,omitempty"`
	Actor    string    `json:"actor,omitempty"` // "admin" for administrative changes
	Prev     string    `json:"prev"`            // Hash of the previous record, Genesis for the first
}

// canonical is the hashed form: fixed field order, time as UTC nanoseconds
// so that a round trip through any database gives the same bytes.
type canonical struct {
	Seq      int64  `json:"seq"`
	Time     int64  `json:"time"`
	Device   string `json:"device"`
	Action   string `json:"action"`
	Source   string `json:"source"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Actor    string `json:"actor"`
	Prev     string `json:"prev"`
}

// Hash returns the hex SHA-256 of the record's canonical JSON.
func (r *Record) Hash() string {
	b, _ := json.Marshal(canonical{r.Seq, r.Time.UnixNano(), r.Device, r.Action, r.Source, r.Decision, r.Reason, r.Actor, r.Prev})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Chain checks records in order. Feed it every record from the first (or
// from a known good point: start with that record's Seq and Hash).
type Chain struct {
	Seq  int64  // seq of the last record checked (0 before the first)
	Head string // hash of the last record checked (Genesis before the first)
}

// NewChain starts a check at the beginning of the log.
func NewChain() *Chain { return &Chain{Head: Genesis} }

// Next checks that r follows the records seen so far.
func (c *Chain) Next(r *Record) error {
	if r.Seq != c.Seq+1 {
		return fmt.Errorf("audit record %d follows record %d: records are missing or reordered", r.Seq, c.Seq)
	}
	if r.Prev != c.Head {
		return fmt.Errorf("audit record %d does not chain to record %d: one of them was altered", r.Seq, c.Seq)
	}
	c.Seq, c.Head = r.Seq, r.Hash()
	return nil
}
