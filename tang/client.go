package tang

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tether-nbde/tether/jose"
)

// Client talks to Tang servers. The zero value uses a default HTTP client.
type Client struct {
	HTTP *http.Client
}

// dialer connects to key servers, for net/http and the direct path alike.
var dialer = &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

var defaultHTTP = &http.Client{
	Transport: &http.Transport{
		Proxy:               nil, // a key server is never reached through a proxy
		DialContext:         dialer.DialContext,
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
//
// With the default client and a plain http:// server, the exchange takes a
// direct path (recoverDirect) that overlaps the network with the crypto.
func (c *Client) Recover(ctx context.Context, base, kid string, epk, s *jose.JWK) ([]byte, error) {
	u, err := url.Parse(strings.TrimRight(base, "/") + "/rec/" + url.PathEscape(kid))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("bad server url %q", base)
	}
	if (c == nil || c.HTTP == nil) && u.Scheme == "http" {
		return recoverDirect(ctx, u, base, epk, s)
	}
	r, err := NewRecovery(epk, s)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(r.Request)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("bad server url %q: %w", base, err)
	}
	req.Header.Set("Content-Type", "application/jwk+json")
	reply, err := c.do(req, base)
	if err != nil {
		return nil, err
	}
	return finish(r, reply, base)
}

// recoverDirect is Recover on one fresh TCP connection, without net/http's
// transport: the request is written by hand and the reply read with
// http.ReadResponse. It connects first and blinds after, so a server that
// starts a process per connection (stock tangd under systemd socket
// activation) boots while we compute, and it computes the unblinding term
// while the server works. A decrypt is one exchange, so nothing is lost by
// not pooling connections.
//
// The connection is made on the calling goroutine: a goroutine started to
// dial waits for a free thread while this one computes, which in a fresh
// process (tether decrypt) delays the connection by the whole blinding.
func recoverDirect(ctx context.Context, u *url.URL, base string, epk, s *jose.JWK) ([]byte, error) {
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, describeNetError(ctx, base, err)
	}
	defer conn.Close()
	// The context's deadline and cancellation reach the blocking reads and
	// writes through the connection's deadline.
	dl, hasDeadline := ctx.Deadline()
	if hasDeadline {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r, err := NewRecovery(epk, s)
	if err != nil {
		return nil, err
	}

	body, _ := json.Marshal(r.Request)
	req := make([]byte, 0, 256+len(body))
	req = append(req, "POST "...)
	req = append(req, u.RequestURI()...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, u.Host...)
	req = append(req, "\r\nContent-Type: application/jwk+json\r\nContent-Length: "...)
	req = strconv.AppendInt(req, int64(len(body)), 10)
	req = append(req, "\r\nConnection: close\r\n\r\n"...)
	req = append(req, body...)
	if _, err := conn.Write(req); err != nil {
		return nil, describeNetError(ctx, base, err)
	}
	_ = r.precompute() // an error here comes back from Finish
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), &http.Request{Method: http.MethodPost})
	if err != nil {
		return nil, describeNetError(ctx, base, err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, describeNetError(ctx, base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &ServerError{URL: base, Code: resp.StatusCode}
	}
	return finish(r, reply, base)
}

// finish parses the server's reply to /rec and unblinds it.
func finish(r *Recovery, reply []byte, base string) ([]byte, error) {
	var y jose.JWK
	if err := jose.UnmarshalJWK(reply, &y); err != nil {
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
	msg := fmt.Sprintf("server %s: %v", base, err)
	var op *net.OpError
	switch {
	case ctx.Err() == nil && errors.As(err, &op) && op.Op == "dial":
		// Before the timeout check: the dialer's own connect bound (a host
		// that is down) is a timeout too, but the server was never reached.
		msg = fmt.Sprintf("server %s is unreachable: %v", base, op.Err)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		msg = fmt.Sprintf("server %s did not answer in time", base)
		if !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		msg = fmt.Sprintf("request to %s canceled", base)
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			msg = fmt.Sprintf("server %s did not answer in time", base)
		}
	}
	return &NetError{URL: base, msg: msg, Err: err}
}

// NetError is a failure to reach a Tang server. It keeps the cause, so a
// caller can tell a refused connection from a name that does not resolve.
type NetError struct {
	URL string
	msg string
	Err error
}

func (e *NetError) Error() string     { return e.msg }
func (e *NetError) Unwrap() error     { return e.Err }
func (e *NetError) ServerURL() string { return e.URL }

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
