package managed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tether-nbde/tether/jose"
)

// Client speaks the managed device API (docs/MANAGED.md) as one device:
// mutual TLS with the identity key, and the server authenticated by its
// pinned key alone (no CA, no host name: the pin came with the token).
type Client struct {
	Base string
	http *http.Client
}

// SPKIPin returns the pin of a DER SubjectPublicKeyInfo: base64url SHA-256.
func SPKIPin(spki []byte) string {
	h := sha256.Sum256(spki)
	return jose.B64.EncodeToString(h[:])
}

// ErrPin is returned when the server's TLS key does not match the pin.
var ErrPin = errors.New("the server's TLS key does not match the pinned key: wrong server, or someone is in the middle")

// handshakeCeiling bounds connecting and the TLS handshake when the
// caller's context does not.
const handshakeCeiling = 60 * time.Second

// NewClient makes a client for the server at base, pinned to pin,
// authenticating with id's key. localAddr, if set, is the source address
// to connect from (tests, multi-homed hosts).
func NewClient(base, pin string, id *Identity, localAddr string) (*Client, error) {
	cert, err := id.certificate()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// The chain is checked below against the pin instead of a CA.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || SPKIPin(cs.PeerCertificates[0].RawSubjectPublicKeyInfo) != pin {
				return ErrPin
			}
			return nil
		},
	}
	// The caller's context bounds connecting and the TLS handshake; the
	// ceilings only catch a caller without a deadline. They are not
	// short: when a whole fleet boots at once, a busy server takes a while
	// to get to each handshake, and giving up early only wastes the work
	// it did and queues the device again (docs/BENCHMARKS.md, managed storm).
	d := &net.Dialer{Timeout: handshakeCeiling, KeepAlive: 30 * time.Second}
	if localAddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localAddr)}
	}
	return &Client{
		Base: strings.TrimRight(base, "/"),
		http: &http.Client{Transport: &http.Transport{
			Proxy: nil, DialContext: d.DialContext, TLSClientConfig: cfg,
			TLSHandshakeTimeout: handshakeCeiling, ForceAttemptHTTP2: false,
		}},
	}, nil
}

// ServerError is a refusal by the server, with its status and reason.
type ServerError struct {
	Status int
	Msg    string
}

func (e *ServerError) Error() string { return e.Msg }

// Gone reports whether the server said the device can never unlock again.
func (e *ServerError) Gone() bool { return e.Status == http.StatusGone }

func (c *Client) call(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		var ve *tls.CertificateVerificationError
		if errors.Is(err, ErrPin) || errors.As(err, &ve) {
			return 0, ErrPin
		}
		return 0, fmt.Errorf("reach %s: %w", c.Base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return resp.StatusCode, &ServerError{Status: resp.StatusCode, Msg: fmt.Sprintf("server %s: %s", c.Base, e.Error)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("server %s: malformed reply: %v", c.Base, err)
		}
	}
	return resp.StatusCode, nil
}

// DeviceInfo is the server's view of the device.
type DeviceInfo struct {
	Device string    `json:"device"`
	Name   string    `json:"name"`
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Key    *jose.JWK `json:"key,omitempty"`
}

// Device fetches the device's state and public exchange key.
func (c *Client) Device(ctx context.Context) (*DeviceInfo, error) {
	var d DeviceInfo
	_, err := c.call(ctx, http.MethodGet, "/v1/device", nil, &d)
	return &d, err
}

// CloseIdle closes the client's idle connection to the server, so that it
// holds none between requests (tether agent --close).
func (c *Client) CloseIdle() { c.http.CloseIdleConnections() }

// Heartbeat tells the server the device is alive.
func (c *Client) Heartbeat(ctx context.Context) (*DeviceInfo, error) {
	var d DeviceInfo
	_, err := c.call(ctx, http.MethodPost, "/v1/heartbeat", struct{}{}, &d)
	return &d, err
}

type recRequest struct {
	Kid      string    `json:"kid"`
	X        *jose.JWK `json:"x"`
	Approval string    `json:"approval,omitempty"`
}

type recReply struct {
	Y        *jose.JWK `json:"y"`
	Approval string    `json:"approval"`
	Deadline time.Time `json:"deadline"`
}

// minPoll is the least time between two requests for a pending approval.
const minPoll = 2 * time.Second

// Rec sends the blinded point x for the exchange key kid and returns
// y = S_D·x. When the server holds the unlock for an administrator's
// approval, Rec keeps asking (each request long-polls on the server) until
// the approval is decided, its deadline passes, or ctx ends; waiting, if
// set, is told once with the approval ID and deadline.
func (c *Client) Rec(ctx context.Context, kid string, x *jose.JWK, waiting func(id string, deadline time.Time)) (*jose.JWK, error) {
	req := recRequest{Kid: kid, X: x}
	for {
		var rep recReply
		start := time.Now()
		code, err := c.call(ctx, http.MethodPost, "/v1/rec", req, &rep)
		if err != nil {
			return nil, err
		}
		if code == http.StatusAccepted && rep.Approval != "" {
			if req.Approval == "" && waiting != nil {
				waiting(rep.Approval, rep.Deadline)
			}
			req.Approval = rep.Approval
			// The server holds each request until the approval is
			// decided or a poll interval passes; one that answers at
			// once (a proxy's timeout, an older server) must not be
			// asked again in a tight loop.
			if wait := minPoll - time.Since(start); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, ctx.Err()
				case <-t.C:
				}
			}
			continue
		}
		if rep.Y == nil {
			return nil, fmt.Errorf("server %s: reply has no key", c.Base)
		}
		return rep.Y, nil
	}
}

// EnrollOptions configure Enroll.
type EnrollOptions struct {
	Server   string // managed API base URL
	Token    string // enrolment token; empty asks for a pending enrolment
	Pin      string // server pin, needed without a token (a token carries it)
	Dir      string // state directory
	Name     string // device name shown to administrators (default: host name)
	KeyStore string // "tpm", "file"; empty: "tpm" when a TPM is present, else "file"
	// LocalAddr is the source address to connect from (tests).
	LocalAddr string
}

// tokenPin returns the server pin an enrolment token carries:
// base64url(secret[32] ‖ SHA-256(server SPKI)[32]) (docs/MANAGED.md).
func tokenPin(tok string) (string, error) {
	b, err := jose.B64.DecodeString(strings.TrimSpace(tok))
	if err != nil || len(b) != 64 {
		return "", errors.New("malformed enrolment token: want 86 characters of base64url")
	}
	return jose.B64.EncodeToString(b[32:]), nil
}

// Enroll creates the device's identity key (or reuses the one already in
// Dir), enrols it with the server and writes the state file. The reply's
// State is "enabled", or "pending" until an administrator approves.
func Enroll(ctx context.Context, o EnrollOptions) (*Identity, *DeviceInfo, error) {
	pin := o.Pin
	if o.Token != "" {
		tp, err := tokenPin(o.Token)
		if err != nil {
			return nil, nil, err
		}
		if pin != "" && pin != tp {
			return nil, nil, errors.New("the token's server pin differs from --pin")
		}
		pin = tp
	}
	if pin == "" {
		return nil, nil, errors.New("without a token the server's pin is needed to authenticate it")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, nil, err
	}
	name := o.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	id, err := LoadIdentity(o.Dir)
	if err != nil {
		// New, or a key without state (an enrolment that failed half-way).
		if o.KeyStore == "" {
			o.KeyStore = defaultKeyStore()
		}
		ks, kerr := keyStore(o.KeyStore)
		if kerr != nil {
			return nil, nil, kerr
		}
		signer, lerr := ks.Load(o.Dir)
		if lerr != nil {
			if signer, err = ks.Create(o.Dir); err != nil {
				return nil, nil, err
			}
		}
		ksName := o.KeyStore
		if ksName == "" {
			ksName = "file"
		}
		id = &Identity{Dir: o.Dir, Signer: signer, State: State{KeyStore: ksName}}
	}
	if _, err := x509.MarshalPKIXPublicKey(id.Signer.Public()); err != nil {
		return nil, nil, fmt.Errorf("identity key: %w", err)
	}
	c, err := NewClient(o.Server, pin, id, o.LocalAddr)
	if err != nil {
		return nil, nil, err
	}
	var info DeviceInfo
	if _, err := c.call(ctx, http.MethodPost, "/v1/enroll", map[string]string{"token": o.Token, "name": name}, &info); err != nil {
		return nil, nil, err
	}
	id.State.Server, id.State.Pin, id.State.Device, id.State.Name = c.Base, pin, info.Device, name
	if err := id.Save(); err != nil {
		return nil, nil, fmt.Errorf("save enrolment: %w", err)
	}
	return id, &info, nil
}

// Client returns a client for the server the identity enrolled with.
func (id *Identity) Client(localAddr string) (*Client, error) {
	return NewClient(id.State.Server, id.State.Pin, id, localAddr)
}

// PCRKey fetches the server's PCR policy key (PKIX DER): what a tpm2
// binding with "pcr_signer":"managed" is sealed to.
func (c *Client) PCRKey(ctx context.Context) ([]byte, error) {
	var rep struct {
		Key string `json:"key"`
	}
	if _, err := c.call(ctx, http.MethodGet, "/v1/pcr-key", nil, &rep); err != nil {
		return nil, err
	}
	der, err := jose.B64.DecodeString(rep.Key)
	if err != nil || len(der) == 0 {
		return nil, fmt.Errorf("server %s: malformed PCR policy key", c.Base)
	}
	return der, nil
}

// PCRSignature is the server's answer to SignPCRs.
type PCRSignature struct {
	State  string `json:"state"`  // "approved" (Sig is set) or "pending"
	Policy string `json:"policy"` // hex approved policy digest of the values
	Key    string `json:"key,omitempty"`
	Sig    string `json:"sig,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// SignPCRs asks the server to sign values (in the order of pcrs) of the
// sha256 bank. A state the server does not sign (yet) is a *ServerError:
// 202 pending an administrator, 403 denied or refused, 410 revoked.
func (c *Client) SignPCRs(ctx context.Context, bank string, pcrs []int, values [][]byte) (*PCRSignature, error) {
	req := struct {
		Bank   string   `json:"bank"`
		PCRIDs string   `json:"pcr_ids"`
		Values []string `json:"values"`
	}{Bank: bank}
	ids := make([]string, len(pcrs))
	for i, p := range pcrs {
		ids[i] = strconv.Itoa(p)
		req.Values = append(req.Values, hex.EncodeToString(values[i]))
	}
	req.PCRIDs = strings.Join(ids, ",")
	var rep PCRSignature
	code, err := c.call(ctx, http.MethodPost, "/v1/pcr-sign", req, &rep)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK || rep.Sig == "" {
		msg := rep.Reason
		if msg == "" {
			msg = fmt.Sprintf("answered %d without a signature", code)
		}
		return nil, &ServerError{Status: code, Msg: fmt.Sprintf("server %s: %s", c.Base, msg)}
	}
	return &rep, nil
}
