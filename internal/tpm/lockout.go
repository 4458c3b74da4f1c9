package tpm

import (
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// DAState is the TPM's dictionary-attack protection as it stands: how
// many wrong authorisations it has counted, how many it allows, and how
// fast it forgives them. Objects sealed with a PIN are protected by it;
// objects without one (noDA, as clevis seals them) are not.
type DAState struct {
	Known    bool          // the TPM answered; the fields below are valid
	Failures int           // TPM_PT_LOCKOUT_COUNTER
	Max      int           // TPM_PT_MAX_AUTH_FAIL: failures at which the TPM locks out
	Interval time.Duration // TPM_PT_LOCKOUT_INTERVAL: one failure is forgotten per interval
	Recovery time.Duration // TPM_PT_LOCKOUT_RECOVERY: after a failed lockout-hierarchy auth
}

// DA reads the TPM's dictionary-attack properties.
func (t *TPM) DA() (DAState, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTLockoutCounter),
		PropertyCount: 4,
	}.Execute(t.tr)
	if err != nil {
		return DAState{}, fmt.Errorf("read the TPM's lockout properties: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return DAState{}, fmt.Errorf("read the TPM's lockout properties: %w", err)
	}
	var d DAState
	seen := 0
	for _, p := range props.TPMProperty {
		switch p.Property {
		case tpm2.TPMPTLockoutCounter:
			d.Failures = int(p.Value)
		case tpm2.TPMPTMaxAuthFail:
			d.Max = int(p.Value)
		case tpm2.TPMPTLockoutInterval:
			d.Interval = time.Duration(p.Value) * time.Second
		case tpm2.TPMPTLockoutRecovery:
			d.Recovery = time.Duration(p.Value) * time.Second
		default:
			continue
		}
		seen++
	}
	if seen < 4 {
		return DAState{}, fmt.Errorf("read the TPM's lockout properties: the TPM returned %d of 4", seen)
	}
	d.Known = true
	return d, nil
}

// daState is DA for error messages: unknown rather than a second error.
func (t *TPM) daState() DAState {
	d, _ := t.DA()
	return d
}

// Left is the number of wrong PINs the TPM still accepts before it locks
// out.
func (d DAState) Left() int { return max(d.Max-d.Failures, 0) }

// lockoutAdvice says how a person gets out of a lockout.
func (d DAState) lockoutAdvice() string {
	if !d.Known {
		return "wait for the TPM to forgive a failure (tpm2_getcap properties-variable shows TPM2_PT_LOCKOUT_INTERVAL, " +
			"in seconds) and try again, or have an administrator reset it with tpm2_dictionarylockout --clear-lockout"
	}
	if d.Interval == 0 {
		return "this TPM forgives failures only when reset: an administrator can run tpm2_dictionarylockout --clear-lockout " +
			"(it needs the lockout hierarchy's password, if one is set)"
	}
	return fmt.Sprintf("wait %s and try again (the TPM forgets one failure every %s it stays powered on), "+
		"or have an administrator reset it now with tpm2_dictionarylockout --clear-lockout "+
		"(it needs the lockout hierarchy's password, if one is set)", d.Interval, d.Interval)
}

// WrongPINError is returned when unsealing a secret sealed with a PIN
// fails because the PIN is wrong. The TPM counted the failure.
type WrongPINError struct{ DA DAState }

func (e *WrongPINError) Error() string {
	msg := "wrong PIN for the TPM-sealed secret"
	switch {
	case !e.DA.Known:
		return msg + "; the TPM counts wrong PINs and locks out after a few: check the PIN before trying again"
	case e.DA.Left() == 0:
		return msg + fmt.Sprintf("; that was the last try the TPM allowed (%d failures counted): it now refuses every PIN, "+
			"and every secret sealed under its owner key; %s",
			e.DA.Failures, e.DA.lockoutAdvice())
	}
	return msg + fmt.Sprintf("; the TPM allows %d more wrong PIN(s) before it locks out (it forgets one failure every %s)",
		e.DA.Left(), e.DA.Interval)
}

// LockoutError is returned when the TPM is in dictionary-attack lockout:
// too many wrong PINs (or other failed authorisations) were counted. The
// TPM then refuses every PIN without checking it, and also loading any
// sealed object under the owner primary: that key (tpm2-tools' template,
// which clevis compatibility requires) is not exempt from lockout, so
// secrets without a PIN wait too.
type LockoutError struct{ DA DAState }

func (e *LockoutError) Error() string {
	n := "too many wrong PINs or other failed authorizations"
	if e.DA.Known {
		n = fmt.Sprintf("%d wrong PINs or other failed authorizations (it allows %d)", e.DA.Failures, e.DA.Max)
	}
	return "the TPM is in dictionary-attack lockout after " + n + " (each power cut after the TPM was used counts as one: the TPM cannot tell it from an attack): " +
		"it refuses every PIN, and sealing or unsealing any secret under its owner key, until then; " + e.DA.lockoutAdvice()
}
