package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

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
