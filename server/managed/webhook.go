package managed

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tether-nbde/tether/audit"
)

// Event is the JSON body POSTed to webhooks. It is sent after its audit
// record is committed; Seq names that record.
type Event struct {
	Event string    `json:"event"` // unlock, deny, approval, quiet, revoke
	Time  time.Time `json:"time"`
	Seq   int64     `json:"seq"`
	// Hash is the audit record's hash: a receiver that keeps it holds an
	// anchor (tether admin audit verify --anchor SEQ:HASH) that detects a
	// log rewritten or cut short later, even with every link recomputed.
	Hash   string `json:"hash,omitempty"`
	Device string `json:"device,omitempty"`
	Name   string `json:"name,omitempty"`
	Source string `json:"source,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// webhooks delivers events in order from one goroutine, so a slow
// receiver never delays an unlock. The queue is bounded: when it is full
// events are dropped (and logged) rather than blocking the server; the
// audit log remains the complete record.
type webhooks struct {
	urls   []string
	log    *slog.Logger
	q      chan queuedEvent
	done   chan struct{}
	client *http.Client
	once   sync.Once
}

func newWebhooks(urls []string, log *slog.Logger) *webhooks {
	w := &webhooks{urls: urls, log: log, q: make(chan queuedEvent, 1024), done: make(chan struct{}),
		client: &http.Client{Timeout: 5 * time.Second}}
	go w.run()
	return w
}

// queuedEvent is an event and the audit record it reports, which gives
// it its time, seq and hash.
type queuedEvent struct {
	e   Event
	rec *audit.Record
}

// send queues e, about the committed audit record rec. The record's hash
// is worked out by the sender goroutine, and only if anyone listens: not
// on the request's path.
func (w *webhooks) send(e Event, rec *audit.Record) {
	if len(w.urls) == 0 {
		return
	}
	select {
	case w.q <- queuedEvent{e, rec}:
	default:
		w.log.Warn("webhook queue full: event dropped", "event", e.Event, "seq", rec.Seq)
	}
}

func (w *webhooks) run() {
	defer close(w.done)
	for q := range w.q {
		e := q.e
		e.Time, e.Seq, e.Hash = q.rec.Time, q.rec.Seq, q.rec.Hash()
		body, _ := json.Marshal(e)
		for _, u := range w.urls {
			for attempt := 0; attempt < 3; attempt++ {
				resp, err := w.client.Post(u, "application/json", bytes.NewReader(body))
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode < 300 {
						break
					}
				}
				w.log.Warn("webhook delivery failed", "url", u, "event", e.Event, "attempt", attempt+1, "err", err)
				time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
			}
		}
	}
}

func (w *webhooks) close() {
	w.once.Do(func() { close(w.q) })
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
	}
}
