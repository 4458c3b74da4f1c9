package lan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DefaultTimeout is how long a browse listens: responders answer within
// 20–120 ms (RFC 6762 section 6), and one query is sent again after a
// second in case the first was lost.
const DefaultTimeout = 3 * time.Second

// Limits on what one browse keeps, so that a flood of answers costs
// bounded memory and time.
const (
	maxPackets   = 2000
	maxInstances = 64
	maxAddrs     = 16
)

var (
	mdnsV4 = netip.MustParseAddr("224.0.0.251")
	mdnsV6 = netip.MustParseAddr("ff02::fb")
)

// BrowseOptions bound a browse.
type BrowseOptions struct {
	// Timeout is how long to listen for answers (DefaultTimeout if 0).
	Timeout time.Duration
	// Interfaces to ask on; nil means every interface that is up and can
	// multicast, but loopback.
	Interfaces []net.Interface
}

// Browse asks the link for Tang servers and returns those that answered,
// sorted by instance name. The query goes out of every interface from a
// socket bound to each of its addresses, with a source port other than
// 5353: responders then answer by unicast to that socket (RFC 6762
// section 6.7), so nothing needs to join the multicast group or share port
// 5353 with a running avahi.
func Browse(ctx context.Context, opt BrowseOptions) ([]Found, error) {
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	ifs := opt.Interfaces
	if ifs == nil {
		all, err := net.Interfaces()
		if err != nil {
			return nil, fmt.Errorf("list network interfaces: %w", err)
		}
		for _, ifi := range all {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
				ifs = append(ifs, ifi)
			}
		}
	}
	type sock struct {
		c  *net.UDPConn
		to *net.UDPAddr
	}
	var socks []sock
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr()
			var laddr, to *net.UDPAddr
			switch {
			case ip.Is4():
				laddr = &net.UDPAddr{IP: ip.AsSlice()}
				to = &net.UDPAddr{IP: mdnsV4.AsSlice(), Port: 5353}
			case ip.IsLinkLocalUnicast():
				laddr = &net.UDPAddr{IP: ip.AsSlice(), Zone: ifi.Name}
				to = &net.UDPAddr{IP: mdnsV6.AsSlice(), Port: 5353, Zone: ifi.Name}
			default:
				continue // one IPv6 socket per link is enough
			}
			c, err := net.ListenUDP("udp", laddr)
			if err != nil {
				continue
			}
			socks = append(socks, sock{c, to})
		}
	}
	if len(socks) == 0 {
		return nil, errors.New("browse the network for key servers: no network interface with an address is up")
	}
	type packet struct {
		data []byte
		from netip.Addr
	}
	pkts := make(chan packet, 64)
	ctx, cancel := context.WithTimeout(ctx, opt.Timeout)
	defer cancel()
	for _, s := range socks {
		go func(c *net.UDPConn) {
			buf := make([]byte, 9000)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				select {
				case pkts <- packet{append([]byte(nil), buf[:n]...), from.Addr().Unmap()}:
				case <-ctx.Done():
					return
				}
			}
		}(s.c)
	}
	defer func() {
		for _, s := range socks {
			s.c.Close()
		}
	}()
	send := func(q []byte) error {
		var errs []error
		sent := false
		for _, s := range socks {
			if _, err := s.c.WriteToUDP(q, s.to); err != nil {
				errs = append(errs, err)
				continue
			}
			sent = true
		}
		if !sent {
			return fmt.Errorf("send the multicast DNS query: %w", errors.Join(errs...))
		}
		return nil
	}
	browse := Query(ServiceName, dnsmessage.TypePTR)
	if err := send(browse); err != nil {
		return nil, err
	}
	again := time.NewTimer(time.Second)
	defer again.Stop()
	c := NewCollector()
	asked := map[string]bool{}
	for n := 0; n < maxPackets; n++ {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, ctx.Err()
			}
			return c.Found(), nil
		case <-again.C:
			send(browse)
		case p := <-pkts:
			c.Add(p.data, p.from)
			// An answer that named an instance without its port or
			// addresses: ask for them.
			for _, q := range c.missing() {
				if !asked[q.name+q.typ.String()] {
					asked[q.name+q.typ.String()] = true
					send(Query(q.name, q.typ))
				}
			}
		}
	}
	return c.Found(), nil
}

// Query is a multicast DNS question for name, asking for a unicast answer.
func Query(name string, typ dnsmessage.Type) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{})
	b.StartQuestions()
	b.Question(dnsmessage.Question{
		Name:  dnsmessage.MustNewName(name),
		Type:  typ,
		Class: dnsmessage.ClassINET | 1<<15, // the QU bit: unicast reply, please
	})
	q, _ := b.Finish()
	return q
}

// Collector gathers the records of the answers to a browse.
type Collector struct {
	order []string                // instance names (lower case) in the order seen
	ptr   map[string]string       // instance (lower case) -> as announced
	srv   map[string]srvRecord    // instance -> target and port
	txt   map[string][]string     // instance -> TXT strings
	addrs map[string][]netip.Addr // host (lower case) -> addresses
}

type srvRecord struct {
	target string
	port   uint16
	from   netip.Addr
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector {
	return &Collector{ptr: map[string]string{}, srv: map[string]srvRecord{},
		txt: map[string][]string{}, addrs: map[string][]netip.Addr{}}
}

var errNotAnswer = errors.New("not a multicast DNS answer")

// Add reads one packet from the network, from the address from. Records
// of other services are ignored; a packet that is not a well-formed
// answer is dropped whole (what it held before the error is kept: the
// records are independent).
func (c *Collector) Add(pkt []byte, from netip.Addr) error {
	var p dnsmessage.Parser
	h, err := p.Start(pkt)
	if err != nil {
		return err
	}
	if !h.Response || h.OpCode != 0 || h.RCode != dnsmessage.RCodeSuccess {
		return errNotAnswer
	}
	if err := p.SkipAllQuestions(); err != nil {
		return err
	}
	if err := c.section(&p, from, p.AnswerHeader, p.SkipAnswer); err != nil {
		return err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return err
	}
	return c.section(&p, from, p.AdditionalHeader, p.SkipAdditional)
}

func (c *Collector) section(p *dnsmessage.Parser, from netip.Addr, next func() (dnsmessage.ResourceHeader, error), skip func() error) error {
	for {
		h, err := next()
		if err == dnsmessage.ErrSectionDone {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.ToLower(h.Name.String())
		switch h.Type {
		case dnsmessage.TypePTR:
			r, err := p.PTRResource()
			if err != nil {
				return err
			}
			inst := r.PTR.String()
			lower := strings.ToLower(inst)
			if name != ServiceName || !strings.HasSuffix(lower, "."+ServiceName) {
				continue
			}
			if _, ok := c.ptr[lower]; !ok && len(c.order) < maxInstances {
				c.ptr[lower] = inst
				c.order = append(c.order, lower)
			}
		case dnsmessage.TypeSRV:
			r, err := p.SRVResource()
			if err != nil {
				return err
			}
			if strings.HasSuffix(name, "."+ServiceName) && r.Port != 0 {
				c.srv[name] = srvRecord{strings.ToLower(r.Target.String()), r.Port, from}
			}
		case dnsmessage.TypeTXT:
			r, err := p.TXTResource()
			if err != nil {
				return err
			}
			if strings.HasSuffix(name, "."+ServiceName) {
				c.txt[name] = r.TXT
			}
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return err
			}
			c.addAddr(name, netip.AddrFrom4(r.A), from)
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return err
			}
			c.addAddr(name, netip.AddrFrom16(r.AAAA), from)
		default:
			if err := skip(); err != nil {
				return err
			}
		}
	}
}

func (c *Collector) addAddr(host string, a netip.Addr, from netip.Addr) {
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() {
		return
	}
	if a.IsLinkLocalUnicast() && a.Is6() {
		// Reachable only through the link the answer came in on.
		a = a.WithZone(from.Zone())
	}
	for _, b := range c.addrs[host] {
		if a == b {
			return
		}
	}
	if len(c.addrs[host]) < maxAddrs && len(c.addrs) < 4*maxInstances {
		c.addrs[host] = append(c.addrs[host], a)
	}
}

type question struct {
	name string
	typ  dnsmessage.Type
}

// missing lists what the answers so far leave out.
func (c *Collector) missing() []question {
	var qs []question
	for _, inst := range c.order {
		s, ok := c.srv[inst]
		if !ok {
			qs = append(qs, question{c.ptr[inst], dnsmessage.TypeSRV})
		}
		if _, ok := c.txt[inst]; !ok {
			qs = append(qs, question{c.ptr[inst], dnsmessage.TypeTXT})
		}
		if ok && len(c.addrs[s.target]) == 0 {
			if _, err := dnsmessage.NewName(s.target); err == nil {
				qs = append(qs, question{s.target, dnsmessage.TypeA})
			}
		}
	}
	return qs
}

// Found returns the servers whose port is known, sorted by name.
func (c *Collector) Found() []Found {
	var out []Found
	for _, inst := range c.order {
		s, ok := c.srv[inst]
		if !ok {
			continue
		}
		name := c.ptr[inst]
		if n := len(name) - len("."+ServiceName); n >= 0 && strings.EqualFold(name[n:], "."+ServiceName) {
			name = name[:n]
		}
		f := Found{
			Instance: Printable(name, 63),
			Host:     Printable(strings.TrimSuffix(s.target, "."), 255),
			Addrs:    c.addrs[s.target],
			From:     s.from,
			Port:     s.port,
			Info:     ParseTXT(c.txt[inst]),
		}
		out = append(out, f)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out
}
