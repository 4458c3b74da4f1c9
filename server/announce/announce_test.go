package announce

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/tether-nbde/tether/internal/lan"
)

// TestZone: the answer to a browse carries the instance, its port, the
// listening address and the thumbprints signing now (asked at each
// query, so a rotation shows at once), whatever the case of the question.
func TestZone(t *testing.T) {
	tps := []string{"9C8hYwDgnOzFUuSFlWvrwD5vG5xS8RkKkS52AkQPrAY"}
	z := &zone{
		cfg: Config{Instance: "keys", Path: "/tang", Server: "tether 1.0", Log: slog.Default(),
			Thumbprints: func() []string { return tps }},
		host: "keys.local.", port: 7500, ip: netip.MustParseAddr("10.1.2.3"),
	}
	for _, name := range []string{"_tang._tcp.local.", "_TANG._Tcp.LOCAL."} {
		var got []string
		for _, rr := range z.Records(dns.Question{Name: name, Qtype: dns.TypePTR, Qclass: dns.ClassINET}) {
			got = append(got, strings.ReplaceAll(rr.String(), "\t", " "))
		}
		all := strings.Join(got, "\n")
		for _, want := range []string{
			"_tang._tcp.local. 120 IN PTR keys._tang._tcp.local.",
			"keys._tang._tcp.local. 120 IN SRV 10 1 7500 keys.local.",
			"keys.local. 120 IN A 10.1.2.3",
			`keys._tang._tcp.local. 120 IN TXT "txtvers=1" "thp=` + tps[0] + `" "path=/tang" "server=tether 1.0"`,
		} {
			if !strings.Contains(all, want) {
				t.Errorf("question %s: the answer lacks %q:\n%s", name, want, all)
			}
		}
	}
	tps = []string{strings.Repeat("B", 43)}
	txt := z.Records(dns.Question{Name: "keys._tang._tcp.local.", Qtype: dns.TypeTXT, Qclass: dns.ClassINET})
	if len(txt) != 1 || lan.ParseTXT(txt[0].(*dns.TXT).Txt).Thumbprints[0] != tps[0] {
		t.Errorf("after a rotation: %v", txt)
	}
	if rr := z.Records(dns.Question{Name: "_http._tcp.local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET}); len(rr) != 0 {
		t.Errorf("answers another service: %v", rr)
	}
}

func TestLabel(t *testing.T) {
	for in, want := range map[string]string{"keys.example.net": "keys", "my box": "mybox", "": "tether", "ü.x": "tether"} {
		if got := label(in); got != want {
			t.Errorf("label(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLoopbackNotAnnounced: nobody on the network could reach it.
func TestLoopbackNotAnnounced(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "::1", "::ffff:127.0.0.1"} {
		if a, err := Start(Config{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 7500}}); err != ErrLoopback {
			if a != nil {
				a.Close()
			}
			t.Errorf("listening on %s: %v, want ErrLoopback", ip, err)
		}
	}
}

// TestAnswerReadByBrowser: what this responder packs (miekg/dns, names
// compressed) is what the browser of internal/lan (x/net's dnsmessage)
// reads: the two sides share no code but the TXT format.
func TestAnswerReadByBrowser(t *testing.T) {
	tps := []string{"9C8hYwDgnOzFUuSFlWvrwD5vG5xS8RkKkS52AkQPrAY", strings.Repeat("Q", 43)}
	z := &zone{
		cfg:  Config{Instance: "keys-7600", TLS: true, Server: "tether 1.0", Log: slog.Default(), Thumbprints: func() []string { return tps }},
		host: "keys.local.", port: 7600, ip: netip.MustParseAddr("10.1.2.3"),
	}
	q := dns.Question{Name: lan.ServiceName, Qtype: dns.TypePTR, Qclass: dns.ClassINET}
	msg := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: z.Records(q)}
	pkt, err := msg.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c := lan.NewCollector()
	from := netip.MustParseAddr("10.1.2.3")
	if err := c.Add(pkt, from); err != nil {
		t.Fatal(err)
	}
	found := c.Found()
	if len(found) != 1 {
		t.Fatalf("the browser read %+v", found)
	}
	f := found[0]
	if f.Instance != "keys-7600" || f.Host != "keys.local" || f.Port != 7600 || f.URL() != "https://10.1.2.3:7600" ||
		strings.Join(f.Thumbprints, ",") != strings.Join(tps, ",") || f.Server != "tether 1.0" {
		t.Errorf("the browser read %+v", f)
	}
}
