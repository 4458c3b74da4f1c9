package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
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

// Device is a device as the admin API lists it.
type Device struct {
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

// API is the admin API of a managed server.
type API struct {
	m   *managed.Server
	st  store.Store
	log *slog.Logger
}

// New returns the admin API of m.
func New(m *managed.Server) *API {
	return &API{m: m, st: m.Store(), log: m.Log()}
}

// Authed wraps an admin API handler: it runs only for a request with the
// admin token.
func (a *API) Authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		stored, err := a.st.Setting(r.Context(), tokenSetting)
		if !ok || err != nil || !constantTimeEqualHex(tok, stored) {
			wire.WriteError(w, http.StatusUnauthorized, "admin API: missing or wrong admin token")
			return
		}
		h(w, r)
	}
}

// Routes adds the admin API to mux. (The dashboard's accounts are
// managed under /v1/admin/users, by package dashboard, behind Authed.)
func (a *API) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/admin/tokens", a.Authed(a.createToken))
	mux.HandleFunc("GET /v1/admin/devices", a.Authed(a.devices))
	mux.HandleFunc("POST /v1/admin/devices/{id}/{op}", a.Authed(a.DeviceOp))
	mux.HandleFunc("PUT /v1/admin/devices/{id}/policy", a.Authed(a.devicePolicy))
	mux.HandleFunc("PUT /v1/admin/groups/{name}", a.Authed(a.group))
	mux.HandleFunc("GET /v1/admin/groups", a.Authed(a.groups))
	mux.HandleFunc("PUT /v1/admin/lockdown", a.Authed(a.Lockdown))
	mux.HandleFunc("PUT /v1/admin/settings/enroll-open", a.Authed(a.enrollOpen))
	mux.HandleFunc("GET /v1/admin/approvals", a.Authed(a.approvals))
	mux.HandleFunc("POST /v1/admin/approvals/{id}/{op}", a.Authed(a.ApprovalOp))
	mux.HandleFunc("GET /v1/admin/audit", a.Authed(a.audit))
	mux.HandleFunc("GET /v1/admin/pcr-states", a.Authed(a.pcrStates))
	mux.HandleFunc("POST /v1/admin/devices/{id}/pcr-states/{policy}/{op}", a.Authed(a.PCROp))
}

// actorKey carries who makes a change through the dashboard, for the
// audit record (Record).
type actorKey struct{}

type actor struct{ name, source string }

// WithActor returns ctx naming the dashboard account, and its address,
// that makes the request: Record puts them in the audit record instead of
// "admin".
func WithActor(ctx context.Context, name, source string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor{name: name, source: source})
}

// Record audits an administrator's change, made with the admin token or,
// if ctx says so (WithActor), by a dashboard account.
func (a *API) Record(ctx context.Context, r *audit.Record) error {
	r.Actor, r.Decision = "admin", audit.OK
	if ac, ok := ctx.Value(actorKey{}).(actor); ok {
		// A change made in the dashboard: who, and from where.
		r.Actor, r.Source = ac.name, ac.source
	}
	return a.m.Record(ctx, r)
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	ttl := time.Duration(req.TTL)
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	tok, hash, err := managed.MakeToken(a.m.Pin())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	now := a.m.Now()
	t := &store.Token{Hash: hash, Group: req.Group, Note: req.Note, Created: now, Expires: now.Add(ttl)}
	if err := a.st.CreateToken(r.Context(), t); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if err := a.Record(r.Context(), &audit.Record{Action: "token.create",
		Reason: "group " + strconv.Quote(req.Group) + ", expires " + t.Expires.Format(time.RFC3339)}); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, TokenReply{Token: tok, Expires: t.Expires})
}

// ToDevice is d as the admin API lists it.
func ToDevice(d *policy.Device) Device {
	return Device{ID: d.ID, Name: d.Name, Group: d.Group, State: string(d.State), Reason: d.Reason, KeyID: d.KeyID,
		Policy: d.Policy, Created: d.Created, LastSeen: d.LastSeen, Version: d.Version}
}

func (a *API) devices(w http.ResponseWriter, r *http.Request) {
	// Streamed: a fleet of 100,000 devices is never all in memory.
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 32<<10)
	enc := json.NewEncoder(bw)
	n := 0
	err := a.st.EachDevice(r.Context(), func(d *policy.Device) error {
		sep := ","
		if n == 0 {
			sep = "["
		}
		n++
		bw.WriteString(sep)
		return enc.Encode(ToDevice(d))
	})
	if err != nil {
		if n == 0 {
			wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
			return
		}
		// Headers are gone: cut the reply short so the client sees bad JSON.
		a.log.Error("device list", "err", err)
		return
	}
	if n == 0 {
		bw.WriteString("[")
	}
	bw.WriteString("]\n")
	bw.Flush()
}

// DeviceOp applies approve, enable, disable or revoke, as a
// compare-and-swap that is retried on conflict (the decision is made
// again on the fresh record).
func (a *API) DeviceOp(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, op := r.PathValue("id"), r.PathValue("op")
	var req ChangeRequest
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	for attempt := 0; ; attempt++ {
		d, err := a.st.Device(ctx, id)
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
		d.Updated = a.m.Now()
		err = a.st.UpdateDevice(ctx, d)
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
			a.st.Touch(ctx, id, a.m.Now())
		}
		if op == "revoke" {
			if c, ok := a.st.(store.Checkpointer); ok {
				c.Checkpoint(ctx)
			}
		}
		rec := &audit.Record{Action: "device." + op, Device: id, Reason: req.Reason}
		if err := a.Record(ctx, rec); err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
			return
		}
		if op == "revoke" {
			a.m.Notify(managed.Event{Event: "revoke", Device: id, Name: d.Name, Reason: req.Reason}, rec)
		}
		a.log.Info("device changed by admin", "device", id, "op", op)
		wire.WriteJSON(w, http.StatusOK, ToDevice(d))
		return
	}
}

func (a *API) devicePolicy(w http.ResponseWriter, r *http.Request) {
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
		d, err := a.st.Device(ctx, id)
		if err != nil {
			wire.WriteError(w, http.StatusNotFound, "no device %q", id)
			return
		}
		d.Policy, d.Updated = p, a.m.Now()
		err = a.st.UpdateDevice(ctx, d)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			wire.WriteError(w, http.StatusConflict, "%v", err)
			return
		}
		a.Record(ctx, &audit.Record{Action: "device.policy", Device: id, Reason: policyString(p)})
		wire.WriteJSON(w, http.StatusOK, ToDevice(d))
		return
	}
	wire.WriteError(w, http.StatusConflict, "device %s keeps changing; try again", id)
}

func policyString(p policy.Policy) string {
	b, _ := json.Marshal(p)
	return string(b)
}

func (a *API) group(w http.ResponseWriter, r *http.Request) {
	var p policy.Policy
	if !wire.ReadJSON(w, r, &p) {
		return
	}
	if err := policy.Validate(p); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	name := r.PathValue("name")
	if err := a.st.PutGroup(r.Context(), name, p); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	a.Record(r.Context(), &audit.Record{Action: "group.policy", Reason: name + " " + policyString(p)})
	wire.WriteJSON(w, http.StatusOK, p)
}

func (a *API) groups(w http.ResponseWriter, r *http.Request) {
	g, err := a.st.Groups(r.Context())
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

func (a *API) setSwitch(w http.ResponseWriter, r *http.Request, setting, action string) {
	var req OnOff
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	v := map[bool]string{true: "on", false: "off"}[req.On]
	if err := a.st.SetSetting(r.Context(), setting, v); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if err := a.Record(r.Context(), &audit.Record{Action: action, Reason: v}); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	a.log.Warn(action+" changed by admin", "value", v)
	wire.WriteJSON(w, http.StatusOK, req)
}

// Lockdown turns lockdown on or off: every unlock is refused while on.
func (a *API) Lockdown(w http.ResponseWriter, r *http.Request) {
	a.setSwitch(w, r, "lockdown", "lockdown")
}

func (a *API) enrollOpen(w http.ResponseWriter, r *http.Request) {
	a.setSwitch(w, r, managed.EnrollOpenSetting, "enroll.open")
}

func (a *API) approvals(w http.ResponseWriter, r *http.Request) {
	as, err := a.st.PendingApprovals(r.Context(), a.m.Now())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if as == nil {
		as = []*store.Approval{}
	}
	wire.WriteJSON(w, http.StatusOK, as)
}

// ApprovalOp approves or denies a pending unlock, and wakes the unlock
// waiting for it here.
func (a *API) ApprovalOp(w http.ResponseWriter, r *http.Request) {
	id, op := r.PathValue("id"), r.PathValue("op")
	state := map[string]string{"approve": "approved", "deny": "denied"}[op]
	if state == "" {
		wire.WriteError(w, http.StatusNotFound, "unknown approval operation %q (approve, deny)", op)
		return
	}
	apr, err := a.st.Approval(r.Context(), id)
	if err != nil {
		wire.WriteError(w, http.StatusNotFound, "no approval %q", id)
		return
	}
	if err := a.st.DecideApproval(r.Context(), id, state); err != nil {
		wire.WriteError(w, http.StatusConflict, "approval %s was already decided", id)
		return
	}
	a.Record(r.Context(), &audit.Record{Action: "approval." + op, Device: apr.Device, Reason: id})
	a.m.WakeWaiters()
	apr.State = state
	wire.WriteJSON(w, http.StatusOK, apr)
}

// pcrStates lists the PCR values devices asked the server to sign
// (?device=ID, ?state=pending|approved|denied).
func (a *API) pcrStates(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ps, err := a.m.PCRStates(r.Context(), q.Get("device"), q.Get("state"))
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if ps == nil {
		ps = []*store.PCRState{}
	}
	wire.WriteJSON(w, http.StatusOK, ps)
}

// PCROp approves or denies PCR values a device reported: approved values
// are signed whenever the device asks (its signed tpm2 bindings unseal in
// that state); denied ones never are.
func (a *API) PCROp(w http.ResponseWriter, r *http.Request) {
	id, op := r.PathValue("id"), r.PathValue("op")
	st, err := a.m.DecidePCRs(r.Context(), id, r.PathValue("policy"), op)
	if errors.Is(err, store.ErrNotFound) {
		wire.WriteError(w, http.StatusNotFound, "%v", err)
		return
	}
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	a.Record(r.Context(), &audit.Record{Action: "pcr." + op, Device: id,
		Reason: "sha256 PCRs " + st.PCRIDs + " policy " + st.Policy + ": " + st.Values})
	wire.WriteJSON(w, http.StatusOK, st)
}

func (a *API) audit(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	recs, err := a.st.Audit(r.Context(), after, limit)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if recs == nil {
		recs = []*audit.Record{}
	}
	wire.WriteJSON(w, http.StatusOK, recs)
}
