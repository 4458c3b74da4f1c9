package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/store"
	"github.com/tether-nbde/tether/store/pgtest"
)

func TestPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	var n atomic.Int32
	store.RunSuite(t, func(t *testing.T) store.Store {
		dsn := pg.CreateDB(t, fmt.Sprintf("suite%d", n.Add(1)))
		s, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// Two replicas on one PostgreSQL database, both in a boot storm: their
// batches of audit appends and touches of many devices take row locks in
// the same order, so no transaction dies in a deadlock, and the chain
// stays one line.
func TestPostgresReplicasStorm(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDB(t, "replicas")
	ctx := context.Background()
	var replicas [2]store.Store
	for i := range replicas {
		s, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		replicas[i] = s
	}
	const devices, rounds = 20, 30
	t0 := time.Unix(1e9, 0)
	for i := 0; i < devices; i++ {
		id := fmt.Sprintf("d%02d", i)
		err := replicas[0].CreateDevice(ctx, &policy.Device{ID: id, Name: id, KeyID: "k" + id, PublicKey: []byte{1},
			State: policy.Enabled, ExchangeKey: []byte{1}, ExchangePub: `{"kty":"EC"}`, Created: t0, Updated: t0, LastSeen: t0})
		if err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for r := 0; r < rounds; r++ {
		for i := 0; i < devices; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Each replica serves every device, in opposite orders.
				s := replicas[(r+i)%2]
				id := fmt.Sprintf("d%02d", i)
				if (r+i)%2 == 1 {
					id = fmt.Sprintf("d%02d", devices-1-i)
				}
				now := t0.Add(time.Duration(r*devices+i+1) * time.Millisecond)
				if err := s.Touch(ctx, id, now); err != nil {
					failed.Add(1)
					t.Error("touch:", err)
				}
				if err := s.AppendAudit(ctx, &audit.Record{Time: now, Device: id, Action: "unlock", Decision: audit.Allow}); err != nil {
					failed.Add(1)
					t.Error("append:", err)
				}
			}()
		}
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d writes failed", failed.Load())
	}
	ch := audit.NewChain()
	n := 0
	for after := int64(0); ; {
		recs, err := replicas[1].Audit(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if err := ch.Next(r); err != nil {
				t.Fatal(err)
			}
			after = r.Seq
			n++
		}
	}
	if n != devices*rounds {
		t.Fatalf("%d audit records, want %d", n, devices*rounds)
	}
}
