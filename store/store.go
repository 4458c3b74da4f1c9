// Package store persists the managed-mode state of a key server: enrolled
// devices and their wrapped exchange keys, groups, enrollment tokens,
// pending unlock approvals, the audit log and server settings. The devices
// and policies are package policy's types: the store persists what policy
// decides on, and policy knows nothing of the store.
//
// Store is the interface; SQLite (the default, one file in the data
// directory) and PostgreSQL (several replicas sharing one database)
// implement it with the same SQL. Every state change of a device is a
// compare-and-swap on its version, and a revoked device can never change
// again, so two replicas cannot undo each other's revocation.
//
// The schema is versioned (store/migrate.go): opening a store upgrades it
// in one transaction, and a store made by a newer build is refused.
//
// The store never sees a secret in the clear: exchange keys arrive wrapped
// under the key-encryption key (package kek's job is the server's), and
// tokens and admin credentials are stored as hashes.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
)

var (
	ErrNotFound = errors.New("not found")
	// ErrConflict means a compare-and-swap lost: the record changed since
	// it was read. Read it again and decide again.
	ErrConflict = errors.New("changed concurrently")
	// ErrRevoked means the device is revoked and can no longer change.
	ErrRevoked = errors.New("device is revoked")
	ErrExists  = errors.New("already exists")
)

// KeepAliveInput is what the keep-alive sweep reads of an enabled device.
type KeepAliveInput struct {
	ID       string
	Group    string
	Policy   policy.Policy // the device's own policy (the group's applies on top)
	LastSeen time.Time
}

// DeviceQuery selects a page of devices.
type DeviceQuery struct {
	// Text matches devices whose name, ID or group contains it, ignoring
	// the case of ASCII letters. Empty matches every device.
	Text          string
	State         policy.State // empty: every state
	Offset, Limit int
}

// DevicePage is one page of devices and the numbers around it.
type DevicePage struct {
	Devices []*policy.Device
	Matched int                  // devices that match the query, on every page
	Counts  map[policy.State]int // every device, by state
}

// Token is an enrollment token, stored by hash.
type Token struct {
	Hash    []byte // SHA-256 of the token's secret
	Group   string
	Note    string
	Created time.Time
	Expires time.Time
}

// Approval is an unlock request waiting for an administrator.
type Approval struct {
	ID       string
	Device   string
	Source   string
	Created  time.Time
	Deadline time.Time
	State    string // "pending", "approved", "denied"
}

// PCRState is one set of PCR values a device asked the server to sign
// (a signed PCR policy with the server as the signer) and what was
// decided about it. A device's states are keyed by (Bank, PCRIDs, Policy).
type PCRState struct {
	Device string `json:"device"`
	Bank   string `json:"bank"`    // "sha256"
	PCRIDs string `json:"pcr_ids"` // "4,11"
	Policy string `json:"policy"`  // hex approved policy digest of the values
	Values string `json:"values"`  // the values as the device reported them, "11=HEX,..."
	// State is "pending" (an administrator decides), "approved" (the
	// server signs it whenever the device asks) or "denied".
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"` // how it was decided
	Created time.Time `json:"created"`
	Decided time.Time `json:"decided,omitzero"` // zero while pending
}

// Store is the persistence the managed server needs.
type Store interface {
	CreateDevice(ctx context.Context, d *policy.Device) error
	Device(ctx context.Context, id string) (*policy.Device, error)
	// DeviceByKey returns the device, not revoked, whose identity key has
	// this KeyID.
	DeviceByKey(ctx context.Context, keyID string) (*policy.Device, error)
	// RevokedByKey returns the revoked devices whose identity key has
	// this KeyID, the most recently changed first (none: empty, no
	// error), so that a refusal can name the device it refuses.
	RevokedByKey(ctx context.Context, keyID string) ([]*policy.Device, error)
	Devices(ctx context.Context) ([]*policy.Device, error)
	// EachDevice calls fn for every device in creation order without
	// holding them all in memory (a fleet may have 100,000). fn must not
	// write to the store; an error from fn stops the iteration.
	EachDevice(ctx context.Context, fn func(*policy.Device) error) error
	// EachKeepAlive calls fn with the keep-alive inputs of every enabled
	// device, in no particular order: a plain scan of only the columns the
	// keep-alive sweep needs, which runs every few seconds over the whole
	// fleet. Devices with the same stored policy share one decoded Policy:
	// fn must not modify it. fn must not write to the store; an error from
	// fn stops the iteration.
	EachKeepAlive(ctx context.Context, fn func(KeepAliveInput) error) error
	// DevicePage returns the devices that match q, in creation order,
	// from q.Offset, at most q.Limit of them; how many match in all; and
	// how many devices there are in each state. The filtering is done by
	// the database: a fleet may have 100,000 devices.
	DevicePage(ctx context.Context, q DeviceQuery) (*DevicePage, error)
	// DeviceStamp returns a value that changes whenever a device is
	// created, changed or heard from (Touch): a cheap way to notice that
	// something in the device list changed without reading every device.
	DeviceStamp(ctx context.Context) (string, error)
	// UpdateDevice writes d if its stored version is still d.Version and
	// the stored device is not revoked, and then increments d.Version.
	// It returns ErrConflict or ErrRevoked otherwise.
	UpdateDevice(ctx context.Context, d *policy.Device) error
	// Touch records that the device was heard from at t (never moves
	// LastSeen backwards; does not change Version). Like AppendAudit it
	// shares its transaction with concurrent writes (group commit) and
	// returns once that has committed, whatever ctx says.
	Touch(ctx context.Context, id string, t time.Time) error

	PutGroup(ctx context.Context, name string, p policy.Policy) error
	Group(ctx context.Context, name string) (policy.Policy, error)
	Groups(ctx context.Context) (map[string]policy.Policy, error)

	CreateToken(ctx context.Context, t *Token) error
	// ConsumeToken deletes and returns the unexpired token with this hash.
	ConsumeToken(ctx context.Context, hash []byte, now time.Time) (*Token, error)

	CreateApproval(ctx context.Context, a *Approval) error
	Approval(ctx context.Context, id string) (*Approval, error)
	PendingApprovals(ctx context.Context, now time.Time) ([]*Approval, error)
	// DecideApproval moves a pending approval to state; ErrConflict if it
	// was already decided.
	DecideApproval(ctx context.Context, id, state string) error
	// UseApproval moves an approved approval to "used": one approval
	// releases one unlock. ErrConflict if it is not (or no longer) approved.
	UseApproval(ctx context.Context, id string) error

	// ReportPCRState stores r unless the device already has a state for
	// its bank, PCRs and policy, and returns what is stored and whether
	// it was created now.
	ReportPCRState(ctx context.Context, r *PCRState) (*PCRState, bool, error)
	// DecidePCRState sets the state (and reason, decided time) of a
	// stored PCR state; ErrNotFound if there is none.
	DecidePCRState(ctx context.Context, r *PCRState) error
	// PCRStates returns the device's PCR states ("" = every device's),
	// those in state only unless state is "", oldest first.
	PCRStates(ctx context.Context, device, state string) ([]*PCRState, error)
	// PCRStateDevices counts the devices of group, not revoked, that have
	// reported this bank, PCRs and policy (whatever was decided).
	PCRStateDevices(ctx context.Context, group, bank, pcrIDs, policy string) (int, error)
	// HasApprovedPCRState says whether the device has any approved state
	// for this bank and PCRs ("" = any bank, any PCRs).
	HasApprovedPCRState(ctx context.Context, device, bank, pcrIDs string) (bool, error)

	// Rekey replaces every device's wrapped exchange key by what rewrap
	// returns for it and sets settings, in one transaction: afterwards
	// either all of it is under the new key-encryption key or nothing
	// changed (tether server kek rotate).
	Rekey(ctx context.Context, rewrap func(deviceID string, wrapped []byte) ([]byte, error), settings map[string]string) error

	// AppendAudit sets r.Seq and r.Prev to extend the chain and stores r,
	// atomically with respect to every other appender (also on other
	// replicas). Appends that arrive together are committed together
	// (store/group.go); it returns once r is committed or has failed,
	// whatever ctx says.
	AppendAudit(ctx context.Context, r *audit.Record) error
	// Audit returns up to limit records with Seq > after, in order.
	Audit(ctx context.Context, after int64, limit int) ([]*audit.Record, error)

	Setting(ctx context.Context, name string) (string, error)
	SetSetting(ctx context.Context, name, value string) error
	// InitSetting stores value unless name is set, and returns what is
	// stored: the first replica to start decides.
	InitSetting(ctx context.Context, name, value string) (string, error)

	Close() error
}

// Open opens a store by its source name: "sqlite:PATH" (or a bare path)
// or a "postgres://" / "postgresql://" URL.
func Open(ctx context.Context, source string) (Store, error) {
	switch {
	case strings.HasPrefix(source, "postgres://"), strings.HasPrefix(source, "postgresql://"):
		return OpenPostgres(ctx, source)
	case strings.HasPrefix(source, "sqlite:"):
		return OpenSQLite(ctx, strings.TrimPrefix(source, "sqlite:"))
	case strings.Contains(source, "://"):
		return nil, fmt.Errorf("store %q: unknown kind (want sqlite:PATH or postgres://...)", source)
	}
	return OpenSQLite(ctx, source)
}
