package luks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

// ConfigOf rebuilds the pin name and configuration a JWE was made with, as
// clevis luks regen and list do. For tang the configuration trusts the
// signing key of the JWE's own advertisement by thumbprint: after a key
// rotation the server still signs with the rotated (hidden) key when asked
// by its thumbprint, so the new keys are trusted through the old ones.
func ConfigOf(j *jose.JWE) (string, json.RawMessage, error) {
	name, err := j.Header.Pin()
	if err != nil {
		return "", nil, err
	}
	var ch map[string]json.RawMessage
	if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil {
		return "", nil, err
	}
	body := ch[name]
	switch name {
	case "tang":
		var t struct {
			URL string          `json:"url"`
			Adv json.RawMessage `json:"adv"`
		}
		if err := json.Unmarshal(body, &t); err != nil || t.URL == "" {
			return "", nil, errors.New("tang JWE has no url")
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
		return name, out, nil
	case "sss":
		var s struct {
			T   int      `json:"t"`
			JWE []string `json:"jwe"`
		}
		if err := json.Unmarshal(body, &s); err != nil {
			return "", nil, fmt.Errorf("sss JWE: %w", err)
		}
		pins := map[string][]json.RawMessage{}
		for _, c := range s.JWE {
			cj, err := jose.ParseCompact(c)
			if err != nil {
				return "", nil, fmt.Errorf("sss child: %w", err)
			}
			cn, cc, err := ConfigOf(cj)
			if err != nil {
				return "", nil, err
			}
			pins[cn] = append(pins[cn], cc)
		}
		out, _ := json.Marshal(map[string]any{"t": s.T, "pins": pins})
		return name, out, nil
	case "tpm2":
		var t struct {
			Hash    string `json:"hash"`
			Key     string `json:"key"`
			PCRBank string `json:"pcr_bank,omitempty"`
			PCRIDs  string `json:"pcr_ids,omitempty"`
			WithPIN bool   `json:"with_pin,omitempty"`
			// A signed policy: the key travels as base64url DER,
			// which the pin's configuration takes as well as a file.
			PCRPubkey     string `json:"pcr_pubkey,omitempty"`
			PCRSignedIDs  string `json:"pcr_signed_ids,omitempty"`
			PCRSignatures string `json:"pcr_signatures,omitempty"`
		}
		if err := json.Unmarshal(body, &t); err != nil {
			return "", nil, fmt.Errorf("tpm2 JWE: %w", err)
		}
		out, _ := json.Marshal(t)
		return name, out, nil
	}
	return "", nil, fmt.Errorf("cannot rebuild the configuration of a %s binding", name)
}

// RegenConfig is ConfigOf for a rebind: for tang it fetches the server's
// current advertisement, asking for a signature by the signing key the
// binding trusted (GET /adv/{thp}; Tang servers sign with rotated, hidden
// keys when asked by thumbprint). If that old key signed it, the new
// advertisement is trusted and goes into the configuration as "adv": the
// trust chain of the original binding carries over to the new keys
// without asking anyone to check thumbprints again.
func RegenConfig(ctx context.Context, j *jose.JWE, timeout time.Duration) (string, json.RawMessage, error) {
	name, cfg, err := ConfigOf(j)
	if err != nil {
		return "", nil, err
	}
	switch name {
	case "tang":
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
			return name, cfg, nil
		}
		ks, err := jose.ParseKeySet(ch.Tang.Adv)
		if err != nil {
			return name, cfg, nil
		}
		client := &tang.Client{}
		for _, k := range ks.WithOp("verify") {
			tp, err := k.Thumbprint("S256")
			if err != nil {
				continue
			}
			tctx, cancel := context.WithTimeout(ctx, timeout)
			data, err := client.Advertisement(tctx, c.URL, tp)
			cancel()
			if err != nil {
				continue
			}
			jws, err := jose.ParseJWS(data)
			if err != nil || !jws.VerifiedBy(k) {
				continue
			}
			if _, _, err := tang.VerifyAdvertisement(data); err != nil {
				continue
			}
			out, _ := json.Marshal(map[string]any{"url": c.URL, "adv": json.RawMessage(data)})
			return name, out, nil
		}
		return name, cfg, nil
	case "sss":
		var ch struct {
			SSS struct {
				T   int      `json:"t"`
				JWE []string `json:"jwe"`
			} `json:"sss"`
		}
		if err := json.Unmarshal(j.Header.Clevis, &ch); err != nil {
			return "", nil, err
		}
		pins := map[string][]json.RawMessage{}
		for _, c := range ch.SSS.JWE {
			cj, err := jose.ParseCompact(c)
			if err != nil {
				return "", nil, err
			}
			cn, cc, err := RegenConfig(ctx, cj, timeout)
			if err != nil {
				return "", nil, err
			}
			pins[cn] = append(pins[cn], cc)
		}
		out, _ := json.Marshal(map[string]any{"t": ch.SSS.T, "pins": pins})
		return name, out, nil
	}
	return name, cfg, nil
}
