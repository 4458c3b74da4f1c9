package lan

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"unicode"

	"golang.org/x/net/dns/dnsmessage"
)

const thp = "9C8hYwDgnOzFUuSFlWvrwD5vG5xS8RkKkS52AkQPrAY"

// answer builds a responder's answer, the way tether-server's (and
// avahi's) look: PTR, SRV, TXT and A in one packet, names compressed.
func answer(t testing.TB, instance, target string, port uint16, txt []string, addrs ...netip.Addr) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true, Authoritative: true})
	b.EnableCompression()
	b.StartAnswers()
	inst := dnsmessage.MustNewName(instance + "." + ServiceName)
	tgt := dnsmessage.MustNewName(target)
	hdr := func(n dnsmessage.Name) dnsmessage.ResourceHeader {
		return dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: 120}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.PTRResource(hdr(dnsmessage.MustNewName(ServiceName)), dnsmessage.PTRResource{PTR: inst}))
	must(b.SRVResource(hdr(inst), dnsmessage.SRVResource{Target: tgt, Port: port}))
	must(b.TXTResource(hdr(inst), dnsmessage.TXTResource{TXT: txt}))
	for _, a := range addrs {
		if a.Is4() {
			must(b.AResource(hdr(tgt), dnsmessage.AResource{A: a.As4()}))
		} else {
			must(b.AAAAResource(hdr(tgt), dnsmessage.AAAAResource{AAAA: a.As16()}))
		}
	}
	pkt, err := b.Finish()
	must(err)
	return pkt
}

func TestCollector(t *testing.T) {
	from := netip.MustParseAddr("192.168.1.5")
	c := NewCollector()
	txt := TXT(Info{Thumbprints: []string{thp}, Path: "/tang", Server: "tether 1.0"})
	if err := c.Add(answer(t, "keys", "keys.local.", 7500, txt, netip.MustParseAddr("172.17.0.1"), from), from); err != nil {
		t.Fatal(err)
	}
	// Another service's answer, and a query, are ignored.
	other := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true})
	other.StartAnswers()
	other.SRVResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("printer._ipp._tcp.local."), Class: dnsmessage.ClassINET},
		dnsmessage.SRVResource{Target: dnsmessage.MustNewName("p.local."), Port: 631})
	pkt, _ := other.Finish()
	c.Add(pkt, from)
	if err := c.Add(Query(ServiceName, dnsmessage.TypePTR), from); err == nil {
		t.Error("a query was taken as an answer")
	}
	got := c.Found()
	if len(got) != 1 {
		t.Fatalf("found %+v", got)
	}
	f := got[0]
	if f.Instance != "keys" || f.Host != "keys.local" || f.Port != 7500 || !reflect.DeepEqual(f.Thumbprints, []string{thp}) ||
		f.Path != "/tang" || f.Server != "tether 1.0" || f.TLS {
		t.Errorf("found %+v", f)
	}
	// The sender's address is preferred: 172.17.0.1 is a bridge the
	// server has, not where this machine reaches it.
	if f.URL() != "http://192.168.1.5:7500/tang" {
		t.Errorf("URL %s", f.URL())
	}
}

func TestCollectorCaseAndMissing(t *testing.T) {
	from := netip.MustParseAddr("fe80::1%eth0")
	c := NewCollector()
	// Names are case-insensitive; no address record: the sender is used,
	// with its zone.
	pkt := answer(t, "Keys", "KEYS.local.", 7500, TXT(Info{TLS: true}))
	pkt = []byte(strings.Replace(string(pkt), "_tang", "_TANG", 1))
	if err := c.Add(pkt, from); err != nil {
		t.Fatal(err)
	}
	got := c.Found()
	if len(got) != 1 || got[0].URL() != "https://[fe80::1%25eth0]:7500" || got[0].Thumbprints != nil {
		t.Fatalf("found %+v", got)
	}
	if m := c.missing(); len(m) != 1 || m[0].typ != dnsmessage.TypeA || m[0].name != "keys.local." {
		t.Errorf("missing %+v", m)
	}
}

func TestParseTXT(t *testing.T) {
	in := Info{Thumbprints: []string{thp, strings.Repeat("A", 43)}, Path: "/tang", TLS: true, Server: "tether 2.0"}
	if got := ParseTXT(TXT(in)); !reflect.DeepEqual(got, in) {
		t.Errorf("round trip: %+v, want %+v", got, in)
	}
	got := ParseTXT([]string{
		"thp=" + thp + ",not a thumbprint,../../x",
		"thp=" + strings.Repeat("B", 43), // only the first occurrence counts
		"path=/../etc",
		"server=evil\x1b[2J\x07name",
	})
	if !reflect.DeepEqual(got.Thumbprints, []string{thp}) || got.Path != "" || got.Server != "evil[2Jname" {
		t.Errorf("ParseTXT: %+v", got)
	}
}

// FuzzCollector: whatever arrives from the network, a browse neither
// panics nor returns something it should not show or fetch: a port, at
// most the limits, thumbprints of base64url, names without control
// characters.
func FuzzCollector(f *testing.F) {
	from := netip.MustParseAddr("10.0.0.7")
	f.Add(answer(f, "keys", "keys.local.", 7500, TXT(Info{Thumbprints: []string{thp}, Path: "/p"}), from))
	f.Add(answer(f, "a b", "h.local.", 1, []string{"thp=x", "tls=1", "=", ""}, netip.MustParseAddr("::1")))
	f.Add(Query(ServiceName, dnsmessage.TypePTR))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c := NewCollector()
		c.Add(pkt, from)
		c.Add(pkt, from) // a repeat changes nothing
		for _, q := range c.missing() {
			if _, err := dnsmessage.NewName(q.name); err != nil {
				t.Fatalf("would ask for a name that cannot be sent: %q", q.name)
			}
		}
		fs := c.Found()
		if len(fs) > maxInstances {
			t.Fatalf("%d servers", len(fs))
		}
		for _, f := range fs {
			if f.Port == 0 || len(f.Addrs) > maxAddrs || len(f.Thumbprints) > MaxThumbprints {
				t.Fatalf("found %+v", f)
			}
			for _, tp := range f.Thumbprints {
				if !validThumbprint(tp) {
					t.Fatalf("thumbprint %q", tp)
				}
			}
			for _, s := range []string{f.Instance, f.Host, f.Server, f.Path, f.URL()} {
				for _, r := range s {
					if unicode.IsControl(r) {
						t.Fatalf("control character in %q", s)
					}
				}
			}
		}
	})
}
