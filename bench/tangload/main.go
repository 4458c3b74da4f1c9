// Command tangload is the load generator of tether's benchmarks: it sends
// Tang recovery requests (POST /rec/{kid}) to any Tang server — tangd or
// tether — so that both are measured with the same client.
//
// Request bodies are valid blinded points computed before the clock starts,
// so the client's own elliptic-curve work does not count against the server.
//
//	tangload -url http://127.0.0.1:7500 -c 64 -d 10s -keepalive
//	tangload -url http://127.0.0.1:7500 -storm 10000
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tether-nbde/tether/bench/internal/loadstat"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/tang"
)

func main() {
	url := flag.String("url", "", "server base URL")
	conc := flag.Int("c", 64, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "duration of the run")
	keepalive := flag.Bool("keepalive", false, "reuse connections (default: a new connection per request, as clevis does)")
	storm := flag.Int("storm", 0, "boot storm: this many clients each recover once, all at the same moment")
	pool := flag.Int("pool", 256, "distinct request bodies to precompute")
	jsonOut := flag.Bool("json", false, "print the result as JSON")
	client := flag.String("client", "raw", "HTTP client: raw (a minimal HTTP/1.1 client, cheap for the load generator) or nethttp")
	raw := flag.String("raw", "", "instead of load: measure raw scalar multiplications per second on this curve (P-256, P-384, P-521)")
	flag.Parse()
	if *raw != "" {
		n, err := rawScalarMults(*raw, *dur)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tangload:", err)
			os.Exit(1)
		}
		fmt.Printf("%.0f\n", n)
		return
	}
	if *url == "" {
		fmt.Fprintln(os.Stderr, "tangload: -url is required")
		os.Exit(2)
	}
	kid, bodies, err := prepare(*url, *pool)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tangload:", err)
		os.Exit(1)
	}
	var r loadstat.Result
	if *storm > 0 {
		r = runStorm(*client, *url, kid, bodies, *storm)
	} else {
		r = runLoad(*client, *url, kid, bodies, *conc, *dur, *keepalive)
	}
	if *jsonOut {
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	fmt.Println(r)
}

// prepare fetches the advertisement and precomputes request bodies.
func prepare(url string, n int) (string, [][]byte, error) {
	var c tang.Client
	adv, err := c.Advertisement(context.Background(), url, "")
	if err != nil {
		return "", nil, err
	}
	ks, _, err := tang.VerifyAdvertisement(adv)
	if err != nil {
		return "", nil, err
	}
	exc := ks.WithOp("deriveKey")
	if len(exc) == 0 {
		return "", nil, fmt.Errorf("no exchange key advertised")
	}
	kid, _ := exc[0].Thumbprint("S256")
	curve, _ := jose.CurveByName(exc[0].Crv)
	bodies := make([][]byte, n)
	for i := range bodies {
		_, p, err := curve.RandomScalar()
		if err != nil {
			return "", nil, err
		}
		k := curve.JWKFromPoint(p)
		k.Alg = "ECMR"
		bodies[i], _ = json.Marshal(k)
	}
	return kid, bodies, nil
}

// poster sends one /rec request and checks the reply. Each client
// goroutine has its own.
type poster interface {
	post(body []byte) error
}

// newPoster returns the client for one goroutine: net/http's, or a raw
// HTTP/1.1 client that costs the load generator less CPU, leaving more of
// the shared machine to the server under test (the same for every server).
func newPoster(kind string, hc *http.Client, base, kid string, keepalive bool) poster {
	if kind == "nethttp" {
		return &httpPoster{c: hc, url: base + "/rec/" + kid}
	}
	u, _ := neturl.Parse(base)
	return &rawPoster{addr: u.Host, path: strings.TrimRight(u.Path, "/") + "/rec/" + kid, keepalive: keepalive}
}

type httpPoster struct {
	c   *http.Client
	url string
}

func (p *httpPoster) post(body []byte) error { return post(p.c, p.url, body) }

// rawPoster speaks just enough HTTP/1.1 for a Tang /rec request.
type rawPoster struct {
	addr, path string
	keepalive  bool
	conn       net.Conn
	br         *bufio.Reader
	req        []byte
}

func (p *rawPoster) post(body []byte) error {
	if p.conn == nil {
		c, err := net.DialTimeout("tcp", p.addr, 30*time.Second)
		if err != nil {
			return err
		}
		p.conn, p.br = c, bufio.NewReaderSize(c, 4096)
	}
	connHdr := "keep-alive"
	if !p.keepalive {
		connHdr = "close"
	}
	p.req = fmt.Appendf(p.req[:0], "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/jwk+json\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n",
		p.path, p.addr, len(body), connHdr)
	p.req = append(p.req, body...)
	err := p.roundTrip()
	if err != nil || !p.keepalive {
		p.conn.Close()
		p.conn = nil
	}
	return err
}

func (p *rawPoster) roundTrip() error {
	p.conn.SetDeadline(time.Now().Add(120 * time.Second))
	if _, err := p.conn.Write(p.req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if !bytes.Contains(b, []byte(`"kty":"EC"`)) || !bytes.Contains(b, []byte(`"y":"`)) {
		return fmt.Errorf("bad reply %q", b)
	}
	return nil
}

func newClient(keepalive bool, conns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     0,
		DisableKeepAlives:   !keepalive,
	}
	return &http.Client{Transport: tr, Timeout: 120 * time.Second}
}

func post(c *http.Client, url string, body []byte) error {
	resp, err := c.Post(url, "application/jwk+json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	var k jose.JWK
	if err := json.Unmarshal(b, &k); err != nil || k.X == "" {
		return fmt.Errorf("bad reply %q", b)
	}
	return nil
}

func runLoad(kind, base, kid string, bodies [][]byte, conc int, dur time.Duration, keepalive bool) loadstat.Result {
	c := newClient(keepalive, conc)
	var rec loadstat.Recorder
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := newPoster(kind, c, base, kid, keepalive)
			for n := i; time.Now().Before(stop); n += conc {
				body := bodies[n%len(bodies)]
				rec.Do(func() error { return p.post(body) })
			}
		}(i)
	}
	wg.Wait()
	return rec.Result(time.Since(start))
}

// runStorm starts n clients that each recover once, released together:
// every device of a site asking at the moment power comes back. The result's
// Seconds is the time to the last success.
func runStorm(kind, base, kid string, bodies [][]byte, n int) loadstat.Result {
	c := newClient(false, n)
	var rec loadstat.Recorder
	var ready, wg sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < n; i++ {
		ready.Add(1)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := newPoster(kind, c, base, kid, false)
			ready.Done()
			<-gate
			rec.Do(func() error { return p.post(bodies[i%len(bodies)]) })
		}(i)
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	wg.Wait()
	return rec.Result(time.Since(start))
}

// rawScalarMults measures one core's variable-base scalar multiplications
// per second on the named curve, with the same code the server uses, for
// the "server overhead vs raw crypto" ratio.
func rawScalarMults(name string, d time.Duration) (float64, error) {
	c, err := jose.CurveByName(name)
	if err != nil {
		return 0, err
	}
	s, p, err := c.RandomScalar()
	if err != nil {
		return 0, err
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if p, err = c.ScalarMult(p, s); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
