// Package https is the "https" pin: the JWE key is derived from key
// material fetched from an HTTPS URL — a small key server, a NAS, an
// ESP32 — with the server's certificate pinned or checked against a given
// CA, and optionally a client certificate or a bearer token.
//
// Taking the material off the URL (or refusing the device's credentials)
// revokes every binding made with it. See docs/REMOTE-PINS.md for the
// format and for what a thief holding the whole device can do.
package https

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/internal/remote"
)

func init() { pin.Register("https", Pin{}) }

// Pin implements pin.Pin.
type Pin struct{}

// Config is the pin's configuration. Secrets are named by file, never
// given inline, so that they stay off command lines.
type Config struct {
	URL string `json:"url"`
	// PinSHA256 pins the server's public key: base64 of the SHA-256 of its
	// SubjectPublicKeyInfo ("sha256//" prefix allowed, as curl writes it).
	PinSHA256 string `json:"pin_sha256,omitempty"`
	CAFile    string `json:"ca_file,omitempty"`    // trust this CA (PEM) instead of the system's
	CertFile  string `json:"cert_file,omitempty"`  // client certificate (PEM)
	KeyFile   string `json:"key_file,omitempty"`   // its private key (PEM)
	TokenFile string `json:"token_file,omitempty"` // bearer token
	// Protect encrypts the client key and token with another pin; without
	// it they are stored in the clear only if AllowPlainCredentials.
	Protect               *remote.Protect `json:"protect,omitempty"`
	AllowPlainCredentials bool            `json:"allow_plain_credentials,omitempty"`
	Attempts              int             `json:"attempts,omitempty"` // default 3
}

// header is clevis.https in the JWE.
type header struct {
	URL       string `json:"url"`
	PinSHA256 string `json:"pin_sha256,omitempty"`
	CA        string `json:"ca,omitempty"` // PEM
	Salt      string `json:"salt"`
	Attempts  int    `json:"attempts,omitempty"`
	remote.Credentials
}

type clevisHeader struct {
	Pin   string `json:"pin"`
	HTTPS header `json:"https"`
}

// creds are the secrets needed to fetch the material.
type creds struct {
	Token string `json:"token,omitempty"`
	Cert  string `json:"cert,omitempty"`
	Key   string `json:"key,omitempty"`
}

// what names the credentials for messages.
func (c creds) what() string {
	switch {
	case c.Token != "" && c.Key != "":
		return "the bearer token and the client key"
	case c.Token != "":
		return "the bearer token"
	}
	return "the client key"
}

// Encrypt implements pin.Pin.
func (Pin) Encrypt(ctx context.Context, raw json.RawMessage, secret []byte, o pin.Options) (*jose.JWE, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("configuration is malformed: %v", err)
	}
	if !strings.HasPrefix(cfg.URL, "https://") {
		return nil, errors.New(`configuration needs "url" with an https:// URL`)
	}
	if cfg.PinSHA256 == "" && cfg.CAFile == "" && !o.Trust {
		return nil, errors.New(`configuration needs "pin_sha256" or "ca_file" to know the server; ` +
			`with neither, the system's CAs are trusted only if you pass -y`)
	}
	h := header{URL: cfg.URL, PinSHA256: cfg.PinSHA256, Attempts: cfg.Attempts}
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		h.CA = string(b)
	}
	var c creds
	var err error
	if c.Token, err = remote.ReadSecretFile("token", cfg.TokenFile); err != nil {
		return nil, err
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New(`"cert_file" and "key_file" go together`)
	}
	if cfg.CertFile != "" {
		if c.Cert, err = remote.ReadSecretFile("client certificate", cfg.CertFile); err != nil {
			return nil, err
		}
		if c.Key, err = remote.ReadSecretFile("client key", cfg.KeyFile); err != nil {
			return nil, err
		}
	}
	seal := remote.Seal{Pin: "https", What: c.what(), Where: h.URL, Audience: h.audience(), Protect: cfg.Protect, AllowPlain: cfg.AllowPlainCredentials}
	// Refuse before the share or server is asked anything.
	if err := seal.Check(c); err != nil {
		return nil, err
	}
	material, err := fetch(ctx, &h, c, o)
	if err != nil {
		return nil, err
	}
	defer clear(material)
	if h.Credentials, err = remote.SealCredentials(ctx, c, seal, o); err != nil {
		return nil, err
	}
	return remote.Encrypt("https", material, secret, func(salt string) (json.RawMessage, error) {
		h.Salt = salt
		return json.Marshal(clevisHeader{Pin: "https", HTTPS: h})
	})
}

// audience is where the token and client key may be sent: the URL and
// what the server is trusted by (docs/REMOTE-PINS.md).
func (h *header) audience() string {
	ca := sha256.Sum256([]byte(h.CA))
	b, _ := json.Marshal(struct {
		URL       string `json:"url"`
		PinSHA256 string `json:"pin_sha256,omitempty"`
		CA        string `json:"ca_sha256,omitempty"`
	}{h.URL, h.PinSHA256, base64.StdEncoding.EncodeToString(ca[:])})
	return string(b)
}

// parseHeader reads clevis.https from a JWE header, which comes from a
// disk and is not trusted.
func parseHeader(clevis json.RawMessage) (*header, error) {
	var ch clevisHeader
	if err := json.Unmarshal(clevis, &ch); err != nil || !strings.HasPrefix(ch.HTTPS.URL, "https://") {
		return nil, errors.New("JWE header clevis.https is malformed")
	}
	if _, err := ch.HTTPS.Credentials.Parse(); err != nil {
		return nil, fmt.Errorf("JWE header clevis.https: %w", err)
	}
	return &ch.HTTPS, nil
}

// Decrypt implements pin.Pin.
func (Pin) Decrypt(ctx context.Context, j *jose.JWE, o pin.Options) ([]byte, error) {
	h, err := parseHeader(j.Header.Clevis)
	if err != nil {
		return nil, err
	}
	var c creds
	if err := h.Credentials.Open(ctx, o, h.audience(), &c); err != nil {
		return nil, err
	}
	return remote.Decrypt(ctx, "https", j, h.Salt, func(ctx context.Context) ([]byte, error) { return fetch(ctx, h, c, o) })
}

// Describe implements pin.Describer.
func (Pin) Describe(j *jose.JWE) string {
	h, err := parseHeader(j.Header.Clevis)
	if err != nil {
		return "https(?)"
	}
	return "https(" + h.URL + h.Credentials.Describe() + ")"
}

// maxMaterial bounds the fetched key material.
const maxMaterial = 64 << 10

func fetch(ctx context.Context, h *header, c creds, o pin.Options) ([]byte, error) {
	client, err := newClient(h, c)
	if err != nil {
		return nil, err
	}
	defer client.CloseIdleConnections()
	attempts := h.Attempts
	if attempts == 0 {
		attempts = 3
	}
	return remote.Fetch(ctx, attempts, o.PerTry(), func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
		if err != nil {
			return nil, remote.Permanent(fmt.Errorf("bad url %q: %v", h.URL, err))
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, describe(ctx, h.URL, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxMaterial+1))
		if err != nil {
			return nil, fmt.Errorf("read key material from %s: %v", h.URL, err)
		}
		switch {
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return nil, remote.Permanent(fmt.Errorf("%s refused the credentials (%d): the token or client certificate is wrong or was revoked", h.URL, resp.StatusCode))
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
			return nil, remote.Permanent(fmt.Errorf("%s has no key material (%d): it was removed, so this binding is revoked", h.URL, resp.StatusCode))
		case resp.StatusCode != http.StatusOK:
			return nil, fmt.Errorf("%s answered %d %s", h.URL, resp.StatusCode, http.StatusText(resp.StatusCode))
		case len(body) > maxMaterial:
			return nil, remote.Permanent(fmt.Errorf("%s sent more than %d KiB of key material", h.URL, maxMaterial>>10))
		}
		return bytes.Clone(body), nil
	})
}

func describe(ctx context.Context, url string, err error) error {
	var ce *certError
	if errors.As(err, &ce) {
		return remote.Permanent(ce)
	}
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	if errors.As(err, &uerr) || errors.As(err, &herr) {
		return remote.Permanent(fmt.Errorf("%s: server certificate not trusted: %v", url, err))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s did not answer in time", url)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("%s is unreachable: %v", url, op.Err)
	}
	return fmt.Errorf("%s: %v", url, err)
}

type certError struct{ url, got string }

func (e *certError) Error() string {
	return fmt.Sprintf("%s: server certificate does not match the pinned key (server presents sha256//%s)", e.url, e.got)
}

// newClient builds an HTTP client that trusts exactly what the header says.
func newClient(h *header, c creds) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if h.CA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(h.CA)) {
			return nil, errors.New("ca: no PEM certificate found")
		}
		tc.RootCAs = pool
	}
	if h.PinSHA256 != "" {
		want := strings.TrimPrefix(h.PinSHA256, "sha256//")
		// The pin replaces chain validation: the key is what we trust.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &certError{url: h.URL, got: "nothing"}
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			got := base64.StdEncoding.EncodeToString(sum[:])
			if got != want {
				return &certError{url: h.URL, got: got}
			}
			return nil
		}
	}
	if c.Cert != "" {
		cert, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
		if err != nil {
			return nil, fmt.Errorf("client certificate: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     tc,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
	}}, nil
}

// SPKIPin returns the pin_sha256 value for a certificate (PEM or DER),
// for documentation and tests.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
