package tang

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tether-nbde/tether/jose"
)

// Client talks to Tang servers. The zero value uses a default HTTP client.
type Client struct {
	HTTP *http.Client
}

var defaultHTTP = &http.Client{
	Transport: &http.Transport{
		Proxy:               nil, // a key server is never reached through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 4,
	},
}

func (c *Client) http() *http.Client {
	if c != nil && c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// maxReply bounds what we read from a server: a Tang reply is a few KiB.
const maxReply = 1 << 20

// Advertisement fetches the signed advertisement from base/adv (or
// base/adv/{thp} when thp is set, which asks the server to add a
// signature by that key, even a rotated one).
func (c *Client) Advertisement(ctx context.Context, base, thp string) ([]byte, error) {
	u := strings.TrimRight(base, "/") + "/adv"
	if thp != "" {
		u += "/" + url.PathEscape(thp)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("bad server url %q: %w", base, err)
	}
	return c.do(req, base)
}

// Recover performs the recovery exchange for a JWE's epk with the server
// exchange key s (identified by kid) and returns Z.
func (c *Client) Recover(ctx context.Context, base, kid string, epk, s *jose.JWK) ([]byte, error) {
	r, err := NewRecovery(epk, s)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(r.Request)
	u := strings.TrimRight(base, "/") + "/rec/" + url.PathEscape(kid)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("bad server url %q: %w", base, err)
	}
	req.Header.Set("Content-Type", "application/jwk+json")
	reply, err := c.do(req, base)
	if err != nil {
		return nil, err
	}
	var y jose.JWK
	if err := json.Unmarshal(reply, &y); err != nil {
		return nil, fmt.Errorf("server %s sent an invalid reply: %v", base, err)
	}
	return r.Finish(&y)
}

// ServerError is a Tang server's non-200 answer.
type ServerError struct {
	URL  string
	Code int
}

func (e *ServerError) Error() string {
	switch e.Code {
	case http.StatusNotFound:
		return fmt.Sprintf("server %s does not know the key (404): it was deleted or this is another server", e.URL)
	case http.StatusForbidden:
		return fmt.Sprintf("server %s refused the request (403)", e.URL)
	}
	return fmt.Sprintf("server %s answered %d %s", e.URL, e.Code, http.StatusText(e.Code))
}

func (c *Client) do(req *http.Request, base string) ([]byte, error) {
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, describeNetError(req.Context(), base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, describeNetError(req.Context(), base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &ServerError{URL: base, Code: resp.StatusCode}
	}
	return body, nil
}

// describeNetError turns transport errors into one line a person can act on.
func describeNetError(ctx context.Context, base string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("server %s did not answer in time", base)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("request to %s canceled", base)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("server %s is unreachable: %v", base, op.Err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("server %s did not answer in time", base)
	}
	return fmt.Errorf("server %s: %v", base, err)
}

// VerifyAdvertisement parses a signed advertisement and checks that every
// verify key it lists has signed it, as clevis does. It returns the key set
// and the verify keys.
func VerifyAdvertisement(data []byte) (*jose.KeySet, []*jose.JWK, error) {
	jws, err := jose.ParseJWS(data)
	if err != nil {
		return nil, nil, fmt.Errorf("advertisement is malformed: %w", err)
	}
	ks, err := jose.ParseKeySet(jws.Payload)
	if err != nil {
		return nil, nil, fmt.Errorf("advertisement is malformed: %w", err)
	}
	ver := ks.WithOp("verify")
	if len(ver) == 0 {
		return nil, nil, errors.New("advertisement has no verify key")
	}
	for _, k := range ver {
		if !jws.VerifiedBy(k) {
			return nil, nil, errors.New("advertisement is missing a signature by one of its verify keys")
		}
	}
	return ks, ver, nil
}
