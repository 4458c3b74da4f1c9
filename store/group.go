package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// groupCommit commits the writes of many requests in one transaction.
//
// Every managed unlock appends an audit record and touches its device, and
// each is a commit: an fsync with SQLite's synchronous=FULL, a WAL flush on
// PostgreSQL. One at a time, a disk whose fsync takes 5 ms (an SD card, a
// disk without a write cache) serves at most 100 unlocks a second, so a
// fleet of 10,000 that boots at once would wait minutes. Here the writes
// that arrive while a transaction commits wait for it to finish and then
// go together in the next one: one commit for all of them.
//
// The first writer to find no transaction running leads: it commits the
// queue, batch by batch, until its own write is done, and then hands the
// lead to the first writer still waiting. A write returns only once
// its transaction has committed or failed, whatever its caller's context
// says, so the caller always knows whether it was written. A write that
// fails is taken out and the batch goes again without it, so that one bad
// write does not fail the others.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*groupWrite
	leading bool
	commits atomic.Int64 // transactions committed
}

// groupWrite is one write: fn runs inside the batch's transaction and must
// use only tx. A batch runs its writes in the order of their keys (stable):
// every batch, on every replica, takes its row locks in the same order
// (the audit chain head first, then devices by ID), so that two batches on
// PostgreSQL never wait for each other in a cycle.
type groupWrite struct {
	key  string
	fn   func(tx *sql.Tx) error
	err  error
	done chan struct{} // closed when its transaction has committed or failed
	lead chan struct{} // closed when it is to lead the next batches
}

// maxGroup bounds a batch, so that one transaction never grows without end
// under a steady stream of writes.
const maxGroup = 1000

// groupTimeout bounds one batch's transaction.
const groupTimeout = 30 * time.Second

// inGroup runs fn in a transaction shared with the writes around it; key
// orders it in the batch.
func (s *sqlStore) inGroup(key string, fn func(tx *sql.Tx) error) error {
	g := &s.group
	w := &groupWrite{key: key, fn: fn, done: make(chan struct{}), lead: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	if g.leading {
		g.mu.Unlock()
		select {
		case <-w.done:
			return w.err
		case <-w.lead: // the leader handed over: w is first in the queue
		}
		g.mu.Lock()
	}
	g.leading = true
	for !w.finished() {
		batch := g.queue[:min(len(g.queue), maxGroup)]
		g.queue = g.queue[len(batch):]
		g.mu.Unlock()
		s.commitGroup(batch)
		g.mu.Lock()
	}
	// Our write is done: hand the queue to its first writer rather than
	// keep committing for others while our own caller waits.
	if len(g.queue) > 0 {
		close(g.queue[0].lead)
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	return w.err
}

func (w *groupWrite) finished() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// commitGroup commits batch in one transaction. A write whose fn fails
// gets its error and the rest go again without it; a failure to begin or
// commit fails them all.
func (s *sqlStore) commitGroup(batch []*groupWrite) {
	batch = slices.Clone(batch)
	slices.SortStableFunc(batch, func(a, b *groupWrite) int { return strings.Compare(a.key, b.key) })
	for len(batch) > 0 {
		bad, err := s.commitWrites(batch)
		if err != nil && bad >= 0 {
			batch[bad].err = err
			close(batch[bad].done)
			batch = append(batch[:bad:bad], batch[bad+1:]...)
			continue
		}
		for _, w := range batch {
			w.err = err
			close(w.done)
		}
		return
	}
}

// commitWrites runs ws in one transaction. If one of them fails, bad is
// its index; a failure to begin or commit has bad = -1.
func (s *sqlStore) commitWrites(ws []*groupWrite) (bad int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return -1, err
	}
	defer tx.Rollback()
	for i, w := range ws {
		if err := runWrite(w, tx); err != nil {
			return i, err
		}
	}
	if err := tx.Commit(); err != nil {
		return -1, err
	}
	s.group.commits.Add(1)
	return -1, nil
}

// runWrite runs one write's fn. A panic in it becomes that write's error:
// it must not leave the group without a leader, with every later write
// waiting for ever.
func runWrite(w *groupWrite, tx *sql.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write panicked: %v", p)
		}
	}()
	return w.fn(tx)
}
