// Package tang is the "tang" pin: a secret encrypted with a key that only
// a Tang server's cooperation can recover (McCallum-Relyea exchange). Its
// JWE format is Clevis's, so clevis and tether decrypt each other's JWEs.
package tang

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	tangproto "github.com/tether-nbde/tether/tang"
)

func init() { pin.Register("tang", Pin{}) }

// Config is the pin's configuration, as clevis takes it.
type Config struct {
	URL string `json:"url"`
	// Thp is the thumbprint of a trusted signing key (S256 or S1 and the
	// other Tang hashes), or "any" to accept whatever signed.
	Thp string `json:"thp,omitempty"`
	// Adv is a trusted advertisement: a file name, or the JWS itself.
	Adv json.RawMessage `json:"adv,omitempty"`
}

// header is clevis.tang in the JWE protected header.
type header struct {
	Adv *jose.KeySet `json:"adv"`
	URL string       `json:"url"`
}

type clevisHeader struct {
	Pin  string `json:"pin"`
	Tang header `json:"tang"`
}

// Pin implements pin.Pin.
type Pin struct {
	Client *tangproto.Client
}

// UntrustedError is returned when no thumbprint, advertisement or -y says
// which signing keys to trust. It lists the keys so a person can check them.
type UntrustedError struct {
	URL         string
	Thumbprints []string
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("advertisement of %s is not trusted: it is signed by %s; "+
		"check the thumbprint on the server (tether server keys list, or tang-show-keys; tether adv URL prints the line to bind with) "+
		"and pass it as \"thp\" in the config, or use -y to trust it blindly",
		e.URL, strings.Join(e.Thumbprints, ", "))
}

// Encrypt implements pin.Pin.
func (p Pin) Encrypt(ctx context.Context, raw json.RawMessage, secret []byte, o pin.Options) (*jose.JWE, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("configuration is malformed: %v", err)
	}
	if cfg.URL == "" {
		return nil, errors.New(`configuration is missing the required "url" property`)
	}
	advData, fromConfig, err := p.advertisement(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	ks, ver, err := tangproto.VerifyAdvertisement(advData)
	if err != nil {
		return nil, err
	}
	thp := cfg.Thp
	if thp == "" && fromConfig {
		thp = "any"
	}
	if !o.Trust {
		switch thp {
		case "any":
		case "":
			var tps []string
			for _, k := range ver {
				tp, _ := k.Thumbprint("S256")
				tps = append(tps, tp)
			}
			return nil, &UntrustedError{URL: cfg.URL, Thumbprints: tps}
		default:
			ok := false
			for _, k := range ver {
				ok = ok || k.MatchesThumbprint(thp)
			}
			if !ok {
				return nil, fmt.Errorf("trusted key %s did not sign the advertisement of %s", thp, cfg.URL)
			}
		}
	}
	exc := ks.WithOp("deriveKey")
	if len(exc) == 0 {
		return nil, fmt.Errorf("advertisement of %s has no exchange key", cfg.URL)
	}
	srv := exc[0]
	kid, err := srv.Thumbprint("S256")
	if err != nil {
		return nil, err
	}
	epk, z, err := tangproto.Bind(srv)
	if err != nil {
		return nil, err
	}
	ch, _ := json.Marshal(clevisHeader{Pin: "tang", Tang: header{Adv: ks, URL: cfg.URL}})
	h := jose.Header{Alg: "ECDH-ES", Clevis: ch, Epk: epk, Kid: kid}
	return jose.Encrypt(h, jose.ConcatKDF(z, "A256GCM"), secret)
}

// advertisement returns the advertisement to trust, and whether it came from
// the configuration (which makes it trusted).
func (p Pin) advertisement(ctx context.Context, cfg Config, o pin.Options) ([]byte, bool, error) {
	if len(cfg.Adv) > 0 && string(cfg.Adv) != "null" {
		var file string
		if json.Unmarshal(cfg.Adv, &file) == nil {
			data, err := os.ReadFile(file)
			if err != nil {
				return nil, false, fmt.Errorf("read advertisement file: %w", err)
			}
			return data, true, nil
		}
		return cfg.Adv, true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, o.PerTry())
	defer cancel()
	thp := cfg.Thp
	if thp == "any" {
		thp = ""
	}
	data, err := p.Client.Advertisement(ctx, cfg.URL, thp)
	var se *tangproto.ServerError
	if thp != "" && errors.As(err, &se) && se.Code == http.StatusNotFound {
		// /adv/{thp} is 404 when no signing key has that thumbprint.
		return nil, false, fmt.Errorf("trusted key %s is not a signing key of %s: check \"thp\" (tether server keys list, or jose jwk thp on the server)", thp, cfg.URL)
	}
	if err != nil {
		return nil, false, fmt.Errorf("fetch advertisement: %w", err)
	}
	return data, false, nil
}

// Decrypt implements pin.Pin.
func (p Pin) Decrypt(ctx context.Context, j *jose.JWE, o pin.Options) ([]byte, error) {
	h, srv, err := parse(j)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.PerTry())
	defer cancel()
	z, err := p.Client.Recover(ctx, h.URL, j.Header.Kid, j.Header.Epk, srv)
	if err != nil {
		return nil, err
	}
	return j.Decrypt(jose.ConcatKDF(z, "A256GCM"))
}

// parse checks a tang JWE's header and returns it with the server exchange
// key the kid names.
func parse(j *jose.JWE) (*header, *jose.JWK, error) {
	if j.Header.Alg != "ECDH-ES" {
		return nil, nil, fmt.Errorf("JWE alg is %q, want ECDH-ES", j.Header.Alg)
	}
	ch, err := parseClevis(j.Header.Clevis)
	if err != nil {
		return nil, nil, fmt.Errorf("JWE header clevis.tang is malformed: %v", err)
	}
	h := &ch.Tang
	switch {
	case j.Header.Epk == nil:
		return nil, nil, errors.New("JWE is missing the required epk header")
	case j.Header.Kid == "":
		return nil, nil, errors.New("JWE is missing the required kid header")
	case h.URL == "":
		return nil, nil, errors.New("JWE is missing the required clevis.tang.url header")
	case h.Adv == nil:
		return nil, nil, errors.New("JWE is missing the required clevis.tang.adv header")
	}
	for _, k := range h.Adv.Keys {
		if k.Kty == "EC" && k.MatchesThumbprint(j.Header.Kid) {
			if err := k.Validate(); err != nil {
				return nil, nil, err
			}
			return h, k, nil
		}
	}
	return nil, nil, errors.New("JWE header clevis.tang.adv has no key matching kid")
}

// parseClevis decodes the clevis header member as json.Unmarshal would,
// reading the common shape directly (see jose.DecodeObject): it is on the
// path of every decrypt before the connection starts.
func parseClevis(raw []byte) (clevisHeader, error) {
	var ch clevisHeader
	if jose.DecodeObject(raw, clevisFields, func(i int, v []byte) bool {
		if i == 0 {
			return jose.DecodeString(v, &ch.Pin)
		}
		return jose.DecodeObject(v, tangFields, func(i int, v []byte) bool {
			if i == 0 {
				var ok bool
				ch.Tang.Adv, ok = jose.DecodeKeySet(v)
				return ok
			}
			return jose.DecodeString(v, &ch.Tang.URL)
		})
	}) {
		return ch, nil
	}
	ch = clevisHeader{}
	err := json.Unmarshal(raw, &ch)
	return ch, err
}

// The JSON names of clevisHeader and header, in DecodeObject's order.
var (
	clevisFields = []string{"pin", "tang"}
	tangFields   = []string{"adv", "url"}
)

// Info describes a tang JWE for listings and reports.
type Info struct {
	URL string
	Kid string // S256 thumbprint of the exchange key used
	Adv *jose.KeySet
}

// Inspect returns what a tang JWE is bound to, without any network access.
func Inspect(j *jose.JWE) (*Info, error) {
	h, _, err := parse(j)
	if err != nil {
		return nil, err
	}
	return &Info{URL: h.URL, Kid: j.Header.Kid, Adv: h.Adv}, nil
}

// Describe implements pin.Describer.
func (Pin) Describe(j *jose.JWE) string {
	if i, err := Inspect(j); err == nil {
		return "tang(" + i.URL + ")"
	}
	return "tang(?)"
}

// member returns the clevis header member of the tang pin, as the clevis
// tools find it: by its exact name.
func member(j *jose.JWE) json.RawMessage {
	var ch map[string]json.RawMessage
	json.Unmarshal(j.Header.Clevis, &ch)
	return ch["tang"]
}

// ConfigOf implements pin.Configurer. The configuration trusts the
// signing key of the JWE's own advertisement by thumbprint: after a key
// rotation the server still signs with the rotated (hidden) key when
// asked by its thumbprint, so the new keys are trusted through the old
// ones.
func (Pin) ConfigOf(j *jose.JWE) (json.RawMessage, error) {
	var t struct {
		URL string          `json:"url"`
		Adv json.RawMessage `json:"adv"`
	}
	if err := json.Unmarshal(member(j), &t); err != nil || t.URL == "" {
		return nil, errors.New("tang JWE has no url")
	}
	cfg := map[string]string{"url": t.URL}
	if ks, err := jose.ParseKeySet(t.Adv); err == nil {
		if ver := ks.WithOp("verify"); len(ver) > 0 {
			if tp, err := ver[0].Thumbprint("S256"); err == nil {
				cfg["thp"] = tp
			}
		}
	}
	out, _ := json.Marshal(cfg)
	return out, nil
}

// RegenConfig implements pin.Regenerator: it fetches the server's current
// advertisement, asking for a signature by the signing key the binding
// trusted (GET /adv/{thp}; Tang servers sign with rotated, hidden keys
// when asked by thumbprint). If that old key signed it, the new
// advertisement is trusted and goes into the configuration as "adv": the
// trust chain of the original binding carries over to the new keys
// without asking anyone to check thumbprints again. Otherwise it is
// ConfigOf's configuration.
func (p Pin) RegenConfig(ctx context.Context, j *jose.JWE, o pin.Options) (json.RawMessage, error) {
	cfg, err := p.ConfigOf(j)
	if err != nil {
		return nil, err
	}
	var c struct {
		URL string `json:"url"`
	}
	json.Unmarshal(cfg, &c)
	var ch struct {
		Tang struct {
			Adv json.RawMessage `json:"adv"`
		} `json:"tang"`
	}
	if json.Unmarshal(j.Header.Clevis, &ch) != nil {
		return cfg, nil
	}
	ks, err := jose.ParseKeySet(ch.Tang.Adv)
	if err != nil {
		return cfg, nil
	}
	for _, k := range ks.WithOp("verify") {
		tp, err := k.Thumbprint("S256")
		if err != nil {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, o.PerTry())
		data, err := p.Client.Advertisement(tctx, c.URL, tp)
		cancel()
		if err != nil {
			continue
		}
		jws, err := jose.ParseJWS(data)
		if err != nil || !jws.VerifiedBy(k) {
			continue
		}
		if _, _, err := tangproto.VerifyAdvertisement(data); err != nil {
			continue
		}
		out, _ := json.Marshal(map[string]any{"url": c.URL, "adv": json.RawMessage(data)})
		return out, nil
	}
	return cfg, nil
}

// TangKeys implements pin.TangKeyer: the JWE's server and exchange key.
func (Pin) TangKeys(j *jose.JWE) []pin.TangKey {
	var t struct {
		URL string `json:"url"`
	}
	if json.Unmarshal(member(j), &t) == nil && t.URL != "" {
		return []pin.TangKey{{URL: t.URL, Kid: j.Header.Kid}}
	}
	return nil
}
