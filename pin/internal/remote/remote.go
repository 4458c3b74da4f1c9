// Package remote is what the pins that fetch key material from elsewhere
// (https, smb) share: deriving the JWE key from the fetched material,
// retrying with backoff, and keeping the credentials needed to fetch it
// either in the JWE header or protected by another pin.
//
// Neither the material nor the secret it protects is ever written to disk:
// the material lives in memory only while the key is derived.
package remote

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

// MinMaterial is the least key material we accept: less is guessable.
const MinMaterial = 16

// DeriveKey derives the JWE content key from fetched material and the
// JWE's random salt (HKDF-SHA256), so that the same material bound twice
// gives unrelated keys.
func DeriveKey(pinName string, material, salt []byte) ([]byte, error) {
	if len(material) < MinMaterial {
		return nil, fmt.Errorf("key material is only %d bytes; it must be at least %d random bytes "+
			"(make one with: head -c 64 /dev/urandom > keyfile)", len(material), MinMaterial)
	}
	return hkdf.Key(sha256.New, material, salt, "tether "+pinName+" pin v1", 32)
}

// NewSalt returns a fresh random salt.
func NewSalt() []byte {
	s := make([]byte, 32)
	rand.Read(s)
	return s
}

// Permanent marks err as a refusal that retrying cannot fix (wrong
// password, file missing, certificate mismatch): Fetch does not retry it,
// and neither do the boot paths (pin.PermanentError).
func Permanent(err error) error { return pin.Permanent(err) }

// Fetch calls get until it succeeds, fails permanently, attempts run out or
// ctx ends. Each attempt gets timeout; waits between attempts double from
// 250 ms.
func Fetch(ctx context.Context, attempts int, timeout time.Duration, get func(context.Context) ([]byte, error)) ([]byte, error) {
	if attempts < 1 {
		attempts = 1
	}
	wait := 250 * time.Millisecond
	var err error
	for i := 0; i < attempts; i++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		var b []byte
		b, err = get(actx)
		cancel()
		if err == nil {
			return b, nil
		}
		if pin.IsPermanent(err) || i == attempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait *= 2
	}
	return nil, err
}

// Protect names another pin that encrypts the credentials: any pin the
// user has (tang, sss, tpm2, managed), so that a pulled disk does not
// reveal the share password or token.
type Protect struct {
	Pin    string          `json:"pin"`
	Config json.RawMessage `json:"config"`
}

// Credentials is how credentials sit in a JWE header: in the clear (Cred)
// or encrypted by another pin (CredJWE). Headers with neither are of
// bindings that need no credentials (a guest share, a public URL).
type Credentials struct {
	Cred    json.RawMessage `json:"cred,omitempty"`
	CredJWE string          `json:"cred_jwe,omitempty"`
}

// Seal says how a pin wants its credentials stored.
type Seal struct {
	Pin   string // the pin storing them: "smb"
	What  string // what they are, for messages: "the share password"
	Where string // where they are used, for the warning: `\\nas\keys`
	// Audience says where the credentials may be sent (server, share,
	// user; URL and trust anchors). It is sealed with protected
	// credentials and checked before they are used, so that whoever
	// rewrites the header cannot point the device at another server and
	// have it hand over the unlocked credentials there.
	Audience string
	// Protect is the pin that encrypts them; nil stores them in the clear
	// if AllowPlain, else refuses.
	Protect    *Protect
	AllowPlain bool
}

// Check refuses, before anything is fetched, what SealCredentials would
// refuse: a protect without a pin, or credentials in the clear that the
// configuration does not accept (a *pin.PlainCredentialsError).
func (s Seal) Check(creds any) error {
	if s.Protect != nil && s.Protect.Pin == "" {
		return errors.New(`"protect" needs "pin": the pin that encrypts the credentials, e.g. {"pin":"tang","config":{"url":...}}`)
	}
	b, err := json.Marshal(creds)
	if err != nil {
		return err
	}
	defer clear(b)
	if string(b) != "{}" && s.Protect == nil && !s.AllowPlain {
		return &pin.PlainCredentialsError{Pin: s.Pin, What: s.What}
	}
	return nil
}

// SealCredentials stores creds (a struct whose fields are all omitempty)
// encrypted with the protecting pin. In the clear they are stored only when
// the configuration accepts it, with a warning; otherwise the answer is a
// *pin.PlainCredentialsError. Empty credentials are not stored at all.
func SealCredentials(ctx context.Context, creds any, s Seal, o pin.Options) (Credentials, error) {
	if err := s.Check(creds); err != nil {
		return Credentials{}, err
	}
	b, err := json.Marshal(creds)
	if err != nil {
		return Credentials{}, err
	}
	if string(b) == "{}" {
		return Credentials{}, nil
	}
	if s.Protect == nil {
		o.Warnf("%s: %s is stored in the clear in the JWE header (\"allow_plain_credentials\"): anyone holding the disk "+
			"can read it, and use it wherever %s answers; protect it with another pin instead (docs/REMOTE-PINS.md)", s.Pin, s.What, s.Where)
		return Credentials{Cred: b}, nil
	}
	cfg := s.Protect.Config
	if len(cfg) == 0 {
		cfg = json.RawMessage("{}")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		clear(b)
		return Credentials{}, err
	}
	clear(b)
	m[audienceKey], _ = json.Marshal(s.Audience)
	b, _ = json.Marshal(m)
	for _, v := range m {
		clear(v)
	}
	j, err := pin.Encrypt(ctx, s.Protect.Pin, cfg, b, o)
	clear(b)
	if err != nil {
		return Credentials{}, fmt.Errorf("protect %s with the %s pin: %w", s.What, s.Protect.Pin, err)
	}
	return Credentials{CredJWE: j.Compact()}, nil
}

// Describe says how the credentials are kept, for pin.Describer: "" when
// there are none, else ", credentials in the clear" or ", credentials
// protected by tang(http://keys.lan)".
func (c Credentials) Describe() string {
	switch {
	case c.CredJWE != "":
		j, err := jose.ParseCompact(c.CredJWE)
		if err != nil {
			return ", credentials protected by ?"
		}
		return ", credentials protected by " + pin.Describe(j)
	case len(c.Cred) > 0 && string(c.Cred) != "{}" && string(c.Cred) != "null":
		return ", credentials in the clear"
	}
	return ""
}

// audienceKey is the member of sealed credentials that holds Seal.Audience.
const audienceKey = "aud"

// Parse checks the header's credentials without using them: cred, if
// present, is a JSON object, and cred_jwe a compact JWE of a known pin.
func (c Credentials) Parse() (*jose.JWE, error) {
	if len(c.Cred) > 0 {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(c.Cred, &m); err != nil {
			return nil, errors.New("credentials are malformed")
		}
	}
	if c.CredJWE == "" {
		return nil, nil
	}
	j, err := jose.ParseCompact(c.CredJWE)
	if err != nil {
		return nil, fmt.Errorf("protected credentials: %w", err)
	}
	if _, err := j.Header.Pin(); err != nil {
		return nil, fmt.Errorf("protected credentials: %w", err)
	}
	return j, nil
}

// Open returns the credentials into v, decrypting them if a pin protects
// them. Protected credentials sealed for another audience than this
// header's (the header was rewritten to point elsewhere) are refused
// before anything is sent; those sealed before audiences existed carry
// none and are used as they are.
func (c Credentials) Open(ctx context.Context, o pin.Options, audience string, v any) error {
	j, err := c.Parse()
	if err != nil {
		return err
	}
	raw := []byte(c.Cred)
	if j != nil {
		if raw, err = pin.Decrypt(ctx, j, o); err != nil {
			return fmt.Errorf("unlock credentials: %w", err)
		}
		defer clear(raw)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return errors.New("protected credentials are malformed")
		}
		if a, ok := m[audienceKey]; ok {
			var got string
			if json.Unmarshal(a, &got) != nil || got != audience {
				return fmt.Errorf("the credentials were sealed for %s, but the JWE header now names %s: "+
					"refusing to send them there (the header was altered; bind again)", got, audience)
			}
		}
	}
	if len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, v)
}

// ReadSecretFile reads a credential file named in a configuration (so that
// the secret never appears on a command line).
func ReadSecretFile(what, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s file: %w", what, err)
	}
	return trimNewline(string(b)), nil
}

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// Encrypt encrypts secret under a key derived from material and a fresh
// salt; header builds the pin's clevis header member given the salt.
func Encrypt(pinName string, material, secret []byte, header func(salt string) (json.RawMessage, error)) (*jose.JWE, error) {
	salt := NewSalt()
	key, err := DeriveKey(pinName, material, salt)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	ch, err := header(jose.B64.EncodeToString(salt))
	if err != nil {
		return nil, err
	}
	return jose.Encrypt(jose.Header{Alg: "dir", Clevis: ch}, key, secret)
}

// Decrypt fetches the material again, derives the key with the JWE's salt
// and decrypts j. The material is cleared as soon as the key is derived.
func Decrypt(ctx context.Context, pinName string, j *jose.JWE, salt string, fetch func(context.Context) ([]byte, error)) ([]byte, error) {
	s, err := jose.B64.DecodeString(salt)
	if err != nil || len(s) == 0 {
		return nil, fmt.Errorf("JWE header clevis.%s.salt is malformed", pinName)
	}
	material, err := fetch(ctx)
	if err != nil {
		return nil, err
	}
	key, err := DeriveKey(pinName, material, s)
	clear(material)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return j.Decrypt(key)
}
