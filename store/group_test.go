package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openGroupStore(t *testing.T) *sqlStore {
	t.Helper()
	st, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &st.(*sqliteStore).sqlStore
	if _, err := s.db.Exec(`CREATE TABLE g (n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	return s
}

func insertN(n int, pause time.Duration) func(tx *sql.Tx) error {
	return func(tx *sql.Tx) error {
		time.Sleep(pause) // a slow disk
		_, err := tx.Exec(`INSERT INTO g (n) VALUES ($1)`, n)
		return err
	}
}

// Concurrent writes share transactions, each is written exactly once, and
// a write that fails fails alone.
func TestGroupCommitBatchesAndIsolates(t *testing.T) {
	s := openGroupStore(t)
	bad := errors.New("bad write")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 77 {
				errs[i] = s.inGroup("w", func(tx *sql.Tx) error { return bad })
				return
			}
			errs[i] = s.inGroup("w", insertN(i, time.Millisecond))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i == 77) != (err != nil) || (i == 77 && !errors.Is(err, bad)) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	var n, distinct int
	s.db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT n) FROM g`).Scan(&n, &distinct)
	if n != 199 || distinct != 199 {
		t.Fatalf("%d rows (%d distinct), want 199", n, distinct)
	}
	// 199 writes alone would be 199 transactions (the batch with the bad
	// write goes again without it: one more).
	t.Logf("%d transactions for 199 writes", s.group.commits.Load())
	if c := s.group.commits.Load(); c > 199/2 {
		t.Fatalf("%d transactions for 199 concurrent writes: not grouped", c)
	}
}

// The leader hands over once its own write is done: under a steady stream
// of writes, an early writer does not wait for the stream to end.
func TestGroupCommitLeaderHandsOver(t *testing.T) {
	s := openGroupStore(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.inGroup("w", insertN(i, 2*time.Millisecond)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // the stream is flowing
	var worst time.Duration
	for i := 0; i < 20; i++ {
		start := time.Now()
		if err := s.inGroup("w", insertN(-1, 2*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
	}
	close(stop)
	wg.Wait()
	// A write waits for at most the batch in progress and its own: about
	// 2 × 9 writes × 2 ms here, not the whole stream.
	if worst > 500*time.Millisecond {
		t.Fatalf("a write under a steady stream took %v", worst)
	}
}

// A batch runs its writes in key order, whatever order they came in.
func TestGroupCommitKeyOrder(t *testing.T) {
	s := openGroupStore(t)
	var order []string
	batch := []*groupWrite{}
	for _, k := range []string{"touch:b", "audit", "touch:a", "audit"} {
		batch = append(batch, &groupWrite{key: k, done: make(chan struct{}), fn: func(tx *sql.Tx) error {
			order = append(order, k)
			return nil
		}})
	}
	s.commitGroup(batch)
	if fmt.Sprint(order) != "[audit audit touch:a touch:b]" {
		t.Fatalf("ran in order %v", order)
	}
}

// A write that panics fails alone, and the group keeps working.
func TestGroupCommitPanickingWrite(t *testing.T) {
	s := openGroupStore(t)
	err := s.inGroup("w", func(tx *sql.Tx) error { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("panicking write: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.inGroup("w", insertN(1, 0)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the group is wedged after a panicking write")
	}
}
