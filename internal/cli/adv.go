package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/tang"
)

// advKey is one key of an advertisement as "tether adv" prints it.
type advKey struct {
	Crv  string `json:"crv"`
	S256 string `json:"S256"`
	S1   string `json:"S1"`
}

type advReport struct {
	URL      string          `json:"url"`
	Signing  []advKey        `json:"signing"`
	Exchange []advKey        `json:"exchange"`
	Config   tangConfig      `json:"config"`
	Adv      json.RawMessage `json:"adv"`
}

type tangConfig struct {
	URL string `json:"url"`
	Thp string `json:"thp"`
}

const advUsage = `Usage: tether adv URL [--thp THP] [--json] [--timeout D]

Fetch the advertisement of the Tang server at URL (a tether server or a
stock tangd), verify that each of its signing keys signed it, and print
the keys' thumbprints and the configuration that pins the server, ready
to paste into "tether luks bind", "tether encrypt" or "clevis".

The thumbprints are those Tang and Clevis use: SHA-256 (S256, what
tang-show-keys prints and what "thp" takes) and SHA-1 (S1, older clevis
configurations). Before you trust them, compare S256 with what the server
itself says, on the server: "tether server keys list" for a tether
server, "tang-show-keys PORT" for tangd. A thumbprint fetched over the
network proves only which server answered, not that it is yours.

Options:
  --thp THP     fetch the advertisement signed by this key (/adv/THP) and
                fail unless it is one of the signing keys: checks a pin
                you already have, and finds a key the server has rotated
  --json        print one JSON object for scripts (below) instead of text
  --timeout D   bound for the exchange (default 10s)

The JSON object: {"url":URL, "signing":[KEY...], "exchange":[KEY...],
"config":{"url":URL,"thp":S256}, "adv":ADVERTISEMENT}; each KEY is
{"crv":CURVE, "S256":THUMBPRINT, "S1":THUMBPRINT}. "config" pins the
first signing key (or THP); "adv" is the signed advertisement itself,
which a tang pin takes as "adv" to bind without the network.

Exit status: 0 the advertisement was fetched and verified; 1 it was not
(server unreachable, bad signature, THP not a signing key); 2 wrong use.

Examples:
  $ tether adv http://keys.lan:7500
  $ tether adv http://keys.lan:7500 --thp 9C8hYw...
  $ tether adv --json http://keys.lan:7500 | jq -r .config.thp
`

func advCmd() *command.Command {
	return &command.Command{
		Name:    "adv",
		Summary: "show a Tang server's verified keys and thumbprints, to pin it",
		Usage:   advUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			thp := fs.String("thp", "", "")
			asJSON := fs.Bool("json", false, "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			return func(env *Env, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want the server's URL, e.g. tether adv http://keys.lan:7500")
				}
				base := strings.TrimRight(args[0], "/")
				if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return command.Usagef("server URL %q is not an http:// or https:// URL", args[0])
				}
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				defer cancel()
				r, err := fetchAdv(ctx, base, *thp)
				if err != nil {
					return err
				}
				if *asJSON {
					b, err := json.MarshalIndent(r, "", "  ")
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(env.Stdout, "%s\n", b)
					return err
				}
				return printAdv(env, r)
			}
		},
	}
}

func fetchAdv(ctx context.Context, base, thp string) (*advReport, error) {
	data, err := (&tang.Client{}).Advertisement(ctx, base, thp)
	var se *tang.ServerError
	if thp != "" && errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil, command.WithHint(fmt.Errorf("fetch advertisement of %s: %s is not one of its signing keys", base, thp),
			"run \"tether adv %s\" without --thp for the keys it has, and compare them with the server's own list", base)
	}
	if err != nil {
		return nil, command.WithHint(fmt.Errorf("fetch advertisement: %w", err),
			"check the URL and that the server runs: curl %s/adv", base)
	}
	ks, ver, err := tang.VerifyAdvertisement(data)
	if err != nil {
		return nil, command.WithHint(fmt.Errorf("verify advertisement of %s: %w", base, err),
			"this is not a Tang server, or something between you and it changed its reply: do not pin it")
	}
	r := &advReport{URL: base, Adv: json.RawMessage(data)}
	if !json.Valid(r.Adv) {
		// A compact JWS is not JSON: carry it as a string.
		r.Adv, _ = json.Marshal(string(data))
	}
	for _, k := range ver {
		r.Signing = append(r.Signing, keyOf(k))
	}
	for _, k := range ks.WithOp("deriveKey") {
		r.Exchange = append(r.Exchange, keyOf(k))
	}
	r.Config = tangConfig{URL: base, Thp: r.Signing[0].S256}
	if thp != "" {
		found := false
		for _, k := range ver {
			found = found || k.MatchesThumbprint(thp)
		}
		if !found {
			return nil, command.WithHint(fmt.Errorf("verify advertisement of %s: %s did not sign it", base, thp),
				"run \"tether adv %s\" without --thp for the keys it has", base)
		}
		r.Config.Thp = thp
	}
	return r, nil
}

func keyOf(k *jose.JWK) advKey {
	s256, _ := k.Thumbprint("S256")
	s1, _ := k.Thumbprint("S1")
	return advKey{Crv: k.Crv, S256: s256, S1: s1}
}

func printAdv(env *Env, r *advReport) error {
	w := env.Stdout
	fmt.Fprintf(w, "Server %s: advertisement verified (every signing key signed it).\n\n", r.URL)
	fmt.Fprintf(w, "Signing keys (the server's identity: pin one with \"thp\"):\n")
	for _, k := range r.Signing {
		fmt.Fprintf(w, "  %s  S256 %s\n  %s  S1   %s\n", k.Crv, k.S256, strings.Repeat(" ", len(k.Crv)), k.S1)
	}
	fmt.Fprintf(w, "\nExchange keys (used to bind; a binding records the one it used):\n")
	for _, k := range r.Exchange {
		fmt.Fprintf(w, "  %s  S256 %s\n", k.Crv, k.S256)
	}
	cfg, err := json.Marshal(r.Config)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nCompare S256 with the server's own list before you trust it: on the server,\n")
	fmt.Fprintf(w, "\"tether server keys list\" (tether) or \"tang-show-keys PORT\" (tangd).\n\n")
	fmt.Fprintf(w, "Then bind with:\n")
	fmt.Fprintf(w, "  tether luks bind -d DEVICE tang '%s'\n", cfg)
	fmt.Fprintf(w, "  tether encrypt tang '%s' < secret > secret.jwe\n", cfg)
	fmt.Fprintf(w, "  clevis luks bind -d DEVICE tang '%s'\n", cfg)
	return nil
}
