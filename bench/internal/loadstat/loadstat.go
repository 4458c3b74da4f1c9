// Package loadstat records the requests of a load generator and sums them
// up as the JSON that bench/run.sh reads. bench/tangload (Tang /rec) and
// bench/mstorm (managed unlocks) share it.
package loadstat

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one run's summary.
type Result struct {
	Requests   int64   `json:"requests"`
	OK         int64   `json:"ok"`
	Failed     int64   `json:"failed"`
	Seconds    float64 `json:"seconds"` // the whole run; for a storm, to the last answer
	PerSecond  float64 `json:"per_second"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	FirstError string  `json:"first_error,omitempty"`
}

func (r Result) String() string {
	s := fmt.Sprintf("requests %d ok %d failed %d in %.2fs: %.0f req/s; p50 %.1fms p99 %.1fms max %.1fms",
		r.Requests, r.OK, r.Failed, r.Seconds, r.PerSecond, r.P50ms, r.P99ms, r.MaxMs)
	if r.Failed > 0 {
		s += "\nfirst error: " + r.FirstError
	}
	return s
}

// Recorder counts requests and keeps the latency of each success. It is
// safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	lat      []time.Duration
	ok, fail atomic.Int64
	firstErr atomic.Value
}

// Do runs one request and records how it went and how long it took.
func (r *Recorder) Do(request func() error) {
	start := time.Now()
	err := request()
	d := time.Since(start)
	if err != nil {
		r.fail.Add(1)
		r.firstErr.CompareAndSwap(nil, err.Error())
		return
	}
	r.ok.Add(1)
	r.mu.Lock()
	r.lat = append(r.lat, d)
	r.mu.Unlock()
}

// Result sums up the requests recorded in a run that took elapsed.
func (r *Recorder) Result(elapsed time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	pct := func(p float64) float64 {
		if len(r.lat) == 0 {
			return 0
		}
		i := int(p * float64(len(r.lat)-1))
		return float64(r.lat[i].Microseconds()) / 1000
	}
	res := Result{OK: r.ok.Load(), Failed: r.fail.Load(), Seconds: elapsed.Seconds(), P50ms: pct(0.5), P99ms: pct(0.99), MaxMs: pct(1)}
	res.Requests = res.OK + res.Failed
	res.PerSecond = float64(res.OK) / elapsed.Seconds()
	if e, ok := r.firstErr.Load().(string); ok {
		res.FirstError = e
	}
	return res
}
