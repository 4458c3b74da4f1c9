package tangport

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-nbde/tether/server/connlimit"
)

// Metrics counts requests per endpoint and status, and their latency, in
// the Prometheus text exposition format. A handful of counters do not
// justify the Prometheus client library.
type Metrics struct {
	mu       sync.Mutex
	requests map[[2]string]*atomic.Uint64 // {endpoint, code} -> count
	// latency histogram of /rec, in seconds
	recBuckets [len(recBounds)]atomic.Uint64
	recCount   atomic.Uint64
	recSumNs   atomic.Uint64
	start      time.Time
	listeners  []*connlimit.Listener // connection caps; added before serving
}

// AddListener adds a capped listener's figures to the metrics.
func (m *Metrics) AddListener(l *connlimit.Listener) {
	m.mu.Lock()
	m.listeners = append(m.listeners, l)
	m.mu.Unlock()
}

var recBounds = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}

// NewMetrics starts the metrics of a server; its uptime counts from now.
func NewMetrics() *Metrics {
	return &Metrics{requests: map[[2]string]*atomic.Uint64{}, start: time.Now()}
}

// Observe counts one request to endpoint ("adv", "rec", "other") answered
// with code after d; tang.Server.Observe takes it.
func (m *Metrics) Observe(endpoint string, code int, d time.Duration) {
	key := [2]string{endpoint, strconv.Itoa(code)}
	m.mu.Lock()
	c, ok := m.requests[key]
	if !ok {
		c = new(atomic.Uint64)
		m.requests[key] = c
	}
	m.mu.Unlock()
	c.Add(1)
	if endpoint == "rec" && code == 200 {
		s := d.Seconds()
		for i, b := range recBounds {
			if s <= b {
				m.recBuckets[i].Add(1)
			}
		}
		m.recCount.Add(1)
		m.recSumNs.Add(uint64(d.Nanoseconds()))
	}
}

// Write writes the metrics in the Prometheus text format.
func (m *Metrics) Write(w io.Writer) {
	fmt.Fprintln(w, "# HELP tether_http_requests_total Tang protocol requests by endpoint and status code.")
	fmt.Fprintln(w, "# TYPE tether_http_requests_total counter")
	m.mu.Lock()
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	m.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		m.mu.Lock()
		v := m.requests[k].Load()
		m.mu.Unlock()
		fmt.Fprintf(w, "tether_http_requests_total{endpoint=%q,code=%q} %d\n", k[0], k[1], v)
	}
	fmt.Fprintln(w, "# HELP tether_rec_duration_seconds Time to answer successful key recovery requests.")
	fmt.Fprintln(w, "# TYPE tether_rec_duration_seconds histogram")
	for i, b := range recBounds {
		fmt.Fprintf(w, "tether_rec_duration_seconds_bucket{le=\"%g\"} %d\n", b, m.recBuckets[i].Load())
	}
	n := m.recCount.Load()
	fmt.Fprintf(w, "tether_rec_duration_seconds_bucket{le=\"+Inf\"} %d\n", n)
	fmt.Fprintf(w, "tether_rec_duration_seconds_sum %g\n", float64(m.recSumNs.Load())/1e9)
	fmt.Fprintf(w, "tether_rec_duration_seconds_count %d\n", n)
	fmt.Fprintln(w, "# HELP tether_uptime_seconds Seconds since the server started.")
	fmt.Fprintln(w, "# TYPE tether_uptime_seconds gauge")
	fmt.Fprintf(w, "tether_uptime_seconds %g\n", time.Since(m.start).Seconds())
	m.mu.Lock()
	ls := append([]*connlimit.Listener(nil), m.listeners...)
	m.mu.Unlock()
	connlimit.WriteMetrics(w, ls)
}
