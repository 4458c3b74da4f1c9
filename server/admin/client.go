package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

// Client calls the admin API. It authenticates the server by the pin
// in its Credentials, and itself by the admin token.
type Client struct {
	cfg  Credentials
	http *http.Client
}

// LoadCredentials reads an admin credentials file (DATA/admin.json).
func LoadCredentials(path string) (Credentials, error) {
	var c Credentials
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if c.URL == "" || c.Pin == "" || c.Token == "" {
		return c, fmt.Errorf("%s: needs url, pin and token", path)
	}
	return c, nil
}

// NewClient returns a client for the admin API described by cfg.
func NewClient(cfg Credentials) *Client {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the pin below replaces CA verification
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || managed.SPKIPin(cs.PeerCertificates[0].RawSubjectPublicKeyInfo) != cfg.Pin {
				return errors.New("the server's TLS key does not match the pin in the admin configuration")
			}
			return nil
		},
	}
	return &Client{cfg: cfg, http: &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: tc}, Timeout: 30 * time.Second}}
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.cfg.URL, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach admin API at %s: %w", c.cfg.URL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e wire.ErrorReply
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &Error{Status: resp.StatusCode, Msg: e.Error}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Error is an error answer of the admin API.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (*TokenReply, error) {
	var r TokenReply
	return &r, c.call(ctx, http.MethodPost, "/v1/admin/tokens", req, &r)
}

func (c *Client) Devices(ctx context.Context) ([]Device, error) {
	var r []Device
	return r, c.call(ctx, http.MethodGet, "/v1/admin/devices", nil, &r)
}

// DeviceOp is approve, enable, disable or revoke.
func (c *Client) DeviceOp(ctx context.Context, id, op, reason string) (*Device, error) {
	var r Device
	return &r, c.call(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(id)+"/"+op, ChangeRequest{Reason: reason}, &r)
}

func (c *Client) SetDevicePolicy(ctx context.Context, id string, p policy.Policy) error {
	return c.call(ctx, http.MethodPut, "/v1/admin/devices/"+url.PathEscape(id)+"/policy", p, nil)
}

func (c *Client) SetGroup(ctx context.Context, name string, p policy.Policy) error {
	return c.call(ctx, http.MethodPut, "/v1/admin/groups/"+url.PathEscape(name), p, nil)
}

func (c *Client) Groups(ctx context.Context) (map[string]policy.Policy, error) {
	var r map[string]policy.Policy
	return r, c.call(ctx, http.MethodGet, "/v1/admin/groups", nil, &r)
}

func (c *Client) Lockdown(ctx context.Context, on bool) error {
	return c.call(ctx, http.MethodPut, "/v1/admin/lockdown", OnOff{On: on}, nil)
}

func (c *Client) EnrollOpen(ctx context.Context, on bool) error {
	return c.call(ctx, http.MethodPut, "/v1/admin/settings/enroll-open", OnOff{On: on}, nil)
}

func (c *Client) Approvals(ctx context.Context) ([]store.Approval, error) {
	var r []store.Approval
	return r, c.call(ctx, http.MethodGet, "/v1/admin/approvals", nil, &r)
}

// ApprovalOp is approve or deny.
func (c *Client) ApprovalOp(ctx context.Context, id, op string) (*store.Approval, error) {
	var a store.Approval
	return &a, c.call(ctx, http.MethodPost, "/v1/admin/approvals/"+url.PathEscape(id)+"/"+op, struct{}{}, &a)
}

// PCRStates lists the PCR values devices asked the server to sign
// (device, state: "" = all).
func (c *Client) PCRStates(ctx context.Context, device, state string) ([]store.PCRState, error) {
	var r []store.PCRState
	q := url.Values{}
	if device != "" {
		q.Set("device", device)
	}
	if state != "" {
		q.Set("state", state)
	}
	path := "/v1/admin/pcr-states"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return r, c.call(ctx, http.MethodGet, path, nil, &r)
}

// PCROp approves or denies (op) the PCR values with this policy digest
// (or a unique prefix) that device reported.
func (c *Client) PCROp(ctx context.Context, device, policy, op string) (*store.PCRState, error) {
	var s store.PCRState
	return &s, c.call(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(device)+"/pcr-states/"+url.PathEscape(policy)+"/"+op, struct{}{}, &s)
}

// Audit calls fn for every audit record in order, fetching in pages.
func (c *Client) Audit(ctx context.Context, fn func(*audit.Record) error) error {
	after := int64(0)
	for {
		var page []*audit.Record
		if err := c.call(ctx, http.MethodGet, fmt.Sprintf("/v1/admin/audit?after=%d&limit=1000", after), nil, &page); err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return err
			}
			after = r.Seq
		}
	}
}

// VerifyAudit fetches the whole log and checks its hash chain. It returns
// the last record's seq and hash (record them elsewhere: truncating the
// tail of the log is only detectable against a head kept elsewhere).
func (c *Client) VerifyAudit(ctx context.Context) (*audit.Chain, error) {
	ch := audit.NewChain()
	err := c.Audit(ctx, ch.Next)
	return ch, err
}
