// Package lan finds key servers on the local network: tether servers
// announce their Tang port with DNS-SD over multicast DNS (RFC 6762, RFC
// 6763), and tether setup and tether discover browse for them.
//
// The announcement is a hint, never a trust anchor: multicast DNS has no
// authentication, so anyone on the link can announce anything. What it
// carries is checked against the server itself: the thumbprints in the TXT
// record must be signing keys of the advertisement fetched from the
// announced address, and the person still confirms the thumbprint against
// the server's own list before it is pinned (docs/BOOT.md, "Finding a
// server on the network").
//
// This package is the browsing side and the TXT format, on the standard
// library and golang.org/x/net/dns/dnsmessage only: it is linked into
// tether, whose start-up cost every boot unlock pays. The announcing side
// lives in server/announce.
package lan

import (
	"net/netip"
	"strconv"
	"strings"
)

// Service is the DNS-SD service type announced: the protocol spoken on the
// port is Tang's, so a stock tangd announced by avahi (a static service
// file) is found too.
const Service = "_tang._tcp"

// Domain is the multicast DNS domain.
const Domain = "local."

// ServiceName is the fully qualified name browsed for.
const ServiceName = Service + "." + Domain

// TXT record keys (RFC 6763 section 6: key=value strings).
const (
	// KeyTxtVers is the version of this TXT format, "1".
	KeyTxtVers = "txtvers"
	// KeyThp is the SHA-256 JWK thumbprints (RFC 7638, base64url) of the
	// keys that sign the advertisement, comma-separated: what tether adv
	// shows and what --thp pins.
	KeyThp = "thp"
	// KeyPath is the path prefix of the Tang endpoints (tether server
	// --prefix), absent for none.
	KeyPath = "path"
	// KeyTLS is "1" when the port speaks HTTPS.
	KeyTLS = "tls"
	// KeyServer names the software and its version, e.g. "tether 1.4.0".
	KeyServer = "server"
)

// MaxThumbprints bounds the thumbprints carried: a TXT string holds at
// most 255 bytes, and a server signs with one or two keys.
const MaxThumbprints = 5

// Info is what a TXT record says about a server.
type Info struct {
	Thumbprints []string
	Path        string
	TLS         bool
	Server      string
}

// TXT returns the TXT strings announcing info.
func TXT(info Info) []string {
	txt := []string{KeyTxtVers + "=1"}
	if len(info.Thumbprints) > 0 {
		tps := info.Thumbprints
		if len(tps) > MaxThumbprints {
			tps = tps[:MaxThumbprints]
		}
		txt = append(txt, KeyThp+"="+strings.Join(tps, ","))
	}
	if p := strings.Trim(info.Path, "/"); p != "" {
		txt = append(txt, KeyPath+"=/"+p)
	}
	if info.TLS {
		txt = append(txt, KeyTLS+"=1")
	}
	if info.Server != "" {
		txt = append(txt, KeyServer+"="+info.Server)
	}
	return txt
}

// ParseTXT reads TXT strings from the network. Unknown keys are ignored;
// as RFC 6763 says, only the first occurrence of a key counts. A
// thumbprint that is not base64url is dropped, and text meant for display
// loses its control characters, so that a hostile announcement cannot
// write escape sequences to the terminal.
func ParseTXT(txt []string) Info {
	var info Info
	seen := map[string]bool{}
	for _, s := range txt {
		k, v, _ := strings.Cut(s, "=")
		k = strings.ToLower(k)
		if seen[k] {
			continue
		}
		seen[k] = true
		switch k {
		case KeyThp:
			for _, tp := range strings.Split(v, ",") {
				if validThumbprint(tp) && len(info.Thumbprints) < MaxThumbprints {
					info.Thumbprints = append(info.Thumbprints, tp)
				}
			}
		case KeyPath:
			if validPath(v) {
				info.Path = v
			}
		case KeyTLS:
			info.TLS = v == "1"
		case KeyServer:
			info.Server = Printable(v, 64)
		}
	}
	return info
}

// validThumbprint accepts base64url of a SHA-1 to SHA-512 digest.
func validThumbprint(s string) bool {
	if len(s) < 27 || len(s) > 86 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validPath accepts a URL path of plain characters: it becomes part of
// the URL that is fetched and shown.
func validPath(s string) bool {
	if s == "" || s[0] != '/' || len(s) > 128 || strings.Contains(s, "..") {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("/-_.~", c) >= 0) {
			return false
		}
	}
	return true
}

// Printable returns s without control characters or invalid UTF-8, cut to
// at most n runes: names from the network are shown to a person.
func Printable(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if n == 0 {
			break
		}
		if r == '\uFFFD' || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' || r == '\u202d' {
			continue
		}
		b.WriteRune(r)
		n--
	}
	return b.String()
}

// Found is one server that answered a browse.
type Found struct {
	// Instance is the announced name (usually the server's host name).
	Instance string
	// Host is the SRV target, e.g. "keys.local".
	Host string
	// Addrs are the addresses announced for Host (A and AAAA records).
	Addrs []netip.Addr
	// From is the address the answer came from.
	From netip.Addr
	Port uint16
	Info
}

// Addr is the address to reach the server at: the one the answer came
// from when the server announced it (it is on a path back to this
// machine), else the first IPv4 then IPv6 address announced, else the
// sender.
func (f *Found) Addr() netip.Addr {
	for _, a := range f.Addrs {
		if a == f.From {
			return a
		}
	}
	for _, a := range f.Addrs {
		if a.Is4() {
			return a
		}
	}
	if len(f.Addrs) > 0 {
		return f.Addrs[0]
	}
	return f.From
}

// URL is the base URL of the server's Tang endpoints.
func (f *Found) URL() string {
	scheme := "http"
	if f.TLS {
		scheme = "https"
	}
	a := f.Addr().Unmap()
	host := a.String()
	if a.Is6() {
		host = "[" + a.String() + "]"
		if a.Zone() != "" {
			// RFC 6874: the zone's "%" is escaped in a URL.
			host = "[" + a.WithZone("").String() + "%25" + a.Zone() + "]"
		}
	}
	return scheme + "://" + host + ":" + strconv.Itoa(int(f.Port)) + f.Path
}
