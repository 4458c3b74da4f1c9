package managed

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/store"
	"github.com/tether-nbde/tether/tang"
)

// Config tunes the managed API. The zero value is usable: every field
// has a default.
type Config struct {
	Webhooks []string // URLs that get a POST for unlocks, denials and quiet devices
	// ApprovalTimeout is how long an unlock waits for an administrator
	// (default 5 minutes).
	ApprovalTimeout time.Duration
	// UnlockRate is the per-device limit of unlocks per minute when the
	// device's policy sets none (default 30; negative = unlimited).
	UnlockRate int
	// Sweep is how often keep-alive deadlines are checked (default 10 s);
	// they are also checked on every unlock.
	Sweep time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Hostnames are the DNS names and IP addresses put in the managed
	// API's self-signed certificate when it is first generated, so that
	// clients that check names (libcurl for ZFS keylocation) accept it.
	Hostnames []string
	// MaxPending caps the devices waiting for approval that enrolment
	// without a token may create (default 100).
	MaxPending int
}

// Server is the managed API: enrolment, device keys, unlock, heartbeat
// and ZFS keys for devices known by their identity key. The admin API and
// the dashboard act on the same devices through its exported methods.
type Server struct {
	st      store.Store
	kek     *KEK
	log     *slog.Logger
	cfg     Config
	now     func() time.Time
	cert    tls.Certificate
	pin     string
	limiter policy.Limiter
	enrolls enrollLimiter // tokenless enrolments per address
	pendMu  sync.Mutex    // serialises the pending cap's count and create
	hooks   *webhooks

	wakeMu sync.Mutex
	wake   chan struct{} // closed and replaced when an approval is decided here
}

// New sets up the managed API on a store: it checks the KEK against the
// store, and creates the TLS certificate on first start. Close stops what
// it starts.
func New(ctx context.Context, st store.Store, kek *KEK, cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.ApprovalTimeout <= 0 {
		cfg.ApprovalTimeout = 5 * time.Minute
	}
	if cfg.UnlockRate == 0 {
		cfg.UnlockRate = 30
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 100
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = 10 * time.Second
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	chk, err := kek.check()
	if err != nil {
		return nil, err
	}
	stored, err := st.InitSetting(ctx, "kek.check", chk)
	if err != nil {
		return nil, err
	}
	if err := kek.verifyCheck(stored); err != nil {
		return nil, err
	}
	cert, err := loadOrCreateTLS(ctx, st, kek, cfg.Hostnames)
	if err != nil {
		return nil, err
	}
	return &Server{
		st: st, kek: kek, log: log, cfg: cfg, now: now, cert: cert,
		pin:   SPKIPin(cert.Leaf.RawSubjectPublicKeyInfo),
		hooks: newWebhooks(cfg.Webhooks, log),
		wake:  make(chan struct{}),
	}, nil
}

// Pin is the pin of the managed API's TLS key (what tokens carry).
func (m *Server) Pin() string { return m.pin }

// TLSConfig is the managed listener's TLS configuration. Client
// certificates are requested, not verified against any CA: a device is
// known by its public key (the handshake proves it holds the private key),
// and enrolment is exactly the act of recording that key.
func (m *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{m.cert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// Close stops the webhook sender after it has sent what is queued.
func (m *Server) Close() { m.hooks.close() }

// Store is the store the server keeps its devices in.
func (m *Server) Store() store.Store { return m.st }

// Now is the server's clock.
func (m *Server) Now() time.Time { return m.now() }

// Log is the server's logger.
func (m *Server) Log() *slog.Logger { return m.log }

// Routes adds the device API to mux.
func (m *Server) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/enroll", m.handleEnroll)
	mux.HandleFunc("GET /v1/device", m.handleDevice)
	mux.HandleFunc("POST /v1/rec", m.handleRec)
	mux.HandleFunc("POST /v1/heartbeat", m.handleHeartbeat)
	mux.HandleFunc("GET /v1/zfs/{dataset...}", m.handleZFS) // zfs.go
	mux.HandleFunc("GET /v1/pcr-key", m.handlePCRKey)       // pcrsign.go
	mux.HandleFunc("POST /v1/pcr-sign", m.handlePCRSign)
}

// Wire types of the device API (docs/MANAGED.md).
type enrollRequest struct {
	Token string `json:"token,omitempty"`
	Name  string `json:"name,omitempty"`
}

type deviceReply struct {
	Device string    `json:"device"`
	Name   string    `json:"name"`
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Key    *jose.JWK `json:"key,omitempty"` // public exchange key s_D
}

type recRequest struct {
	Kid      string    `json:"kid"`
	X        *jose.JWK `json:"x"`
	Approval string    `json:"approval,omitempty"`
}

type recReply struct {
	Y        *jose.JWK `json:"y,omitempty"`
	Approval string    `json:"approval,omitempty"` // set with 202: ask again with it
	Deadline time.Time `json:"deadline,omitzero"`
}

// peerKeyID is the KeyID of the client certificate's public key, or "".
func peerKeyID(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	return SPKIPin(r.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo)
}

// Record appends an audit record (stamped now if its time is zero). A
// decision that cannot be recorded is not carried out: callers fail
// closed on error.
func (m *Server) Record(ctx context.Context, r *audit.Record) error {
	if r.Time.IsZero() {
		r.Time = m.now()
	}
	if err := m.st.AppendAudit(ctx, r); err != nil {
		m.log.Error("audit append failed", "action", r.Action, "err", err)
		return err
	}
	return nil
}

// authDevice finds the device of the client certificate. On failure it
// answers the request (and audits the refusal) and returns nil.
func (m *Server) authDevice(w http.ResponseWriter, r *http.Request, action string) *policy.Device {
	kid := peerKeyID(r)
	if kid == "" {
		wire.WriteError(w, http.StatusUnauthorized, "a client certificate with the device's identity key is required")
		return nil
	}
	d, err := m.st.DeviceByKey(r.Context(), kid)
	if errors.Is(err, store.ErrNotFound) {
		// A revoked device is named in the audit record (so the device's
		// history and the dashboard show the attempt) and in the answer.
		if revoked, _ := m.st.RevokedByKey(r.Context(), kid); len(revoked) > 0 {
			rd := revoked[0]
			m.Record(r.Context(), &audit.Record{Action: action, Device: rd.ID, Source: wire.Source(r).String(), Decision: audit.Deny,
				Reason: "device is revoked"})
			wire.WriteError(w, http.StatusGone, "%s", revokedMessage(rd))
			return nil
		}
		m.Record(r.Context(), &audit.Record{Action: action, Source: wire.Source(r).String(), Decision: audit.Deny,
			Reason: "identity key " + kid[:12] + "… is not enrolled"})
		// 410, not 403: the device can never be served with this key, so
		// a booting machine stops asking (a 403 — lockdown, a disabled or
		// pending device — may be lifted by an admin).
		wire.WriteError(w, http.StatusGone, "this identity key is not enrolled: enrol the machine (tether enroll)")
		return nil
	}
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return nil
	}
	return d
}

func (m *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	kid := peerKeyID(r)
	if kid == "" {
		wire.WriteError(w, http.StatusUnauthorized, "enrolment needs a client certificate with the new identity key")
		return
	}
	var req enrollRequest
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	src := wire.Source(r).String()
	if err := validName(req.Name); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if d, err := m.st.DeviceByKey(ctx, kid); err == nil {
		// A retry of an enrolment that succeeded: answer the same.
		m.replyDevice(w, d)
		return
	}
	now := m.now()
	state, group, how := policy.Pending, "", "without a token: pending approval"
	if req.Token != "" {
		secret, pin, err := ParseToken(req.Token)
		if err != nil {
			wire.WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		if pin != m.pin {
			wire.WriteError(w, http.StatusForbidden, "the token was made by another server")
			return
		}
		h := sha256.Sum256(secret)
		tok, err := m.st.ConsumeToken(ctx, h[:], now)
		if errors.Is(err, store.ErrNotFound) {
			m.Record(ctx, &audit.Record{Action: "enroll", Source: src, Decision: audit.Deny, Reason: "token unknown, used or expired"})
			wire.WriteError(w, http.StatusForbidden, "the enrolment token is unknown, already used or expired")
			return
		}
		if err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
			return
		}
		state, group, how = policy.Enabled, tok.Group, "with a token"
	} else {
		release, ok := m.admitTokenless(w, r, &req, src) // enroll.go
		if !ok {
			return
		}
		defer release()
	}
	id := "dev-" + wire.RandomToken(9)
	S, err := jose.P256.GenerateKey("ECMR", "deriveKey")
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "generate key: %v", err)
		return
	}
	sjson, _ := json.Marshal(S)
	wrapped, err := m.kek.Wrap("device-key:"+id, sjson)
	clear(sjson)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "wrap key: %v", err)
		return
	}
	pub, _ := json.Marshal(S.Public())
	d := &policy.Device{
		ID: id, Name: req.Name, Group: group, KeyID: kid, PublicKey: r.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo,
		State: state, ExchangeKey: wrapped, ExchangePub: string(pub), Created: now, Updated: now, LastSeen: now,
	}
	if err := m.st.CreateDevice(ctx, d); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "enrol: %v", err)
		return
	}
	if err := m.Record(ctx, &audit.Record{Action: "enroll", Device: id, Source: src, Decision: audit.OK,
		Reason: fmt.Sprintf("enrolled %q %s", req.Name, how)}); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.log.Info("device enrolled", "device", id, "name", req.Name, "state", state)
	m.replyDevice(w, d)
}

func validName(n string) error {
	if len(n) > 128 {
		return errors.New("device name is longer than 128 bytes")
	}
	for _, c := range n {
		if c < 0x20 || c == 0x7f {
			return errors.New("device name contains control characters")
		}
	}
	return nil
}

func (m *Server) replyDevice(w http.ResponseWriter, d *policy.Device) {
	rep := deviceReply{Device: d.ID, Name: d.Name, State: string(d.State), Reason: d.Reason}
	if d.State != policy.Revoked {
		var k jose.JWK
		if json.Unmarshal([]byte(d.ExchangePub), &k) == nil {
			rep.Key = &k
		}
	}
	wire.WriteJSON(w, http.StatusOK, rep)
}

func (m *Server) handleDevice(w http.ResponseWriter, r *http.Request) {
	if d := m.authDevice(w, r, "key"); d != nil {
		m.replyDevice(w, d)
	}
}

func (m *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	d := m.authDevice(w, r, "heartbeat")
	if d == nil {
		return
	}
	// A heartbeat proves the device is alive, but does not undo a
	// keep-alive timeout that already disabled it (Mandos semantics).
	if err := m.st.Touch(r.Context(), d.ID, m.now()); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	m.replyDevice(w, d)
}

// decide runs the policy for d now.
func (m *Server) decide(ctx context.Context, d *policy.Device, src netip.Addr) (policy.Decision, error) {
	var gp policy.Policy
	if d.Group != "" {
		p, err := m.st.Group(ctx, d.Group)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return policy.Decision{}, err
		}
		gp = p
	}
	lock, err := m.st.Setting(ctx, "lockdown")
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return policy.Decision{}, err
	}
	rate := m.cfg.UnlockRate
	if rate < 0 {
		rate = 0
	}
	return policy.Decide(policy.Input{
		Device: d, Policy: policy.Effective(gp, d.Policy), Lockdown: lock == "on",
		Source: src, Now: m.now(), Limiter: &m.limiter, DefaultRate: rate,
	}), nil
}

func (m *Server) handleRec(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := m.authDevice(w, r, "unlock")
	if d == nil {
		return
	}
	var req recRequest
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	if req.X == nil || req.Kid == "" {
		wire.WriteError(w, http.StatusBadRequest, `request needs "kid" and "x"`)
		return
	}
	src := wire.Source(r)
	if req.Approval != "" {
		m.continueApproval(w, r, d, &req, src)
		return
	}
	dec, err := m.decide(ctx, d, src)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "policy: %v", err)
		return
	}
	switch dec.Outcome {
	case policy.Deny:
		m.deny(w, r, d, src, dec)
	case policy.Wait:
		m.startApproval(w, r, d, src)
	default:
		m.exchange(w, r, d, &req, src, "")
	}
}

func (m *Server) deny(w http.ResponseWriter, r *http.Request, d *policy.Device, src netip.Addr, dec policy.Decision) {
	ctx := r.Context()
	if dec.Quiet {
		m.markQuiet(ctx, d)
	}
	rec := &audit.Record{Action: "unlock", Device: d.ID, Source: src.String(), Decision: audit.Deny, Reason: dec.Reason}
	if err := m.Record(ctx, rec); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.hooks.send(Event{Event: "deny", Device: d.ID, Name: d.Name, Source: rec.Source, Reason: dec.Reason}, rec)
	code := http.StatusForbidden
	if dec.Gone {
		code = http.StatusGone
	}
	wire.WriteError(w, code, "unlock refused: %s", dec.Reason)
}

// markQuiet disables a device that missed its keep-alive deadline.
func (m *Server) markQuiet(ctx context.Context, d *policy.Device) {
	cur := *d
	cur.State, cur.Reason, cur.Updated = policy.Disabled, "keep-alive timeout", m.now()
	if err := m.st.UpdateDevice(ctx, &cur); err != nil {
		// Someone changed the device first (another replica disabled it
		// too, or an admin acted): their change stands.
		m.log.Debug("keep-alive disable lost a race", "device", d.ID, "err", err)
		return
	}
	*d = cur
	rec := &audit.Record{Action: "keepalive", Device: d.ID, Decision: audit.Deny,
		Reason: "disabled: not heard from since " + d.LastSeen.Format(time.RFC3339)}
	if m.Record(ctx, rec) == nil {
		m.hooks.send(Event{Event: "quiet", Device: d.ID, Name: d.Name, Reason: rec.Reason}, rec)
	}
	m.log.Warn("device went quiet: disabled", "device", d.ID, "name", d.Name, "last_seen", d.LastSeen)
}

// SweepKeepAlive disables every enabled device whose keep-alive deadline
// has passed. The server runs it periodically; unlocks check too.
func (m *Server) SweepKeepAlive(ctx context.Context) error {
	groups, err := m.st.Groups(ctx)
	if err != nil {
		return err
	}
	now := m.now()
	overdue := func(group string, own policy.Policy, lastSeen time.Time) bool {
		ka := time.Duration(policy.Effective(groups[group], own).KeepAlive)
		return ka > 0 && now.Sub(lastSeen) > ka
	}
	// Scan only what the deadline needs and collect the (few) quiet
	// devices; then read each in full and disable it if it is still
	// quiet. The fleet is never all in memory, and no write runs inside
	// the read.
	var quiet []string
	err = m.st.EachKeepAlive(ctx, func(k store.KeepAliveInput) error {
		if overdue(k.Group, k.Policy, k.LastSeen) {
			quiet = append(quiet, k.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range quiet {
		d, err := m.st.Device(ctx, id)
		if err != nil {
			return err
		}
		// A heartbeat or an admin may have come in since the scan.
		if d.State == policy.Enabled && overdue(d.Group, d.Policy, d.LastSeen) {
			m.markQuiet(ctx, d)
		}
	}
	return nil
}

// RunKeepAlive runs SweepKeepAlive every Config.Sweep until ctx is done.
func (m *Server) RunKeepAlive(ctx context.Context) {
	t := time.NewTicker(m.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.SweepKeepAlive(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("keep-alive sweep failed", "err", err)
			}
		}
	}
}

// Notify sends ev to the webhooks once rec, its audit record, is
// committed; it never waits for a receiver.
func (m *Server) Notify(ev Event, rec *audit.Record) { m.hooks.send(ev, rec) }

// exchange performs y = S_D·x and answers. approval names the approval
// that allowed it, if any.
func (m *Server) exchange(w http.ResponseWriter, r *http.Request, d *policy.Device, req *recRequest, src netip.Addr, approval string) {
	ctx := r.Context()
	S := m.exchangeKey(w, d)
	if S == nil {
		return
	}
	if !S.MatchesThumbprint(req.Kid) {
		// A JWE of this machine from before a revocation (it enrolled
		// again since): say so, and put it in the revoked device's record.
		if rd := m.revokedOwner(ctx, d, req.Kid); rd != nil {
			m.Record(ctx, &audit.Record{Action: "unlock", Device: rd.ID, Source: src.String(), Decision: audit.Deny,
				Reason: "device is revoked (asked by its successor " + d.ID + ")"})
			wire.WriteError(w, http.StatusGone, "%s", revokedMessage(rd))
			return
		}
		m.Record(ctx, &audit.Record{Action: "unlock", Device: d.ID, Source: src.String(), Decision: audit.Deny,
			Reason: "kid does not name this device's exchange key"})
		wire.WriteError(w, http.StatusNotFound, "kid %q does not name this device's exchange key", req.Kid)
		return
	}
	y, err := tang.Exchange(S, req.X)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "bad request point: %v", err)
		return
	}
	reason := ""
	if approval != "" {
		reason = "approved (" + approval + ")"
	}
	rec := &audit.Record{Action: "unlock", Device: d.ID, Source: src.String(), Decision: audit.Allow, Reason: reason}
	if err := m.Record(ctx, rec); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.st.Touch(ctx, d.ID, m.now())
	m.hooks.send(Event{Event: "unlock", Device: d.ID, Name: d.Name, Source: rec.Source, Reason: reason}, rec)
	wire.WriteJSON(w, http.StatusOK, recReply{Y: y})
}

// revokedMessage is the answer to a revoked device: revocation is final.
func revokedMessage(d *policy.Device) string {
	msg := "device " + d.ID + " was revoked"
	if d.Reason != "" {
		msg += " (" + d.Reason + ")"
	}
	return msg + ": its key is destroyed, so nothing bound to it can be decrypted again; use another unlock method (a passphrase), then enrol again and rebind"
}

// revokedOwner returns the revoked device, with the same identity key as
// d, whose exchange key kid names, or nil.
func (m *Server) revokedOwner(ctx context.Context, d *policy.Device, kid string) *policy.Device {
	revoked, err := m.st.RevokedByKey(ctx, d.KeyID)
	if err != nil {
		return nil
	}
	for _, rd := range revoked {
		var k jose.JWK
		if json.Unmarshal([]byte(rd.ExchangePub), &k) == nil && k.MatchesThumbprint(kid) {
			return rd
		}
	}
	return nil
}

// exchangeKey unwraps the device's exchange key S_D. On failure it answers
// the request and returns nil.
func (m *Server) exchangeKey(w http.ResponseWriter, d *policy.Device) *jose.JWK {
	if d.ExchangeKey == nil {
		wire.WriteError(w, http.StatusGone, "device has no exchange key")
		return nil
	}
	sjson, err := m.kek.Unwrap("device-key:"+d.ID, d.ExchangeKey)
	if err != nil {
		m.log.Error("unwrap device key", "device", d.ID, "err", err)
		wire.WriteError(w, http.StatusInternalServerError, "cannot unwrap the device's key")
		return nil
	}
	defer clear(sjson)
	var S jose.JWK
	if err := json.Unmarshal(sjson, &S); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "stored key is malformed")
		return nil
	}
	return &S
}

func (m *Server) startApproval(w http.ResponseWriter, r *http.Request, d *policy.Device, src netip.Addr) {
	ctx := r.Context()
	now := m.now()
	a := &store.Approval{ID: "apr-" + wire.RandomToken(9), Device: d.ID, Source: src.String(), Created: now,
		Deadline: now.Add(m.cfg.ApprovalTimeout), State: "pending"}
	if err := m.st.CreateApproval(ctx, a); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	rec := &audit.Record{Action: "unlock", Device: d.ID, Source: a.Source, Decision: audit.Wait, Reason: "waiting for approval " + a.ID}
	if err := m.Record(ctx, rec); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.hooks.send(Event{Event: "approval", Device: d.ID, Name: d.Name, Source: a.Source, Reason: a.ID}, rec)
	wire.WriteJSON(w, http.StatusAccepted, recReply{Approval: a.ID, Deadline: a.Deadline})
}

// LongPoll bounds how long one request waits for an approval decision
// before the device is told to ask again.
const LongPoll = 20 * time.Second

func (m *Server) continueApproval(w http.ResponseWriter, r *http.Request, d *policy.Device, req *recRequest, src netip.Addr) {
	ctx := r.Context()
	wait, cancel := context.WithTimeout(ctx, LongPoll)
	defer cancel()
	var a *store.Approval
	for {
		m.wakeMu.Lock()
		wake := m.wake
		m.wakeMu.Unlock()
		var err error
		a, err = m.st.Approval(ctx, req.Approval)
		if err != nil || a.Device != d.ID {
			wire.WriteError(w, http.StatusNotFound, "no approval %q for this device", req.Approval)
			return
		}
		if a.State != "pending" {
			break
		}
		if !m.now().Before(a.Deadline) {
			if m.st.DecideApproval(ctx, a.ID, "expired") == nil {
				a.State = "expired"
				break
			}
			continue // decided just now: read it again
		}
		// Another replica may decide: poll the store as well as waiting
		// for a decision made here.
		select {
		case <-wake:
		case <-time.After(250 * time.Millisecond):
		case <-wait.Done():
			wire.WriteJSON(w, http.StatusAccepted, recReply{Approval: a.ID, Deadline: a.Deadline})
			return
		}
	}
	switch a.State {
	case "approved":
		// Everything but the approval is checked again: a lockdown or a
		// revocation while the request waited still wins.
		dec, err := m.decide(ctx, d, src)
		if err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "policy: %v", err)
			return
		}
		if dec.Outcome == policy.Deny {
			m.deny(w, r, d, src, dec)
			return
		}
		if err := m.st.UseApproval(ctx, a.ID); err != nil {
			wire.WriteError(w, http.StatusForbidden, "approval %s was already used", a.ID)
			return
		}
		m.exchange(w, r, d, req, src, a.ID)
	case "denied":
		m.deny(w, r, d, src, policy.Decision{Outcome: policy.Deny, Reason: "an administrator denied approval " + a.ID})
	case "expired":
		m.deny(w, r, d, src, policy.Decision{Outcome: policy.Deny, Reason: "approval " + a.ID + " passed its deadline"})
	default:
		wire.WriteError(w, http.StatusForbidden, "approval %s was already used", a.ID)
	}
}

// WakeWaiters wakes the unlocks that wait here for an approval, after an
// administrator decided one (replicas notice by polling the store).
func (m *Server) WakeWaiters() {
	m.wakeMu.Lock()
	close(m.wake)
	m.wake = make(chan struct{})
	m.wakeMu.Unlock()
}

// MakeToken returns an enrolment token: base64url(secret ‖ SHA-256 of the
// server's TLS key), so that the device pins the server from the token
// alone. Only SHA-256(secret) is stored.
func MakeToken(pin string) (token string, secretHash []byte, err error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", nil, err
	}
	return makeToken(secret, pin)
}

func makeToken(secret []byte, pin string) (token string, secretHash []byte, err error) {
	p, err := jose.B64.DecodeString(pin)
	if err != nil || len(p) != 32 {
		return "", nil, errors.New("bad server pin")
	}
	h := sha256.Sum256(secret)
	return jose.B64.EncodeToString(append(bytes.Clone(secret), p...)), h[:], nil
}

// ParseToken splits an enrolment token into its secret and the server pin.
func ParseToken(tok string) (secret []byte, pin string, err error) {
	b, err := jose.B64.DecodeString(strings.TrimSpace(tok))
	if err != nil || len(b) != 64 {
		return nil, "", errors.New("malformed enrolment token: want 86 characters of base64url")
	}
	return b[:32], jose.B64.EncodeToString(b[32:]), nil
}
