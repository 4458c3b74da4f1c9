package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/connlimit"
	"github.com/tether-nbde/tether/server/tangport"
	"github.com/tether-nbde/tether/store"
	"github.com/tether-nbde/tether/tang"
)

// ManagedConfig turns on managed mode: device enrolment, per-device
// exchange keys, policy, audit and the admin API, served over TLS on a
// listener of their own. The Tang endpoints stay where they were, plain
// and unchanged, so stock clevis clients are not affected.
type ManagedConfig struct {
	Listen    string   // TLS address of the managed and admin APIs; "" = managed mode off
	Store     string   // store source (store.Open); "" = sqlite:DATA/tether.db
	KEKFile   string   // key-encryption key file; "" = DATA/kek
	AdminFile string   // admin credentials written on first start; "" = DATA/admin.json
	Webhooks  []string // URLs that get a POST for unlocks, denials and quiet devices
	// TangAllow, if not empty, restricts the Tang endpoints to these
	// source networks (works with or without managed mode).
	TangAllow []netip.Prefix
	// ApprovalTimeout is how long an unlock waits for an administrator
	// (default 5 minutes).
	ApprovalTimeout time.Duration
	// UnlockRate is the per-device limit of unlocks per minute when the
	// device's policy sets none (default 30; negative = unlimited).
	UnlockRate int
	// Sweep is how often keep-alive deadlines are checked (default 10 s);
	// they are also checked on every unlock.
	Sweep time.Duration
	// Ready, if set, receives the managed listener's address.
	Ready func(net.Addr)
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// UI configures the dashboard at /ui/ (ui.go).
	UI UIConfig
	// Hostnames are the DNS names and IP addresses put in the managed
	// API's self-signed certificate when it is first generated, so that
	// clients that check names (libcurl for ZFS keylocation) accept it.
	Hostnames []string
	// SaveAdmin, if set, receives the admin token that NewManaged creates
	// on first start, before the store records its hash, and must keep it
	// (startManaged writes the admin file). A start that fails at any
	// point thus leaves either no admin credential in the store (the next
	// start makes one) or one that was handed over: never a token nobody
	// holds.
	SaveAdmin func(token string) error
	// MaxPending caps the devices waiting for approval that enrolment
	// without a token may create (default 100).
	MaxPending int
}

// adminTokenSetting holds the SHA-256 (hex) of the admin API's token.
const adminTokenSetting = "admin.token.sha256"

// initAdminToken creates the admin token if the store has none. It
// returns the new token, or "" if one existed (or another replica made it
// first, in which case what save received is void).
func initAdminToken(ctx context.Context, st store.Store, save func(string) error) (string, error) {
	if _, err := st.Setting(ctx, adminTokenSetting); err == nil {
		return "", nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	tok := randomToken(32)
	if save != nil {
		if err := save(tok); err != nil {
			return "", err
		}
	}
	h := sha256.Sum256([]byte(tok))
	stored, err := st.InitSetting(ctx, adminTokenSetting, hex.EncodeToString(h[:]))
	if err != nil {
		return "", err
	}
	if stored != hex.EncodeToString(h[:]) {
		return "", nil
	}
	return tok, nil
}

// Managed is the managed-mode server: the device API (enrol, key, unlock,
// heartbeat) and the admin API.
type Managed struct {
	st      store.Store
	kek     *KEK
	log     *slog.Logger
	cfg     ManagedConfig
	now     func() time.Time
	cert    tls.Certificate
	pin     string
	limiter policy.Limiter
	enrolls enrollLimiter // tokenless enrolments per address
	pendMu  sync.Mutex    // serialises the pending cap's count and create
	hooks   *webhooks
	ui      *uiServer

	wakeMu sync.Mutex
	wake   chan struct{} // closed and replaced when an approval is decided here
}

// NewManaged sets up managed mode on a store: it checks the KEK against the
// store, and creates the TLS certificate on first start. adminToken is
// non-empty if this call created the admin credential (first start): the
// caller must hand it to the administrator (startManaged writes it to the
// admin file); it is never shown again.
func NewManaged(ctx context.Context, st store.Store, kek *KEK, cfg ManagedConfig, log *slog.Logger) (m *Managed, adminToken string, err error) {
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
		return nil, "", err
	}
	stored, err := st.InitSetting(ctx, "kek.check", chk)
	if err != nil {
		return nil, "", err
	}
	if err := kek.verifyCheck(stored); err != nil {
		return nil, "", err
	}
	cert, err := loadOrCreateTLS(ctx, st, kek, cfg.Hostnames)
	if err != nil {
		return nil, "", err
	}
	tok, err := initAdminToken(ctx, st, cfg.SaveAdmin)
	if err != nil {
		return nil, "", err
	}
	m = &Managed{
		st: st, kek: kek, log: log, cfg: cfg, now: now, cert: cert,
		pin:   SPKIPin(cert.Leaf.RawSubjectPublicKeyInfo),
		hooks: newWebhooks(cfg.Webhooks, log),
		wake:  make(chan struct{}),
	}
	m.ui = newUIServer(m)
	return m, tok, nil
}

// Pin is the pin of the managed API's TLS key (what tokens carry).
func (m *Managed) Pin() string { return m.pin }

// TLSConfig is the managed listener's TLS configuration. Client
// certificates are requested, not verified against any CA: a device is
// known by its public key (the handshake proves it holds the private key),
// and enrolment is exactly the act of recording that key.
func (m *Managed) TLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{m.cert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// Close stops the webhook sender after it has sent what is queued.
func (m *Managed) Close() { m.hooks.close() }

// Handler serves the device and admin APIs.
func (m *Managed) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll", m.handleEnroll)
	mux.HandleFunc("GET /v1/device", m.handleDevice)
	mux.HandleFunc("POST /v1/rec", m.handleRec)
	mux.HandleFunc("POST /v1/heartbeat", m.handleHeartbeat)
	mux.HandleFunc("GET /v1/zfs/{dataset...}", m.handleZFS) // managed_zfs.go
	m.adminRoutes(mux)
	m.ui.routes(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
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

type errorReply struct {
	Error string `json:"error"`
}

const maxRequest = 64 << 10

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, a ...any) {
	writeJSON(w, code, errorReply{Error: fmt.Sprintf(format, a...)})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return false
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed request: %v", err)
		return false
	}
	return true
}

func sourceOf(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// peerKeyID is the KeyID of the client certificate's public key, or "".
func peerKeyID(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	return SPKIPin(r.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo)
}

// record appends an audit record. A decision that cannot be recorded is
// not carried out: callers fail closed on error.
func (m *Managed) record(ctx context.Context, r *audit.Record) error {
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
func (m *Managed) authDevice(w http.ResponseWriter, r *http.Request, action string) *policy.Device {
	kid := peerKeyID(r)
	if kid == "" {
		writeError(w, http.StatusUnauthorized, "a client certificate with the device's identity key is required")
		return nil
	}
	d, err := m.st.DeviceByKey(r.Context(), kid)
	if errors.Is(err, store.ErrNotFound) {
		// A revoked device is named in the audit record (so the device's
		// history and the dashboard show the attempt) and in the answer.
		if revoked, _ := m.st.RevokedByKey(r.Context(), kid); len(revoked) > 0 {
			rd := revoked[0]
			m.record(r.Context(), &audit.Record{Action: action, Device: rd.ID, Source: sourceOf(r).String(), Decision: audit.Deny,
				Reason: "device is revoked"})
			writeError(w, http.StatusGone, "%s", revokedMessage(rd))
			return nil
		}
		m.record(r.Context(), &audit.Record{Action: action, Source: sourceOf(r).String(), Decision: audit.Deny,
			Reason: "identity key " + kid[:12] + "… is not enrolled"})
		// 410, not 403: the device can never be served with this key, so
		// a booting machine stops asking (a 403 — lockdown, a disabled or
		// pending device — may be lifted by an admin).
		writeError(w, http.StatusGone, "this identity key is not enrolled: enrol the machine (tether enroll)")
		return nil
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "store: %v", err)
		return nil
	}
	return d
}

func (m *Managed) handleEnroll(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	kid := peerKeyID(r)
	if kid == "" {
		writeError(w, http.StatusUnauthorized, "enrolment needs a client certificate with the new identity key")
		return
	}
	var req enrollRequest
	if !readJSON(w, r, &req) {
		return
	}
	src := sourceOf(r).String()
	if err := validName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
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
			writeError(w, http.StatusBadRequest, "%v", err)
			return
		}
		if pin != m.pin {
			writeError(w, http.StatusForbidden, "the token was made by another server")
			return
		}
		h := sha256.Sum256(secret)
		tok, err := m.st.ConsumeToken(ctx, h[:], now)
		if errors.Is(err, store.ErrNotFound) {
			m.record(ctx, &audit.Record{Action: "enroll", Source: src, Decision: audit.Deny, Reason: "token unknown, used or expired"})
			writeError(w, http.StatusForbidden, "the enrolment token is unknown, already used or expired")
			return
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, "store: %v", err)
			return
		}
		state, group, how = policy.Enabled, tok.Group, "with a token"
	} else {
		release, ok := m.admitTokenless(w, r, &req, src) // managed_enroll.go
		if !ok {
			return
		}
		defer release()
	}
	id := "dev-" + randomToken(9)
	S, err := jose.P256.GenerateKey("ECMR", "deriveKey")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "generate key: %v", err)
		return
	}
	sjson, _ := json.Marshal(S)
	wrapped, err := m.kek.Wrap("device-key:"+id, sjson)
	clear(sjson)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "wrap key: %v", err)
		return
	}
	pub, _ := json.Marshal(S.Public())
	d := &policy.Device{
		ID: id, Name: req.Name, Group: group, KeyID: kid, PublicKey: r.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo,
		State: state, ExchangeKey: wrapped, ExchangePub: string(pub), Created: now, Updated: now, LastSeen: now,
	}
	if err := m.st.CreateDevice(ctx, d); err != nil {
		writeError(w, http.StatusInternalServerError, "enrol: %v", err)
		return
	}
	if err := m.record(ctx, &audit.Record{Action: "enroll", Device: id, Source: src, Decision: audit.OK,
		Reason: fmt.Sprintf("enrolled %q %s", req.Name, how)}); err != nil {
		writeError(w, http.StatusInternalServerError, "audit: %v", err)
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

func (m *Managed) replyDevice(w http.ResponseWriter, d *policy.Device) {
	rep := deviceReply{Device: d.ID, Name: d.Name, State: string(d.State), Reason: d.Reason}
	if d.State != policy.Revoked {
		var k jose.JWK
		if json.Unmarshal([]byte(d.ExchangePub), &k) == nil {
			rep.Key = &k
		}
	}
	writeJSON(w, http.StatusOK, rep)
}

func (m *Managed) handleDevice(w http.ResponseWriter, r *http.Request) {
	if d := m.authDevice(w, r, "key"); d != nil {
		m.replyDevice(w, d)
	}
}

func (m *Managed) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	d := m.authDevice(w, r, "heartbeat")
	if d == nil {
		return
	}
	// A heartbeat proves the device is alive, but does not undo a
	// keep-alive timeout that already disabled it (Mandos semantics).
	if err := m.st.Touch(r.Context(), d.ID, m.now()); err != nil {
		writeError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	m.replyDevice(w, d)
}

// decide runs the policy for d now.
func (m *Managed) decide(ctx context.Context, d *policy.Device, src netip.Addr) (policy.Decision, error) {
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

func (m *Managed) handleRec(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := m.authDevice(w, r, "unlock")
	if d == nil {
		return
	}
	var req recRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.X == nil || req.Kid == "" {
		writeError(w, http.StatusBadRequest, `request needs "kid" and "x"`)
		return
	}
	src := sourceOf(r)
	if req.Approval != "" {
		m.continueApproval(w, r, d, &req, src)
		return
	}
	dec, err := m.decide(ctx, d, src)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "policy: %v", err)
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

func (m *Managed) deny(w http.ResponseWriter, r *http.Request, d *policy.Device, src netip.Addr, dec policy.Decision) {
	ctx := r.Context()
	if dec.Quiet {
		m.markQuiet(ctx, d)
	}
	rec := &audit.Record{Action: "unlock", Device: d.ID, Source: src.String(), Decision: audit.Deny, Reason: dec.Reason}
	if err := m.record(ctx, rec); err != nil {
		writeError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.hooks.send(Event{Event: "deny", Device: d.ID, Name: d.Name, Source: rec.Source, Reason: dec.Reason}, rec)
	code := http.StatusForbidden
	if dec.Gone {
		code = http.StatusGone
	}
	writeError(w, code, "unlock refused: %s", dec.Reason)
}

// markQuiet disables a device that missed its keep-alive deadline.
func (m *Managed) markQuiet(ctx context.Context, d *policy.Device) {
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
	if m.record(ctx, rec) == nil {
		m.hooks.send(Event{Event: "quiet", Device: d.ID, Name: d.Name, Reason: rec.Reason}, rec)
	}
	m.log.Warn("device went quiet: disabled", "device", d.ID, "name", d.Name, "last_seen", d.LastSeen)
}

// SweepKeepAlive disables every enabled device whose keep-alive deadline
// has passed. The server runs it periodically; unlocks check too.
func (m *Managed) SweepKeepAlive(ctx context.Context) error {
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

// exchange performs y = S_D·x and answers. approval names the approval
// that allowed it, if any.
func (m *Managed) exchange(w http.ResponseWriter, r *http.Request, d *policy.Device, req *recRequest, src netip.Addr, approval string) {
	ctx := r.Context()
	S := m.exchangeKey(w, d)
	if S == nil {
		return
	}
	if !S.MatchesThumbprint(req.Kid) {
		// A JWE of this machine from before a revocation (it enrolled
		// again since): say so, and put it in the revoked device's record.
		if rd := m.revokedOwner(ctx, d, req.Kid); rd != nil {
			m.record(ctx, &audit.Record{Action: "unlock", Device: rd.ID, Source: src.String(), Decision: audit.Deny,
				Reason: "device is revoked (asked by its successor " + d.ID + ")"})
			writeError(w, http.StatusGone, "%s", revokedMessage(rd))
			return
		}
		m.record(ctx, &audit.Record{Action: "unlock", Device: d.ID, Source: src.String(), Decision: audit.Deny,
			Reason: "kid does not name this device's exchange key"})
		writeError(w, http.StatusNotFound, "kid %q does not name this device's exchange key", req.Kid)
		return
	}
	y, err := tang.Exchange(S, req.X)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad request point: %v", err)
		return
	}
	reason := ""
	if approval != "" {
		reason = "approved (" + approval + ")"
	}
	rec := &audit.Record{Action: "unlock", Device: d.ID, Source: src.String(), Decision: audit.Allow, Reason: reason}
	if err := m.record(ctx, rec); err != nil {
		writeError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.st.Touch(ctx, d.ID, m.now())
	m.hooks.send(Event{Event: "unlock", Device: d.ID, Name: d.Name, Source: rec.Source, Reason: reason}, rec)
	writeJSON(w, http.StatusOK, recReply{Y: y})
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
func (m *Managed) revokedOwner(ctx context.Context, d *policy.Device, kid string) *policy.Device {
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
func (m *Managed) exchangeKey(w http.ResponseWriter, d *policy.Device) *jose.JWK {
	if d.ExchangeKey == nil {
		writeError(w, http.StatusGone, "device has no exchange key")
		return nil
	}
	sjson, err := m.kek.Unwrap("device-key:"+d.ID, d.ExchangeKey)
	if err != nil {
		m.log.Error("unwrap device key", "device", d.ID, "err", err)
		writeError(w, http.StatusInternalServerError, "cannot unwrap the device's key")
		return nil
	}
	defer clear(sjson)
	var S jose.JWK
	if err := json.Unmarshal(sjson, &S); err != nil {
		writeError(w, http.StatusInternalServerError, "stored key is malformed")
		return nil
	}
	return &S
}

func (m *Managed) startApproval(w http.ResponseWriter, r *http.Request, d *policy.Device, src netip.Addr) {
	ctx := r.Context()
	now := m.now()
	a := &store.Approval{ID: "apr-" + randomToken(9), Device: d.ID, Source: src.String(), Created: now,
		Deadline: now.Add(m.cfg.ApprovalTimeout), State: "pending"}
	if err := m.st.CreateApproval(ctx, a); err != nil {
		writeError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	rec := &audit.Record{Action: "unlock", Device: d.ID, Source: a.Source, Decision: audit.Wait, Reason: "waiting for approval " + a.ID}
	if err := m.record(ctx, rec); err != nil {
		writeError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.hooks.send(Event{Event: "approval", Device: d.ID, Name: d.Name, Source: a.Source, Reason: a.ID}, rec)
	writeJSON(w, http.StatusAccepted, recReply{Approval: a.ID, Deadline: a.Deadline})
}

// longPoll bounds how long one request waits for an approval decision
// before the device is told to ask again.
const longPoll = 20 * time.Second

func (m *Managed) continueApproval(w http.ResponseWriter, r *http.Request, d *policy.Device, req *recRequest, src netip.Addr) {
	ctx := r.Context()
	wait, cancel := context.WithTimeout(ctx, longPoll)
	defer cancel()
	var a *store.Approval
	for {
		m.wakeMu.Lock()
		wake := m.wake
		m.wakeMu.Unlock()
		var err error
		a, err = m.st.Approval(ctx, req.Approval)
		if err != nil || a.Device != d.ID {
			writeError(w, http.StatusNotFound, "no approval %q for this device", req.Approval)
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
			writeJSON(w, http.StatusAccepted, recReply{Approval: a.ID, Deadline: a.Deadline})
			return
		}
	}
	switch a.State {
	case "approved":
		// Everything but the approval is checked again: a lockdown or a
		// revocation while the request waited still wins.
		dec, err := m.decide(ctx, d, src)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "policy: %v", err)
			return
		}
		if dec.Outcome == policy.Deny {
			m.deny(w, r, d, src, dec)
			return
		}
		if err := m.st.UseApproval(ctx, a.ID); err != nil {
			writeError(w, http.StatusForbidden, "approval %s was already used", a.ID)
			return
		}
		m.exchange(w, r, d, req, src, a.ID)
	case "denied":
		m.deny(w, r, d, src, policy.Decision{Outcome: policy.Deny, Reason: "an administrator denied approval " + a.ID})
	case "expired":
		m.deny(w, r, d, src, policy.Decision{Outcome: policy.Deny, Reason: "approval " + a.ID + " passed its deadline"})
	default:
		writeError(w, http.StatusForbidden, "approval %s was already used", a.ID)
	}
}

func (m *Managed) wakeWaiters() {
	m.wakeMu.Lock()
	close(m.wake)
	m.wake = make(chan struct{})
	m.wakeMu.Unlock()
}

// randomToken returns n random bytes, base64url.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return jose.B64.EncodeToString(b)
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

// AdminConfig is what "tether admin" needs to reach the admin API: written
// 0600 to DATA/admin.json on first start.
type AdminConfig struct {
	URL   string `json:"url"`
	Pin   string `json:"pin"`
	Token string `json:"token"`
}

// startManaged is Run's hook: if managed mode is configured, it starts the
// managed listener. stop shuts it down.
func startManaged(ctx context.Context, cfg *Config, log *slog.Logger, met *tangport.Metrics, conns connlimit.Budget) (stop func(), err error) {
	mc := cfg.Managed
	if mc.Listen == "" {
		return func() {}, nil
	}
	src := mc.Store
	if src == "" {
		src = "sqlite:" + filepath.Join(cfg.DataDir, "tether.db")
	}
	kekFile := mc.KEKFile
	if kekFile == "" {
		kekFile = filepath.Join(cfg.DataDir, "kek")
	}
	// Listen before anything is created: a busy port is the likeliest
	// failure of a first start, and it should leave nothing behind.
	ln, err := net.Listen("tcp", mc.Listen)
	if err != nil {
		return nil, listenError("the managed API", mc.Listen, "--managed-listen", err)
	}
	closeLn := true
	defer func() {
		if closeLn {
			ln.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if closeLn {
			unlock()
		}
	}()
	kek, created, err := LoadOrCreateKEK(ctx, kekFile)
	if err != nil {
		return nil, err
	}
	if created {
		log.Warn("created a new key-encryption key: back it up separately from the store", "file", kekFile)
	}
	if kek.SealedBy() != "" {
		log.Info("key-encryption key unsealed", "file", kekFile, "policy", kek.SealedBy())
	}
	st, err := store.Open(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if u, ok := st.(store.Upgraded); ok {
		if from, to, up := u.SchemaUpgrade(); up {
			// Irreversible for a later migration: say so where the operator looks.
			log.Info("store schema upgraded", "from", from, "to", to)
		}
	}
	adminFile := mc.AdminFile
	if adminFile == "" {
		adminFile = filepath.Join(cfg.DataDir, "admin.json")
	}
	saved := false
	mc.SaveAdmin = func(tok string) error {
		// The pin is the stored certificate's, which NewManaged has
		// settled before it makes the token.
		pin, err := StoredPin(ctx, st)
		if err != nil {
			return err
		}
		if err := WriteAdminConfig(adminFile, AdminConfig{URL: "https://" + localAddr(ln.Addr()), Pin: pin, Token: tok}); err != nil {
			return fmt.Errorf("write admin credentials: %w", err)
		}
		saved = true
		return nil
	}
	m, adminTok, err := NewManaged(ctx, st, kek, mc, log)
	if err != nil {
		st.Close()
		if _, serr := os.Stat(kekFile + ".new"); errors.Is(err, ErrKEKMismatch) && serr == nil {
			return nil, fmt.Errorf("managed mode: %w; %s.new is there: a key-encryption key rotation was interrupted, run tether server kek rotate again to finish it", err, kekFile)
		}
		return nil, fmt.Errorf("managed mode: %w", err)
	}
	switch {
	case adminTok != "":
		log.Info("admin credentials written", "file", adminFile)
	case saved:
		// Another replica made the admin token first: ours is void.
		os.Remove(adminFile)
	default:
		if _, err := os.Stat(adminFile); errors.Is(err, os.ErrNotExist) {
			log.Warn("no admin credentials file here: copy it from where the server first started, or reissue it with tether admin reset-credentials", "file", adminFile)
		} else if w := AdminConfigModeWarning(adminFile); w != "" {
			log.Warn(w)
		}
	}
	if err := m.startUI(ctx, cfg.DataDir, cfg.Curve, log); err != nil {
		st.Close()
		return nil, err
	}
	srv := &http.Server{
		Handler:           m.Handler(),
		TLSConfig:         m.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      longPoll + 30*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("managed API listening", "url", "https://"+ln.Addr().String(), "pin", m.Pin(), "max_connections", conns.Managed)
	if mc.Ready != nil {
		mc.Ready(ln.Addr())
	}
	capped := connlimit.New(ln, "managed", conns.Managed, log)
	met.AddListener(capped)
	go srv.Serve(tls.NewListener(capped, srv.TLSConfig))
	sctx, cancelSweep := context.WithCancel(context.Background())
	go func() {
		t := time.NewTicker(m.cfg.Sweep)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				if err := m.SweepKeepAlive(sctx); err != nil && sctx.Err() == nil {
					log.Warn("keep-alive sweep failed", "err", err)
				}
			}
		}
	}()
	closeLn = false
	stop = func() {
		cancelSweep()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(c) != nil {
			srv.Close()
		}
		m.Close()
		st.Close()
		unlock()
	}
	return stop, nil
}

// localAddr turns a listener address into one to connect to: an
// unspecified host becomes loopback.
func localAddr(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	if ap.Addr().IsUnspecified() {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()).String()
	}
	return ap.String()
}

// constantTimeEqualHex compares a presented secret's hash with a stored
// hex hash.
func constantTimeEqualHex(secret, storedHex string) bool {
	h := sha256.Sum256([]byte(secret))
	want, err := hex.DecodeString(storedHex)
	return err == nil && subtle.ConstantTimeCompare(h[:], want) == 1
}
