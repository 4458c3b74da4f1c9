package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

// The admin API: JSON over the managed TLS listener, authenticated by the
// bearer token of DATA/admin.json (stored as a SHA-256 hash). Every change
// is audited with actor "admin".

// AdminDevice is a device as the admin API lists it.
type AdminDevice struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	Group    string        `json:"group,omitempty"`
	State    string        `json:"state"`
	Reason   string        `json:"reason,omitempty"`
	KeyID    string        `json:"key_id"`
	Policy   policy.Policy `json:"policy"`
	Created  time.Time     `json:"created"`
	LastSeen time.Time     `json:"last_seen"`
	Version  int64         `json:"version"`
}

// TokenRequest asks for an enrolment token.
type TokenRequest struct {
	Group string          `json:"group,omitempty"`
	TTL   policy.Duration `json:"ttl,omitempty"` // default 24h
	Note  string          `json:"note,omitempty"`
}

// TokenReply carries a new enrolment token; it is shown once.
type TokenReply struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// ChangeRequest is the body of a device state change.
type ChangeRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (m *Managed) adminRoutes(mux *http.ServeMux) {
	a := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			stored, err := m.st.Setting(r.Context(), adminTokenSetting)
			if !ok || err != nil || !constantTimeEqualHex(tok, stored) {
				wire.WriteError(w, http.StatusUnauthorized, "admin API: missing or wrong admin token")
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("POST /v1/admin/tokens", a(m.adminToken))
	mux.HandleFunc("GET /v1/admin/devices", a(m.adminDevices))
	mux.HandleFunc("POST /v1/admin/devices/{id}/{op}", a(m.adminDeviceOp))
	mux.HandleFunc("PUT /v1/admin/devices/{id}/policy", a(m.adminDevicePolicy))
	mux.HandleFunc("PUT /v1/admin/groups/{name}", a(m.adminGroup))
	mux.HandleFunc("GET /v1/admin/groups", a(m.adminGroups))
	mux.HandleFunc("PUT /v1/admin/lockdown", a(m.adminLockdown))
	mux.HandleFunc("PUT /v1/admin/settings/enroll-open", a(m.adminEnrollOpen))
	mux.HandleFunc("GET /v1/admin/approvals", a(m.adminApprovals))
	mux.HandleFunc("POST /v1/admin/approvals/{id}/{op}", a(m.adminApprovalOp))
	mux.HandleFunc("GET /v1/admin/audit", a(m.adminAudit))
	m.userRoutes(mux, a) // ui_users.go
}

func (m *Managed) adminRecord(ctx context.Context, r *audit.Record) error {
	r.Actor, r.Decision = "admin", audit.OK
	if a, ok := ctx.Value(actorKey{}).(uiActor); ok {
		// A change made in the dashboard: who, and from where.
		r.Actor, r.Source = a.name, a.source
	}
	return m.record(ctx, r)
}

func (m *Managed) adminToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	ttl := time.Duration(req.TTL)
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	tok, hash, err := managed.MakeToken(m.pin)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	now := m.now()
	t := &store.Token{Hash: hash, Group: req.Group, Note: req.Note, Created: now, Expires: now.Add(ttl)}
	if err := m.st.CreateToken(r.Context(), t); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if err := m.adminRecord(r.Context(), &audit.Record{Action: "token.create",
		Reason: "group " + strconv.Quote(req.Group) + ", expires " + t.Expires.Format(time.RFC3339)}); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, TokenReply{Token: tok, Expires: t.Expires})
}

func toAdmin(d *policy.Device) AdminDevice {
	return AdminDevice{ID: d.ID, Name: d.Name, Group: d.Group, State: string(d.State), Reason: d.Reason, KeyID: d.KeyID,
		Policy: d.Policy, Created: d.Created, LastSeen: d.LastSeen, Version: d.Version}
}

func (m *Managed) adminDevices(w http.ResponseWriter, r *http.Request) {
	// Streamed: a fleet of 100,000 devices is never all in memory.
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 32<<10)
	enc := json.NewEncoder(bw)
	n := 0
	err := m.st.EachDevice(r.Context(), func(d *policy.Device) error {
		sep := ","
		if n == 0 {
			sep = "["
		}
		n++
		bw.WriteString(sep)
		return enc.Encode(toAdmin(d))
	})
	if err != nil {
		if n == 0 {
			wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
			return
		}
		// Headers are gone: cut the reply short so the client sees bad JSON.
		m.log.Error("device list", "err", err)
		return
	}
	if n == 0 {
		bw.WriteString("[")
	}
	bw.WriteString("]\n")
	bw.Flush()
}

// adminDeviceOp applies approve, enable, disable or revoke, as a
// compare-and-swap that is retried on conflict (the decision is made
// again on the fresh record).
func (m *Managed) adminDeviceOp(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, op := r.PathValue("id"), r.PathValue("op")
	var req ChangeRequest
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	for attempt := 0; ; attempt++ {
		d, err := m.st.Device(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			wire.WriteError(w, http.StatusNotFound, "no device %q", id)
			return
		}
		if err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
			return
		}
		if d.State == policy.Revoked {
			wire.WriteError(w, http.StatusConflict, "device %s is revoked: revocation is final", id)
			return
		}
		touch := false
		switch op {
		case "approve":
			if d.State != policy.Pending {
				wire.WriteError(w, http.StatusConflict, "device %s is %s, not pending", id, d.State)
				return
			}
			d.State, d.Reason, touch = policy.Enabled, req.Reason, true
		case "enable":
			d.State, d.Reason, touch = policy.Enabled, req.Reason, true
		case "disable":
			d.State, d.Reason = policy.Disabled, req.Reason
		case "revoke":
			// Destroying S_D is the revocation: every JWE bound to this
			// device becomes undecryptable, for good.
			d.State, d.Reason, d.ExchangeKey = policy.Revoked, req.Reason, nil
		default:
			wire.WriteError(w, http.StatusNotFound, "unknown device operation %q (approve, enable, disable, revoke)", op)
			return
		}
		d.Updated = m.now()
		err = m.st.UpdateDevice(ctx, d)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if errors.Is(err, store.ErrRevoked) {
			wire.WriteError(w, http.StatusConflict, "device %s is revoked: revocation is final", id)
			return
		}
		if err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
			return
		}
		if touch {
			// Re-enabling restarts the keep-alive clock (Mandos semantics).
			m.st.Touch(ctx, id, m.now())
		}
		if op == "revoke" {
			if c, ok := m.st.(store.Checkpointer); ok {
				c.Checkpoint(ctx)
			}
		}
		rec := &audit.Record{Action: "device." + op, Device: id, Reason: req.Reason}
		if err := m.adminRecord(ctx, rec); err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
			return
		}
		if op == "revoke" {
			m.dev.Notify(managed.Event{Event: "revoke", Device: id, Name: d.Name, Reason: req.Reason}, rec)
		}
		m.log.Info("device changed by admin", "device", id, "op", op)
		wire.WriteJSON(w, http.StatusOK, toAdmin(d))
		return
	}
}

func (m *Managed) adminDevicePolicy(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	var p policy.Policy
	if !wire.ReadJSON(w, r, &p) {
		return
	}
	if err := policy.Validate(p); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	for attempt := 0; attempt < 5; attempt++ {
		d, err := m.st.Device(ctx, id)
		if err != nil {
			wire.WriteError(w, http.StatusNotFound, "no device %q", id)
			return
		}
		d.Policy, d.Updated = p, m.now()
		err = m.st.UpdateDevice(ctx, d)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			wire.WriteError(w, http.StatusConflict, "%v", err)
			return
		}
		m.adminRecord(ctx, &audit.Record{Action: "device.policy", Device: id, Reason: policyString(p)})
		wire.WriteJSON(w, http.StatusOK, toAdmin(d))
		return
	}
	wire.WriteError(w, http.StatusConflict, "device %s keeps changing; try again", id)
}

func policyString(p policy.Policy) string {
	b, _ := json.Marshal(p)
	return string(b)
}

func (m *Managed) adminGroup(w http.ResponseWriter, r *http.Request) {
	var p policy.Policy
	if !wire.ReadJSON(w, r, &p) {
		return
	}
	if err := policy.Validate(p); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	name := r.PathValue("name")
	if err := m.st.PutGroup(r.Context(), name, p); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	m.adminRecord(r.Context(), &audit.Record{Action: "group.policy", Reason: name + " " + policyString(p)})
	wire.WriteJSON(w, http.StatusOK, p)
}

func (m *Managed) adminGroups(w http.ResponseWriter, r *http.Request) {
	g, err := m.st.Groups(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, g)
}

// OnOff is the body of a switch: lockdown, open enrolment.
type OnOff struct {
	On bool `json:"on"`
}

func (m *Managed) adminSwitch(w http.ResponseWriter, r *http.Request, setting, action string) {
	var req OnOff
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	v := map[bool]string{true: "on", false: "off"}[req.On]
	if err := m.st.SetSetting(r.Context(), setting, v); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if err := m.adminRecord(r.Context(), &audit.Record{Action: action, Reason: v}); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.log.Warn(action+" changed by admin", "value", v)
	wire.WriteJSON(w, http.StatusOK, req)
}

func (m *Managed) adminLockdown(w http.ResponseWriter, r *http.Request) {
	m.adminSwitch(w, r, "lockdown", "lockdown")
}

func (m *Managed) adminEnrollOpen(w http.ResponseWriter, r *http.Request) {
	m.adminSwitch(w, r, managed.EnrollOpenSetting, "enroll.open")
}

func (m *Managed) adminApprovals(w http.ResponseWriter, r *http.Request) {
	as, err := m.st.PendingApprovals(r.Context(), m.now())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if as == nil {
		as = []*store.Approval{}
	}
	wire.WriteJSON(w, http.StatusOK, as)
}

func (m *Managed) adminApprovalOp(w http.ResponseWriter, r *http.Request) {
	id, op := r.PathValue("id"), r.PathValue("op")
	state := map[string]string{"approve": "approved", "deny": "denied"}[op]
	if state == "" {
		wire.WriteError(w, http.StatusNotFound, "unknown approval operation %q (approve, deny)", op)
		return
	}
	a, err := m.st.Approval(r.Context(), id)
	if err != nil {
		wire.WriteError(w, http.StatusNotFound, "no approval %q", id)
		return
	}
	if err := m.st.DecideApproval(r.Context(), id, state); err != nil {
		wire.WriteError(w, http.StatusConflict, "approval %s was already decided", id)
		return
	}
	m.adminRecord(r.Context(), &audit.Record{Action: "approval." + op, Device: a.Device, Reason: id})
	m.wakeWaiters()
	a.State = state
	wire.WriteJSON(w, http.StatusOK, a)
}

func (m *Managed) adminAudit(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	recs, err := m.st.Audit(r.Context(), after, limit)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if recs == nil {
		recs = []*audit.Record{}
	}
	wire.WriteJSON(w, http.StatusOK, recs)
}
