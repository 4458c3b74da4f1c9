package policy

import (
	"encoding/json"
	"fmt"
	"time"
)

// State is a device's life-cycle state.
type State string

const (
	Pending  State = "pending"  // enrolled without a token; waits for an admin
	Enabled  State = "enabled"  // may unlock, subject to policy
	Disabled State = "disabled" // refused until an admin enables it again
	Revoked  State = "revoked"  // exchange key destroyed; final
)

// Duration is a time.Duration that marshals as "5m0s".
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration: %v", err)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Policy is what a device or group allows. Zero fields inherit: a device's
// policy overrides its group's field by field (see Effective).
type Policy struct {
	CIDRs     []string `json:"cidrs,omitempty"`     // allowed source networks; empty = any
	KeepAlive Duration `json:"keepalive,omitempty"` // heartbeat timeout; 0 = keep-alive off
	Approval  *bool    `json:"approval,omitempty"`  // every unlock waits for an admin
	Rate      int      `json:"rate,omitempty"`      // unlocks per minute; 0 = server default
	// PCRQuorum: new PCR values a device asks the server to sign are
	// approved without an administrator once this many devices of its
	// group have reported them; 0 = an administrator decides.
	PCRQuorum int `json:"pcr_quorum,omitempty"`
}

// Device is one enrolled machine.
type Device struct {
	ID        string
	Name      string
	Group     string
	KeyID     string // hex SHA-256 of the identity public key (SPKI DER)
	PublicKey []byte // identity public key, SPKI DER
	State     State
	Reason    string // why the device is in its state (e.g. "keep-alive timeout")
	// ExchangeKey is the device's private exchange key S_D wrapped under the
	// KEK. Revocation sets it to nil: that is what makes revocation final.
	ExchangeKey []byte
	ExchangePub string // public JWK of s_D = S_D·G, JSON
	Policy      Policy
	Created     time.Time
	Updated     time.Time
	LastSeen    time.Time // last authenticated request or heartbeat
	Version     int64     // compare-and-swap counter
}

// Validate checks a device record's invariants before it is written.
func (d *Device) Validate() error {
	switch d.State {
	case Pending, Enabled, Disabled:
		if d.ExchangeKey == nil {
			return fmt.Errorf("device %s: %s without an exchange key", d.ID, d.State)
		}
	case Revoked:
		if d.ExchangeKey != nil {
			return fmt.Errorf("device %s: revoked but still holds its exchange key", d.ID)
		}
	default:
		return fmt.Errorf("device %s: unknown state %q", d.ID, d.State)
	}
	return nil
}
