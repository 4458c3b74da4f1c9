package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tether-nbde/tether/internal/lan"
)

// discoverForSetup looks for key servers on the local network, says what
// it found, and returns those that may be offered as choices: the ones
// whose advertisement matches their announcement, and those that announce
// no thumbprint (the person compares the key shown next either way). A
// server whose announcement and advertisement disagree is named with the
// reason and never offered.
func discoverForSetup(ctx context.Context, w io.Writer, p *setupPlan) []discovered {
	if p.noDiscover {
		return nil
	}
	fmt.Fprintf(w, "Looking for key servers on your network (%v)...\n", lan.DefaultTimeout)
	found, err := discoverServers(ctx, lan.DefaultTimeout)
	if err != nil {
		fmt.Fprintf(w, "Cannot look on the network: %v.\n", err)
		return nil
	}
	var offer []discovered
	for _, f := range found {
		switch f.check {
		case checkOK, checkUnannounced:
			offer = append(offer, f)
		case checkMismatch:
			fmt.Fprintf(w, "Not offered: %q at %s: %v.\n  Something on your network announces a server that is not what it claims: do not use it.\n",
				f.Instance, f.url, f.err)
		default:
			fmt.Fprintf(w, "Not offered: %q at %s does not answer: %v.\n", f.Instance, f.url, f.err)
		}
	}
	if len(offer) == 0 {
		fmt.Fprintln(w, "No usable key server answered on your network.")
	}
	return offer
}

// chooseServer offers the servers found and "type an address". It
// returns the chosen server's URL and the thumbprints it announced (nil
// when it announced none), or "" when the person types an address.
func chooseServer(r *lineReader, found []discovered) (string, []string, error) {
	if len(found) == 0 {
		return "", nil, nil
	}
	w := r.env.Stdout
	fmt.Fprintln(w, "Key servers on your network:")
	for i, f := range found {
		key := "announces no key: compare the one it shows next"
		if f.check == checkOK {
			key = "key " + strings.Join(f.Thumbprints, ", ")
		}
		fmt.Fprintf(w, "  %d) %s at %s (%s)\n", i+1, f.Instance, f.url, key)
	}
	fmt.Fprintf(w, "  %d) type an address\n", len(found)+1)
	for {
		c, err := r.ask(fmt.Sprintf("Choose 1 to %d: ", len(found)+1))
		if err != nil {
			return "", nil, err
		}
		n, err := strconv.Atoi(c)
		switch {
		case err == nil && n >= 1 && n <= len(found):
			return found[n-1].url, found[n-1].Thumbprints, nil
		case err == nil && n == len(found)+1:
			return "", nil, nil
		}
		fmt.Fprintf(w, "Please type a number from 1 to %d.\n", len(found)+1)
	}
}
