package managed

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

func init() { pin.RegisterPCRSigner("managed", pcrSignerPin{}) }

// SignerRef is a managed server that signs a device's PCR values for a
// signed tpm2 binding ("pcr_signer":"managed", docs/TPM2.md): what the
// tpm2 JWE records of it, as a managed JWE records its server.
type SignerRef struct {
	URL    string `json:"url"`
	Pin    string `json:"pin"`    // the server's TLS key pin
	Device string `json:"device"` // the device the server signs for
	State  string `json:"state,omitempty"`
}

// EnrolledPCRSigner returns the server this machine is enrolled with (in
// the state directory dir; "" = TETHER_DEVICE_DIR or DefaultDir) as a PCR
// signer, with its PCR policy key (PKIX DER).
func EnrolledPCRSigner(ctx context.Context, dir string) (*SignerRef, []byte, error) {
	id, err := LoadIdentity(stateDir(dir))
	if err != nil {
		return nil, nil, err
	}
	c, err := id.Client("")
	if err != nil {
		return nil, nil, err
	}
	key, err := c.PCRKey(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("the server's PCR policy key: %w", err)
	}
	return &SignerRef{URL: id.State.Server, Pin: id.State.Pin, Device: id.State.Device, State: dir}, key, nil
}

// ErrPCRsNotSigned is wrapped by Sign's error when the server does not
// sign the values now: they wait for an administrator, were denied, or
// the device is refused (lockdown, disabled). It may change.
var ErrPCRsNotSigned = errors.New("the server does not sign these PCR values now")

// Sign asks the server to sign values (one per PCR of pcrs, in bank). A
// revoked or unknown device's error is a pin.PermanentError: the server
// will never sign for it again.
func (s *SignerRef) Sign(ctx context.Context, bank string, pcrs []int, values [][]byte) (*PCRSignature, error) {
	id, err := LoadIdentity(stateDir(s.State))
	if err != nil {
		return nil, pin.Permanent(err)
	}
	if id.State.Device != s.Device {
		return nil, pin.Permanent(fmt.Errorf("the binding's PCR policy is signed for device %s, but this machine is enrolled as %s", s.Device, id.State.Device))
	}
	c, err := NewClient(s.URL, s.Pin, id, "")
	if err != nil {
		return nil, err
	}
	sig, err := c.SignPCRs(ctx, bank, pcrs, values)
	var se *ServerError
	switch {
	case errors.As(err, &se) && se.Gone():
		return nil, pin.Permanent(fmt.Errorf("%w: the server will never sign PCR values for device %s again; unlock with another binding", err, s.Device))
	case errors.As(err, &se) && (se.Status == http.StatusAccepted || se.Status == http.StatusForbidden):
		return nil, fmt.Errorf("%w: %w", ErrPCRsNotSigned, err)
	}
	return sig, err
}

// pcrSignerPin is the managed server as a pin.PCRSigner: its reference is
// a SignerRef as JSON.
type pcrSignerPin struct{}

func (pcrSignerPin) Enrolled(ctx context.Context) (json.RawMessage, []byte, error) {
	s, key, err := EnrolledPCRSigner(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	ref, err := json.Marshal(s)
	return ref, key, err
}

func (pcrSignerPin) Sign(ctx context.Context, ref json.RawMessage, bank string, pcrs []int, values [][]byte) ([]byte, []byte, error) {
	var s SignerRef
	if err := json.Unmarshal(ref, &s); err != nil || s.URL == "" || s.Pin == "" || s.Device == "" {
		return nil, nil, pin.Permanent(errors.New("the binding's pcr_signer_ref does not name a managed server, its pin and a device"))
	}
	rep, err := s.Sign(ctx, bank, pcrs, values)
	if err != nil {
		return nil, nil, err
	}
	policy, err := hex.DecodeString(rep.Policy)
	if err != nil {
		return nil, nil, fmt.Errorf("server %s: its policy %q is not hex", s.URL, rep.Policy)
	}
	sig, err := jose.B64.DecodeString(rep.Sig)
	if err != nil {
		return nil, nil, fmt.Errorf("server %s: its signature is not base64url", s.URL)
	}
	return policy, sig, nil
}
