// Package managed is the "managed" pin: like tang, a secret whose key only
// a key server's cooperation recovers (McCallum-Relyea, blinded: the server
// never sees the JWE's epk or the key), but the server is tether in managed
// mode and the exchange key belongs to this one device. Every request is
// mutual TLS with the device's identity key, so the server decides per
// device (enabled, networks, keep-alive, approval, lockdown) and audits;
// revoking the device destroys its exchange key and with it every JWE
// bound to it.
//
// The device must be enrolled first (tether enroll); the pin reads the
// enrolment from the state directory: the "state" member of the
// configuration, else $TETHER_DEVICE_DIR, else /etc/tether/device.
package managed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	tangproto "github.com/tether-nbde/tether/tang"
)

func init() { pin.Register("managed", Pin{}) }

// Config is the pin's configuration; every field is optional.
type Config struct {
	State string `json:"state,omitempty"` // the device's state directory
}

// header is clevis.managed in the JWE protected header.
type header struct {
	URL    string    `json:"url"`
	Pin    string    `json:"pin"`    // server TLS key pin
	Device string    `json:"device"` // device ID the key belongs to
	Key    *jose.JWK `json:"key"`    // the device's public exchange key s_D
	State  string    `json:"state,omitempty"`
}

type clevisHeader struct {
	Pin     string `json:"pin"`
	Managed header `json:"managed"`
}

// Pin implements pin.Pin.
type Pin struct {
	// LocalAddr is the source address to connect from (tests).
	LocalAddr string
}

// stateDir is the device state directory: the one the configuration (and
// so the JWE) names, else $TETHER_DEVICE_DIR, else DefaultDir. An explicit
// directory wins so that an sss policy over several enrolments (one state
// directory each) finds each child's own identity.
func stateDir(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if d := os.Getenv("TETHER_DEVICE_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

// Encrypt implements pin.Pin: it fetches the device's exchange key over
// the authenticated channel and binds to it exactly as tang does.
func (p Pin) Encrypt(ctx context.Context, raw json.RawMessage, secret []byte, o pin.Options) (*jose.JWE, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("configuration is malformed: %v", err)
	}
	id, err := LoadIdentity(stateDir(cfg.State))
	if err != nil {
		return nil, err
	}
	c, err := id.Client(p.LocalAddr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.PerTry())
	defer cancel()
	info, err := c.Device(ctx)
	if err != nil {
		return nil, err
	}
	if info.Key == nil {
		return nil, fmt.Errorf("server gave no exchange key for device %s (state %s)", info.Device, info.State)
	}
	if err := info.Key.Validate(); err != nil {
		return nil, fmt.Errorf("server exchange key: %w", err)
	}
	return seal(header{URL: id.State.Server, Pin: id.State.Pin, Device: info.Device, Key: info.Key, State: cfg.State}, secret)
}

// seal binds secret to the device's exchange key hdr.Key exactly as tang
// binds to a tang key; the rest of hdr names the server and the device.
func seal(hdr header, secret []byte) (*jose.JWE, error) {
	kid, err := hdr.Key.Thumbprint("S256")
	if err != nil {
		return nil, err
	}
	epk, z, err := tangproto.Bind(hdr.Key)
	if err != nil {
		return nil, err
	}
	defer clear(z)
	ch, _ := json.Marshal(clevisHeader{Pin: "managed", Managed: hdr})
	h := jose.Header{Alg: "ECDH-ES", Clevis: ch, Epk: epk, Kid: kid}
	return jose.Encrypt(h, jose.ConcatKDF(z, "A256GCM"), secret)
}

func parse(j *jose.JWE) (*header, error) {
	if j.Header.Alg != "ECDH-ES" {
		return nil, fmt.Errorf("JWE alg is %q, want ECDH-ES", j.Header.Alg)
	}
	var ch clevisHeader
	if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil {
		return nil, fmt.Errorf("JWE header clevis.managed is malformed: %v", err)
	}
	h := &ch.Managed
	switch {
	case j.Header.Epk == nil:
		return nil, errors.New("JWE is missing the required epk header")
	case h.Key == nil || h.Device == "" || h.URL == "" || h.Pin == "":
		return nil, errors.New("JWE header clevis.managed needs url, pin, device and key")
	}
	if err := h.Key.Validate(); err != nil {
		return nil, err
	}
	if !h.Key.MatchesThumbprint(j.Header.Kid) {
		return nil, errors.New("JWE kid does not match clevis.managed.key")
	}
	return h, nil
}

// Decrypt implements pin.Pin. The refusals that cannot change are
// pin.PermanentErrors: a revoked or unknown device (410), an exchange key
// the server does not hold for it (404), a JWE made for another
// enrolment, a machine that is not enrolled. A lockdown, a pending or
// disabled device (403) and an unreachable server are not: an
// administrator may act, the network may come.
func (p Pin) Decrypt(ctx context.Context, j *jose.JWE, o pin.Options) ([]byte, error) {
	h, err := parse(j)
	if err != nil {
		return nil, pin.Permanent(err)
	}
	dir := stateDir(h.State)
	id, err := LoadIdentity(dir)
	if err != nil {
		// No enrolment here does not come by itself at boot.
		return nil, pin.Permanent(err)
	}
	if id.State.Device != h.Device {
		return nil, pin.Permanent(fmt.Errorf("the JWE is bound to device %s, but this machine (%s) is enrolled as %s: if %s was this machine before it was revoked, its key is destroyed and the JWE can never be decrypted (rebind with another unlock method); otherwise decrypt it on the machine enrolled as %s",
			h.Device, dir, id.State.Device, h.Device, h.Device))
	}
	// The JWE names the server; the pin in the JWE (made when the device
	// was enrolled) authenticates it.
	c, err := NewClient(h.URL, h.Pin, id, p.LocalAddr)
	if err != nil {
		return nil, err
	}
	rec, err := tangproto.NewRecovery(j.Header.Epk, h.Key)
	if err != nil {
		return nil, err
	}
	// An unlock may wait for an administrator's approval, far longer
	// than one exchange: the per-try timeout bounds each request, the
	// server's approval deadline bounds the whole.
	y, err := c.Rec(ctx, j.Header.Kid, rec.Request, nil)
	var se *ServerError
	switch {
	case errors.As(err, &se) && se.Gone():
		return nil, pin.Permanent(fmt.Errorf("%w: device %s can never unlock this binding again; unlock with a passphrase or another binding, enrol again (tether enroll) and bind anew", err, h.Device))
	case errors.As(err, &se) && se.Status == http.StatusNotFound:
		return nil, pin.Permanent(fmt.Errorf("%w: the server no longer holds the key this binding was made with; unlock with a passphrase or another binding and bind again", err))
	case err != nil:
		return nil, err
	}
	z, err := rec.Finish(y)
	if err != nil {
		return nil, err
	}
	defer clear(z)
	return j.Decrypt(jose.ConcatKDF(z, "A256GCM"))
}

// Describe implements pin.Describer.
func (Pin) Describe(j *jose.JWE) string {
	if h, err := parse(j); err == nil {
		return "managed(" + h.URL + ", " + h.Device + ")"
	}
	return "managed(?)"
}
