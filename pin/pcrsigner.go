package pin

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// A PCRSigner holds the key of a signed PCR policy for a tpm2 binding and
// signs PCR values when asked: the managed server ("pcr_signer":"managed",
// registered by pin/managed). The tpm2 pin finds it here by name, so that
// neither pin imports the other.
type PCRSigner interface {
	// Enrolled returns this machine's signer as a tpm2 JWE records it
	// (ref, JSON: which server, for which device) and the policy key it
	// signs with (PKIX DER).
	Enrolled(ctx context.Context) (ref json.RawMessage, key []byte, err error)
	// Sign asks the signer ref names to sign values (one per PCR of pcrs,
	// in bank) and returns the approved policy digest and the ASN.1 DER
	// ECDSA signature of it. A refusal that cannot change (a revoked
	// device) is a PermanentError.
	Sign(ctx context.Context, ref json.RawMessage, bank string, pcrs []int, values [][]byte) (policy, sig []byte, err error)
}

var (
	signerMu   sync.RWMutex
	pcrSigners = map[string]PCRSigner{}
)

// RegisterPCRSigner makes a PCR signer available by name; called from the
// init function of the package that implements it.
func RegisterPCRSigner(name string, s PCRSigner) {
	signerMu.Lock()
	defer signerMu.Unlock()
	if _, dup := pcrSigners[name]; dup {
		panic("pin: duplicate registration of PCR signer " + name)
	}
	pcrSigners[name] = s
}

// LookupPCRSigner returns the PCR signer registered as name.
func LookupPCRSigner(name string) (PCRSigner, error) {
	signerMu.RLock()
	defer signerMu.RUnlock()
	s, ok := pcrSigners[name]
	if !ok {
		return nil, fmt.Errorf("unknown PCR signer %q (the one there is: \"managed\")", name)
	}
	return s, nil
}
