package managed_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	managedpin "github.com/tether-nbde/tether/pin/managed"
	"github.com/tether-nbde/tether/pin/tpm2"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/server/servertest"
	"github.com/tether-nbde/tether/store"
)

// TestPCRSigner: the managed server as the signer of a signed PCR policy
// (issue 20), with real TPMs (swtpm) and the real tpm2 pin. A secret is
// sealed to PCR 23 as it is and to PCR 16 as the server signs it:
//   - binding approves the device's first values, and the secret decrypts;
//     a second set of PCRs is not approved by itself;
//   - after PCR 16 changes (an update) it does not: the new values wait for
//     an administrator, listed with the device's values; once approved it
//     decrypts again, without a reseal;
//   - the group's rule (pcr_quorum 2) approves values two devices of the
//     group reported, without an administrator;
//   - denied values, a disabled device and a revoked one get no signature
//     (revoked: for good, a permanent error);
//   - every decision is in the audit log, whose chain verifies.
func TestPCRSigner(t *testing.T) {
	sw := tpmtest.Start(t)
	t.Setenv("TETHER_TPM_TCTI", sw.TCTI)
	e := servertest.New(t, server.ManagedConfig{})
	ctx := context.Background()
	tok := func() string { return e.Token("fleet") }
	d1, d2 := e.Enroll(tok(), ""), e.Enroll(tok(), "")
	p := tpm2.Pin{TCTI: sw.TCTI}
	const cfg = `{"pcr_ids":"23","pcr_signer":"managed","pcr_signed_ids":"16"}`
	bind := func(d *servertest.Device, secret string) *jose.JWE {
		t.Helper()
		t.Setenv("TETHER_DEVICE_DIR", d.Dir)
		j, err := p.Encrypt(ctx, json.RawMessage(cfg), []byte(secret), pin.Options{})
		if err != nil {
			t.Fatalf("encrypt %s: %v", cfg, err)
		}
		if j, err = jose.ParseCompact(j.Compact()); err != nil {
			t.Fatal(err)
		}
		return j
	}
	decrypt := func(d *servertest.Device, j *jose.JWE) (string, error) {
		t.Setenv("TETHER_DEVICE_DIR", d.Dir)
		out, err := p.Decrypt(ctx, j, pin.Options{})
		return string(out), err
	}
	opens := func(when string, d *servertest.Device, j *jose.JWE, want string) {
		t.Helper()
		if got, err := decrypt(d, j); err != nil || got != want {
			t.Fatalf("%s: decrypt = %q, %v", when, got, err)
		}
	}
	refused := func(when string, d *servertest.Device, j *jose.JWE, wants ...string) error {
		t.Helper()
		got, err := decrypt(d, j)
		if err == nil {
			t.Fatalf("%s: decrypted %q, want a refusal", when, got)
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: error %q does not say %q", when, err, w)
			}
		}
		return err
	}
	states := func(d *servertest.Device, state string) []store.PCRState {
		t.Helper()
		ps, err := e.Admin.PCRStates(ctx, d.ID, state)
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}

	j1 := bind(d1, "pwenc one")
	var hdr struct {
		TPM2 struct {
			PCRPubkey  string                `json:"pcr_pubkey"`
			PCRSigner  string                `json:"pcr_signer"`
			Ref        *managedpin.SignerRef `json:"pcr_signer_ref"`
			Signatures string                `json:"pcr_signatures"`
		} `json:"tpm2"`
	}
	if err := json.Unmarshal(j1.Header.Clevis, &hdr); err != nil {
		t.Fatal(err)
	}
	if s := hdr.TPM2.Ref; hdr.TPM2.PCRSigner != "managed" || s == nil || s.Device != d1.ID || s.URL != e.URL || hdr.TPM2.PCRPubkey == "" || hdr.TPM2.Signatures != "" {
		t.Fatalf("JWE header: %+v", hdr.TPM2)
	}
	if ps := states(d1, managed.PCRApproved); len(ps) != 1 || ps[0].PCRIDs != "16" || !strings.Contains(ps[0].Reason, "first values") ||
		!strings.HasPrefix(ps[0].Values, "16=") {
		t.Fatalf("after binding: %+v", ps)
	}
	opens("bound", d1, j1, "pwenc one")
	// regen rebuilds the configuration from the JWE: the signer, not its
	// key, which the server gives again.
	c, err := p.ConfigOf(j1)
	if err != nil || !strings.Contains(string(c), `"pcr_signer":"managed"`) || strings.Contains(string(c), "pcr_pubkey") ||
		!strings.Contains(string(c), `"pcr_signed_ids":"16"`) {
		t.Fatalf("ConfigOf = %s, %v", c, err)
	}
	rebound, err := p.Encrypt(ctx, c, []byte("pwenc one"), pin.Options{})
	if err != nil {
		t.Fatalf("encrypt with ConfigOf's configuration: %v", err)
	}
	opens("rebound as regen does", d1, rebound, "pwenc one")

	// Another set of PCRs is not approved by itself: a signature allows a
	// policy digest, whatever PCRs the session built it from, so the
	// first values of, say, resettable PCR 17 would let the device's
	// software pass the policy without PCR 16.
	t.Setenv("TETHER_DEVICE_DIR", d1.Dir)
	if _, err := p.Encrypt(ctx, json.RawMessage(`{"pcr_signer":"managed","pcr_signed_ids":"17"}`), []byte("x"), pin.Options{}); err == nil ||
		!strings.Contains(err.Error(), "wait for an administrator") {
		t.Fatalf("binding to another set of PCRs: %v", err)
	}
	if odd := states(d1, "pending"); len(odd) != 1 || odd[0].PCRIDs != "17" {
		t.Fatalf("pending after binding to PCR 17: %+v", odd)
	} else if _, err := e.Admin.PCROp(ctx, d1.ID, odd[0].Policy, "deny"); err != nil {
		t.Fatal(err)
	}

	// An update: PCR 16 moves. The new values wait for an administrator.
	sw.Extend(t, "sha256", 16)
	err = refused("PCR 16 changed", d1, j1, "wait for an administrator", "tether admin pcr approve "+d1.ID)
	if !errors.Is(err, managedpin.ErrPCRsNotSigned) || pin.IsPermanent(err) {
		t.Fatalf("a pending state should be a lasting, not permanent, refusal: %v", err)
	}
	pend := states(d1, "pending")
	if len(pend) != 1 {
		t.Fatalf("pending: %+v", pend)
	}
	for ev := e.WaitHook("pcr"); ev.Device != d1.ID || !strings.Contains(ev.Reason, pend[0].Policy); ev = e.WaitHook("pcr") {
		// the PCR 17 report above came first
	}
	if _, err := e.Admin.PCROp(ctx, d1.ID, "00", "approve"); err == nil {
		t.Fatal("approving a policy the device never reported succeeded")
	}
	if _, err := e.Admin.PCROp(ctx, d1.ID, pend[0].Policy[:10], "approve"); err != nil {
		t.Fatal(err)
	}
	opens("new values approved", d1, j1, "pwenc one")

	// The group's rule: two devices of "fleet" report the same values.
	if err := e.Admin.SetGroup(ctx, "fleet", policy.Policy{PCRQuorum: 2}); err != nil {
		t.Fatal(err)
	}
	j2 := bind(d2, "pwenc two")
	opens("second device bound", d2, j2, "pwenc two")
	sw.Extend(t, "sha256", 16)
	refused("one device of two reported", d1, j1, "wait for an administrator")
	opens("the second report of the group", d2, j2, "pwenc two")
	opens("the first device, after the rule", d1, j1, "pwenc one")
	// The rule allows new values of PCRs a device is bound to, not a new
	// set of PCRs, however many devices report it.
	for _, d := range []*servertest.Device{d1, d2} {
		t.Setenv("TETHER_DEVICE_DIR", d.Dir)
		if _, err := p.Encrypt(ctx, json.RawMessage(`{"pcr_signer":"managed","pcr_signed_ids":"18"}`), []byte("x"), pin.Options{}); err == nil {
			t.Fatalf("%s bound to PCR 18 by the rule", d.ID)
		}
		for _, st := range states(d, "pending") {
			if _, err := e.Admin.PCROp(ctx, d.ID, st.Policy, "deny"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ps := states(d1, managed.PCRApproved); len(ps) != 3 || !strings.Contains(ps[2].Reason, "rule: 2 devices of group fleet") {
		t.Fatalf("approved states of %s: %+v", d1.ID, ps)
	}

	// Denied values get no signature.
	if err := e.Admin.SetGroup(ctx, "fleet", policy.Policy{}); err != nil {
		t.Fatal(err)
	}
	sw.Extend(t, "sha256", 16)
	refused("tampered", d1, j1, "wait for an administrator")
	pend = states(d1, "pending")
	if len(pend) != 1 {
		t.Fatalf("pending: %+v", pend)
	}
	if _, err := e.Admin.PCROp(ctx, d1.ID, pend[0].Policy, "deny"); err != nil {
		t.Fatal(err)
	}
	refused("denied", d1, j1, "denied")
	// Back to approved values? Not by extending: PCRs only move forward.
	// Approve the denied ones instead and disable the device.
	if _, err := e.Admin.PCROp(ctx, d1.ID, pend[0].Policy, "approve"); err != nil {
		t.Fatal(err)
	}
	opens("denial reversed", d1, j1, "pwenc one")
	if _, err := e.Admin.DeviceOp(ctx, d1.ID, "disable", "lost"); err != nil {
		t.Fatal(err)
	}
	refused("disabled", d1, j1, "refused")
	if _, err := e.Admin.DeviceOp(ctx, d1.ID, "enable", ""); err != nil {
		t.Fatal(err)
	}
	opens("enabled again", d1, j1, "pwenc one")

	// Revoked: the server never signs for the device again.
	sw.Extend(t, "sha256", 16)
	if _, err := decrypt(d2, j2); err == nil {
		t.Fatal("d2 decrypted after an unapproved change")
	}
	if pend = states(d2, "pending"); len(pend) != 1 {
		t.Fatalf("pending of d2: %+v", pend)
	}
	if _, err := e.Admin.PCROp(ctx, d2.ID, pend[0].Policy, "approve"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Admin.DeviceOp(ctx, d2.ID, "revoke", "stolen"); err != nil {
		t.Fatal(err)
	}
	err = refused("revoked", d2, j2, "never sign PCR values for device "+d2.ID)
	if !pin.IsPermanent(err) {
		t.Fatalf("a revoked device's refusal should be permanent: %v", err)
	}

	// The audit log holds every decision.
	var seen []string
	e.Admin.Audit(ctx, func(r *audit.Record) error {
		if strings.HasPrefix(r.Action, "pcr.") {
			seen = append(seen, r.Action+" "+r.Decision+" "+r.Device)
		}
		return nil
	})
	all := strings.Join(seen, "\n")
	for _, want := range []string{
		"pcr.sign allow " + d1.ID, "pcr.sign wait " + d1.ID, "pcr.approve ok " + d1.ID, "pcr.deny ok " + d1.ID,
		"pcr.sign deny " + d1.ID, "pcr.sign deny " + d2.ID,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q in the audit log:\n%s", want, all)
		}
	}
	e.VerifyAudit()
}
