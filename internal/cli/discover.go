package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/internal/lan"
)

const discoverUsage = `Usage: tether discover [--timeout D] [--json]

Find the tether and Tang key servers on the local network. It asks with
multicast DNS for the DNS-SD service _tang._tcp (what tether server
announces unless started with --announce=false), listens for answers for
D, then fetches each server's advertisement and checks it against what
the server announced. For each server found it prints:

  URL          where its Tang endpoints answer (http://ADDR:PORT[/PATH])
  NAME         the name it announces (usually its host name)
  THUMBPRINTS  the SHA-256 thumbprints of the keys that sign its
               advertisement, as announced (what --thp pins)
  CHECK        ok            the advertisement fetched from URL is signed
                             by exactly the keys announced
               MISMATCH      it is not: something on the network announces
                             a server that is not what it claims, or the
                             announcement is stale. Do not use it
               unannounced   the server announces no thumbprint (a tangd
                             announced by avahi): compare the key of
                             "tether adv URL" with the server's own list
               unreachable   the advertisement could not be fetched

Multicast DNS has no authentication: anyone on your network can answer.
A CHECK of ok means the announcement and the server agree, not that the
server is yours. Before pinning a key, compare its thumbprint with what
the server itself shows (tether server keys list on a tether server,
tang-show-keys on a tangd). tether setup shows the servers found as
choices and asks for that comparison.

Options:
  --timeout D   how long to listen for answers, and the bound for each
                advertisement fetched (default 3s)
  --json        print a JSON array, one object per server:
                {"name", "host", "url", "addresses", "port", "path", "tls",
                "server", "thumbprints", "check", "error"} ("error" only
                when the check is not ok)

A server whose CHECK is not ok also gets a warning on stderr that says
why (both sets of keys for a MISMATCH).

Exit status: 0 at least one server answered; 1 none did (or the network
cannot be asked); 2 wrong use.

Examples:
  $ tether discover
  URL                     NAME   THUMBPRINTS                                  CHECK
  http://192.168.1.5:7500  keys   9C8hYwDgnOzFUuSFlWvrwD5vG5xS8RkKkS52AkQPrAY  ok
  $ tether setup --server "$(tether discover --json | jq -r '.[0].url')" --thp 9C8hYw... ...
`

func discoverCmd() *command.Command {
	return &command.Command{
		Name:    "discover",
		Summary: "find key servers on the local network (multicast DNS)",
		Usage:   discoverUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			timeout := fs.Duration("timeout", lan.DefaultTimeout, "")
			asJSON := fs.Bool("json", false, "")
			return func(env *Env, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				if *timeout <= 0 {
					return command.Usagef("--timeout must be positive")
				}
				found, err := discoverServers(context.Background(), *timeout)
				if err != nil {
					return command.WithHint(err, "check that this computer has a network connection")
				}
				if *asJSON {
					if err := printDiscoveredJSON(env.Stdout, found); err != nil {
						return err
					}
				} else if len(found) > 0 {
					printDiscovered(env.Stdout, found)
				}
				for _, f := range found {
					switch f.check {
					case checkMismatch:
						fmt.Fprintf(env.Stderr, "tether: warning: %q at %s: %v: do not use it\n", f.Instance, f.url, f.err)
					case checkUnreachable:
						fmt.Fprintf(env.Stderr, "tether: warning: %q at %s: %v\n", f.Instance, f.url, f.err)
					}
				}
				if len(found) == 0 {
					return command.WithHint(fmt.Errorf("no key server answered on the network within %v", *timeout),
						"check that the server runs without --announce=false and listens on an address of this network, or give its address (tether adv URL)")
				}
				return nil
			}
		},
	}
}

// Results of comparing an announcement with the server's advertisement.
const (
	checkOK          = "ok"
	checkMismatch    = "MISMATCH"
	checkUnannounced = "unannounced"
	checkUnreachable = "unreachable"
)

// discovered is a server found on the network and checked.
type discovered struct {
	lan.Found
	url   string
	check string
	err   error      // why check is not ok
	adv   *advReport // the advertisement fetched, if any
}

// discoverServers browses for d, then fetches each server's
// advertisement (in parallel, each bounded by d) and compares it with the
// announced thumbprints.
func discoverServers(ctx context.Context, d time.Duration) ([]discovered, error) {
	found, err := lan.Browse(ctx, lan.BrowseOptions{Timeout: d})
	if err != nil {
		return nil, err
	}
	out := make([]discovered, len(found))
	var wg sync.WaitGroup
	for i, f := range found {
		out[i] = discovered{Found: f, url: f.URL()}
		wg.Add(1)
		go func(x *discovered) {
			defer wg.Done()
			fctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			x.adv, x.err = fetchAdv(fctx, x.url, "")
			x.check = checkAnnounced(x.Thumbprints, x.adv, x.err)
			if x.check == checkMismatch {
				x.err = fmt.Errorf("it announces the key %s, but the server at %s signs with %s",
					strings.Join(x.Thumbprints, ", "), x.url, strings.Join(signingThps(x.adv), ", "))
			}
		}(&out[i])
	}
	wg.Wait()
	return out, nil
}

// checkAnnounced compares the announced thumbprints with the signing
// keys of the advertisement: every one announced must sign it, and it
// must be signed by no other key. A spoofed announcement copies the
// real server's thumbprints but points elsewhere, or points at the real
// server with a thumbprint of its own: both differ.
func checkAnnounced(announced []string, adv *advReport, err error) string {
	if err != nil || adv == nil {
		return checkUnreachable
	}
	if len(announced) == 0 {
		return checkUnannounced
	}
	signing := map[string]bool{}
	for _, tp := range signingThps(adv) {
		signing[tp] = true
	}
	seen := map[string]bool{}
	for _, tp := range announced {
		if !signing[tp] {
			return checkMismatch
		}
		seen[tp] = true
	}
	if len(seen) != len(signing) {
		return checkMismatch
	}
	return checkOK
}

func signingThps(adv *advReport) []string {
	if adv == nil {
		return nil
	}
	var tps []string
	for _, k := range adv.Signing {
		tps = append(tps, k.S256)
	}
	return tps
}

func printDiscovered(w io.Writer, found []discovered) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "URL\tNAME\tTHUMBPRINTS\tCHECK")
	for _, f := range found {
		tps := strings.Join(f.Thumbprints, ",")
		if tps == "" {
			tps = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.url, f.Instance, tps, f.check)
	}
	tw.Flush()
}

type discoveredJSON struct {
	Name        string   `json:"name"`
	Host        string   `json:"host"`
	URL         string   `json:"url"`
	Addresses   []string `json:"addresses"`
	Port        uint16   `json:"port"`
	Path        string   `json:"path,omitempty"`
	TLS         bool     `json:"tls"`
	Server      string   `json:"server,omitempty"`
	Thumbprints []string `json:"thumbprints"`
	Check       string   `json:"check"`
	Error       string   `json:"error,omitempty"`
}

func printDiscoveredJSON(w io.Writer, found []discovered) error {
	out := []discoveredJSON{}
	for _, f := range found {
		j := discoveredJSON{Name: f.Instance, Host: f.Host, URL: f.url, Port: f.Port, Path: f.Path,
			TLS: f.TLS, Server: f.Server, Thumbprints: f.Thumbprints, Check: f.check, Addresses: []string{}}
		if j.Thumbprints == nil {
			j.Thumbprints = []string{}
		}
		for _, a := range f.Addrs {
			j.Addresses = append(j.Addresses, a.String())
		}
		if f.err != nil {
			j.Error = f.err.Error()
		}
		out = append(out, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
