// Package announce makes a key server findable on its local network: it
// answers multicast DNS queries for the DNS-SD service _tang._tcp with the
// server's port, addresses and a TXT record carrying the thumbprints of
// the keys that sign its advertisement (the format is internal/lan's).
//
// It reveals what the advertisement reveals anyway (Tang's /adv is public)
// plus that a key server runs here; tether server --announce=false turns
// it off, and it is off by itself when the server listens only on
// loopback. It answers queries and never sends on its own.
package announce

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"

	"github.com/tether-nbde/tether/internal/lan"
)

// Config says what to announce.
type Config struct {
	// Addr is the address the Tang endpoints listen on (the listener's
	// Addr()). An unspecified IP announces every address of the
	// interfaces that are up; a specific one announces just it, on its
	// interface.
	Addr net.Addr
	// Instance is the name shown to people (default: the host name, with
	// "-PORT" unless the port is DefaultPort), one DNS label of letters,
	// digits and hyphens.
	Instance string
	// Path, TLS and Server go into the TXT record (lan.Info).
	Path   string
	TLS    bool
	Server string
	// Thumbprints returns the thumbprints of the keys signing the
	// advertisement now; it is called for each answer, so a rotation is
	// announced at once.
	Thumbprints func() []string
	Log         *slog.Logger
}

// DefaultPort is tether server's default port.
const DefaultPort = 7500

// ErrLoopback is returned when the server listens on loopback only:
// nobody on the network could reach what would be announced.
var ErrLoopback = errors.New("the server listens on loopback only")

// Announcer answers queries until Close.
type Announcer struct {
	servers []*mdns.Server
}

// Start answers queries on every interface that is up and can multicast
// (or on the listening address's interface), one responder each.
func Start(cfg Config) (*Announcer, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ta, ok := cfg.Addr.(*net.TCPAddr)
	if !ok || ta.Port == 0 {
		return nil, fmt.Errorf("announce %v: not a TCP address with a port", cfg.Addr)
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return nil, ErrLoopback
	}
	host, _ := os.Hostname()
	host = label(host)
	if cfg.Instance == "" {
		// Two servers on one host need two names: a client keeps one
		// server per name.
		cfg.Instance = host
		if ta.Port != DefaultPort {
			cfg.Instance += "-" + strconv.Itoa(ta.Port)
		}
	}
	cfg.Instance = label(cfg.Instance)
	z := &zone{cfg: cfg, host: host + "." + lan.Domain, port: ta.Port, ip: ip}
	ifs, err := z.interfaces()
	if err != nil {
		return nil, err
	}
	if len(ifs) == 0 {
		return nil, fmt.Errorf("announce on the network: no interface that can multicast is up")
	}
	a := &Announcer{}
	// The library logs a line for each packet it cannot parse: anyone on
	// the link can send those, so they go to debug.
	logger := log.New(debugWriter{cfg.Log}, "", 0)
	var errs []error
	for _, ifi := range ifs {
		ifi := ifi
		s, err := mdns.NewServer(&mdns.Config{Zone: z, Iface: &ifi, Logger: logger})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ifi.Name, err))
			continue
		}
		a.servers = append(a.servers, s)
	}
	if len(a.servers) == 0 {
		return nil, fmt.Errorf("announce on the network: %w", errors.Join(errs...))
	}
	for _, e := range errs {
		cfg.Log.Warn("not announcing on an interface", "err", e)
	}
	names := make([]string, len(ifs))
	for i, ifi := range ifs {
		names[i] = ifi.Name
	}
	cfg.Log.Info("announcing on the local network (mDNS, turn off with --announce=false)",
		"service", lan.Service, "instance", cfg.Instance, "interfaces", strings.Join(names, ","))
	return a, nil
}

// Close stops answering.
func (a *Announcer) Close() error {
	for _, s := range a.servers {
		s.Shutdown()
	}
	return nil
}

// zone builds the answers at each query: addresses and keys change while
// the server runs (DHCP, rotation).
type zone struct {
	cfg  Config
	host string
	port int
	ip   netip.Addr // the listening address; unspecified for all
}

func (z *zone) Records(q dns.Question) []dns.RR {
	var ips []net.IP
	for _, a := range z.addrs() {
		ips = append(ips, a.AsSlice())
	}
	if len(ips) == 0 {
		return nil
	}
	var tps []string
	if z.cfg.Thumbprints != nil {
		tps = z.cfg.Thumbprints()
	}
	txt := lan.TXT(lan.Info{Thumbprints: tps, Path: z.cfg.Path, TLS: z.cfg.TLS, Server: z.cfg.Server})
	svc, err := mdns.NewMDNSService(z.cfg.Instance, lan.Service, lan.Domain, z.host, z.port, ips, txt)
	if err != nil {
		z.cfg.Log.Debug("mdns answer", "err", err)
		return nil
	}
	// Names are case-insensitive (RFC 6762 section 16); the library
	// compares them exactly.
	for _, n := range []string{lan.ServiceName, z.cfg.Instance + "." + lan.ServiceName, z.host} {
		if strings.EqualFold(q.Name, n) {
			q.Name = n
		}
	}
	return svc.Records(q)
}

// interfaces are where to answer: the listening address's interface, or
// every one that is up, can multicast and is not loopback.
func (z *zone) interfaces() ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		if !z.ip.IsUnspecified() && len(ifaceAddrs(ifi, z.ip)) == 0 {
			continue
		}
		out = append(out, ifi)
	}
	return out, nil
}

// addrs are the addresses announced: the listening one, or those of the
// interfaces that are up (IPv4 only when listening on 0.0.0.0).
func (z *zone) addrs() []netip.Addr {
	if !z.ip.IsUnspecified() {
		return []netip.Addr{z.ip}
	}
	ifs, err := z.interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ifi := range ifs {
		for _, a := range ifaceAddrs(ifi, netip.Addr{}) {
			if a.Is6() && (z.ip.Is4() || a.IsLinkLocalUnicast()) {
				// Link-local IPv6 needs the querier's zone: it takes it
				// from the answer's source instead.
				continue
			}
			out = append(out, a)
		}
	}
	return out
}

// ifaceAddrs returns ifi's addresses, or only want if it has it.
func ifaceAddrs(ifi net.Interface, want netip.Addr) []netip.Addr {
	as, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		if want.IsValid() && p.Addr() != want {
			continue
		}
		out = append(out, p.Addr())
	}
	return out
}

// label makes a host name one DNS label of letters, digits and hyphens.
func label(h string) string {
	h, _, _ = strings.Cut(h, ".")
	var b strings.Builder
	for _, c := range []byte(h) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
		}
	}
	if b.Len() == 0 {
		return "tether"
	}
	return b.String()
}

// debugWriter turns the library's log lines into debug records.
type debugWriter struct{ log *slog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug("mdns", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = debugWriter{}
