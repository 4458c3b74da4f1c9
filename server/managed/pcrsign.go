package managed

// The managed server as the signer of signed PCR policies (docs/TPM2.md,
// "The managed server as the signer"). A device seals a secret to the
// server's PCR policy key (TPM2_PolicyAuthorize); at every unseal it
// reports the current values of the signed PCRs and the server signs them
// if they are approved for that device:
//
//   - a device's first values are approved when it first asks (that is
//     when it binds: trust on first use, as a reseal would be). Only the
//     very first: a signature approves a policy digest, whatever PCRs the
//     TPM session built it from, so a second set of PCRs (say 16, which
//     software can reset) approved by itself would let the device's
//     software satisfy the policy without the PCRs it was bound to;
//   - values its group's rule allows (policy "pcr_quorum": N devices of
//     the group reported the same values) are approved by the rule, for a
//     set of PCRs the device already has approved values of;
//   - anything else waits for an administrator (tether admin pcr approve).
//
// Every decision is in the audit log. The device keeps no signature: it
// asks at every unseal, so a revoked or disabled device (or a lockdown)
// gets none, and its signed tpm2 bindings stop unsealing.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/store"
)

// pcrKeySetting holds the PCR policy key, wrapped under the KEK (base64 of
// the wrapped PKCS #8 DER); one setting, so every replica signs with the
// same key.
const (
	pcrKeySetting = "managed.pcr-key"
	pcrKeyPurpose = "pcr-policy-key"
)

// PCR state values (store.PCRState.State).
const (
	PCRPending  = "pending"
	PCRApproved = "approved"
	PCRDenied   = "denied"
)

// pcrKey returns the PCR policy signing key, generating it on first use.
func (m *Server) pcrKey(ctx context.Context) (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	wrapped, err := m.kek.Wrap(pcrKeyPurpose, p8)
	clear(p8)
	if err != nil {
		return nil, err
	}
	val, err := m.st.InitSetting(ctx, pcrKeySetting, base64.StdEncoding.EncodeToString(wrapped))
	if err != nil {
		return nil, fmt.Errorf("store the PCR policy key: %w", err)
	}
	w, err := base64.StdEncoding.DecodeString(val)
	if err != nil {
		return nil, errors.New("stored PCR policy key is malformed")
	}
	p8, err = m.kek.Unwrap(pcrKeyPurpose, w)
	if err != nil {
		return nil, err
	}
	defer clear(p8)
	k, err := x509.ParsePKCS8PrivateKey(p8)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("stored PCR policy key is not an ECDSA key")
	}
	return ek, nil
}

// rewrapPCRKey rewraps the stored PCR policy key (tether server kek rotate).
func rewrapPCRKey(setting string, old, fresh *KEK) (string, error) {
	w, err := base64.StdEncoding.DecodeString(setting)
	if err != nil {
		return "", errors.New("stored PCR policy key is malformed")
	}
	p8, err := old.Unwrap(pcrKeyPurpose, w)
	if err != nil {
		return "", err
	}
	defer clear(p8)
	nw, err := fresh.Wrap(pcrKeyPurpose, p8)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(nw), nil
}

// Wire types of the PCR signer (docs/MANAGED.md).
type pcrKeyReply struct {
	Key string `json:"key"` // base64url PKIX DER of the P-256 public key
}

type pcrSignRequest struct {
	Bank   string   `json:"bank"`
	PCRIDs string   `json:"pcr_ids"`
	Values []string `json:"values"` // hex, in the order of pcr_ids
}

type pcrSignReply struct {
	State  string `json:"state"`  // approved (with a signature) or pending
	Policy string `json:"policy"` // hex approved policy digest of the values
	Key    string `json:"key,omitempty"`
	Sig    string `json:"sig,omitempty"` // base64url ASN.1 DER ECDSA over SHA-256(policy)
	Reason string `json:"reason,omitempty"`
}

func (m *Server) handlePCRKey(w http.ResponseWriter, r *http.Request) {
	if d := m.authDevice(w, r, "pcr.key"); d == nil {
		return
	}
	k, err := m.pcrKey(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "PCR policy key: %v", err)
		return
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	wire.WriteJSON(w, http.StatusOK, pcrKeyReply{Key: jose.B64.EncodeToString(der)})
}

// parsePCRSign checks a request and computes the approved policy digest
// of its values.
func parsePCRSign(req *pcrSignRequest) (pcrs []int, values string, digest []byte, err error) {
	if req.Bank != "sha256" {
		return nil, "", nil, fmt.Errorf("bank %q: signed PCR policies use sha256", req.Bank)
	}
	pcrs, err = tpm.ParsePCRs(req.PCRIDs)
	if err != nil || len(pcrs) == 0 {
		return nil, "", nil, fmt.Errorf("bad pcr_ids %q", req.PCRIDs)
	}
	if len(req.Values) != len(pcrs) {
		return nil, "", nil, fmt.Errorf("%d values for %d PCRs", len(req.Values), len(pcrs))
	}
	raw := make([][]byte, len(pcrs))
	shown := make([]string, len(pcrs))
	for i, v := range req.Values {
		if raw[i], err = hex.DecodeString(v); err != nil || len(raw[i]) != 32 {
			return nil, "", nil, fmt.Errorf("value of PCR %d is not 32 bytes of hex", pcrs[i])
		}
		shown[i] = fmt.Sprintf("%d=%x", pcrs[i], raw[i])
	}
	digest, err = tpm.PolicyPCRDigest("sha256", req.Bank, pcrs, raw)
	return pcrs, strings.Join(shown, ","), digest, err
}

func (m *Server) handlePCRSign(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := m.authDevice(w, r, "pcr.sign")
	if d == nil {
		return
	}
	var req pcrSignRequest
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	pcrs, values, digest, err := parsePCRSign(&req)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	src := wire.Source(r)
	// The device's checks as for an unlock (lockdown, state, keep-alive,
	// source networks, rate); an unlock approval does not apply: new PCR
	// values have their own.
	dec, err := m.decide(ctx, d, src)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "policy: %v", err)
		return
	}
	if dec.Outcome == policy.Deny {
		m.Record(ctx, &audit.Record{Action: "pcr.sign", Device: d.ID, Source: src.String(), Decision: audit.Deny, Reason: dec.Reason})
		code := http.StatusForbidden
		if dec.Gone {
			code = http.StatusGone
		}
		wire.WriteError(w, code, "PCR signature refused: %s", dec.Reason)
		return
	}
	ids := tpm.FormatPCRs(pcrs)
	st, created, err := m.reportPCRs(ctx, d, ids, values, hex.EncodeToString(digest))
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	rec := &audit.Record{Action: "pcr.sign", Device: d.ID, Source: src.String()}
	switch st.State {
	case PCRApproved:
		rec.Decision, rec.Reason = audit.Allow, "signed sha256 PCRs "+ids+" policy "+st.Policy
		if created {
			rec.Reason += " (approved: " + st.Reason + ")"
		}
	case PCRDenied:
		rec.Decision, rec.Reason = audit.Deny, "sha256 PCRs "+ids+" policy "+st.Policy+" was denied by an administrator"
	default:
		rec.Decision, rec.Reason = audit.Wait, "sha256 PCRs "+ids+" policy "+st.Policy+" waits for an administrator: "+values
	}
	if err := m.Record(ctx, rec); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	switch st.State {
	case PCRApproved:
		k, err := m.pcrKey(ctx)
		if err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "PCR policy key: %v", err)
			return
		}
		sig, err := tpm.SignPolicy(k, digest)
		if err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "sign: %v", err)
			return
		}
		m.st.Touch(ctx, d.ID, m.now())
		wire.WriteJSON(w, http.StatusOK, pcrSignReply{State: PCRApproved, Policy: st.Policy,
			Key: jose.B64.EncodeToString(tpm.PolicyKey{PublicKey: &k.PublicKey}.ID()), Sig: jose.B64.EncodeToString(sig), Reason: st.Reason})
	case PCRDenied:
		wire.WriteError(w, http.StatusForbidden, "an administrator denied these values of sha256 PCRs %s (policy %s) for device %s", ids, st.Policy, d.ID)
	default:
		if created {
			// Once per new values, not at every retry of a booting device.
			m.hooks.send(Event{Event: "pcr", Device: d.ID, Name: d.Name, Source: rec.Source, Reason: rec.Reason}, rec)
		}
		wire.WriteJSON(w, http.StatusAccepted, pcrSignReply{State: PCRPending, Policy: st.Policy,
			Reason: fmt.Sprintf("new values of sha256 PCRs %s (policy %s) wait for an administrator: tether admin pcr approve %s %s", ids, st.Policy, d.ID, st.Policy)})
	}
}

// reportPCRs records the values a device reported and decides them if
// they are new: the device's first values, or the group's quorum rule.
// created says the state is new (first reported, or approved by the rule,
// now).
func (m *Server) reportPCRs(ctx context.Context, d *policy.Device, ids, values, digest string) (*store.PCRState, bool, error) {
	now := m.now()
	r := &store.PCRState{Device: d.ID, Bank: "sha256", PCRIDs: ids, Policy: digest, Values: values, State: PCRPending, Created: now}
	knownDevice, err := m.st.HasApprovedPCRState(ctx, d.ID, "", "")
	if err != nil {
		return nil, false, err
	}
	if !knownDevice {
		r.State, r.Reason, r.Decided = PCRApproved, "the device's first values", now
	}
	st, created, err := m.st.ReportPCRState(ctx, r)
	if err != nil || st.State != PCRPending || d.Group == "" {
		return st, created, err
	}
	// The rule allows new values of the PCRs the device is bound to, not
	// a new set of PCRs.
	known, err := m.st.HasApprovedPCRState(ctx, d.ID, st.Bank, st.PCRIDs)
	if err != nil || !known {
		return st, created, err
	}
	// The group's rule: values that enough devices of the group reported
	// are what an update brought, not one machine's tampering.
	gp, err := m.st.Group(ctx, d.Group)
	if errors.Is(err, store.ErrNotFound) {
		return st, created, nil
	}
	if err != nil {
		return nil, false, err
	}
	q := policy.Effective(gp, d.Policy).PCRQuorum
	if q <= 0 {
		return st, created, nil
	}
	n, err := m.st.PCRStateDevices(ctx, d.Group, st.Bank, st.PCRIDs, st.Policy)
	if err != nil || n < q {
		return st, created, err
	}
	st.State, st.Decided = PCRApproved, now
	st.Reason = fmt.Sprintf("rule: %d devices of group %s reported these values (pcr_quorum %d)", n, d.Group, q)
	return st, true, m.st.DecidePCRState(ctx, st)
}

// PCRStates lists the PCR values devices reported (device "" = all;
// state "" = every state).
func (m *Server) PCRStates(ctx context.Context, device, state string) ([]*store.PCRState, error) {
	return m.st.PCRStates(ctx, device, state)
}

// DecidePCRs approves or denies values a device reported (op "approve" or
// "deny"), by their policy digest (hex, or a unique prefix of it). The
// caller records the decision in the audit log (the admin API, which
// knows who decided).
func (m *Server) DecidePCRs(ctx context.Context, device, digest, op string) (*store.PCRState, error) {
	state := map[string]string{"approve": PCRApproved, "deny": PCRDenied}[op]
	if state == "" {
		return nil, fmt.Errorf("unknown operation %q (approve, deny)", op)
	}
	all, err := m.st.PCRStates(ctx, device, "")
	if err != nil {
		return nil, err
	}
	var found []*store.PCRState
	for _, s := range all {
		if digest != "" && strings.HasPrefix(s.Policy, strings.ToLower(digest)) {
			found = append(found, s)
		}
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("%w: device %s reported no PCR values with policy %q (tether admin pcr list)", store.ErrNotFound, device, digest)
	case len(found) > 1:
		return nil, fmt.Errorf("policy %q names %d reports of device %s: give more of it", digest, len(found), device)
	}
	st := found[0]
	st.State, st.Decided, st.Reason = state, m.now(), "an administrator"
	return st, m.st.DecidePCRState(ctx, st)
}
