package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-nbde/tether/store"
	"github.com/tether-nbde/tether/store/pgtest"
)

// uiSuite checks dashboard accounts and sessions on one store kind.
func uiSuite(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	us, ok := open(t).(store.UIStore)
	if !ok {
		t.Fatal("store does not implement UIStore")
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := us.CreateUIUser(ctx, &store.UIUser{Name: "alice", Hash: "h1", Created: now, Updated: now}); err != nil {
		t.Fatal(err)
	}
	if err := us.CreateUIUser(ctx, &store.UIUser{Name: "alice", Hash: "h2", Created: now, Updated: now}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second alice: %v", err)
	}
	u, err := us.UIUser(ctx, "alice")
	if err != nil || u.Hash != "h1" || !u.Created.Equal(now) {
		t.Fatalf("alice: %+v %v", u, err)
	}
	s := &store.Session{ID: "sid", User: "alice", CSRF: "c", Source: "127.0.0.1", Created: now, LastSeen: now}
	if err := us.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	us.TouchSession(ctx, "sid", now.Add(time.Minute))
	us.TouchSession(ctx, "sid", now) // never backwards
	got, err := us.Session(ctx, "sid")
	if err != nil || got.User != "alice" || got.CSRF != "c" || !got.LastSeen.Equal(now.Add(time.Minute)) {
		t.Fatalf("session: %+v %v", got, err)
	}
	// A password change ends the account's sessions.
	if err := us.SetUIUserHash(ctx, "alice", "h3", now); err != nil {
		t.Fatal(err)
	}
	if _, err := us.Session(ctx, "sid"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session after password change: %v", err)
	}
	if err := us.SetUIUserHash(ctx, "bob", "h", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("password of a missing account: %v", err)
	}
	// Expired sessions are swept; live ones stay.
	us.CreateSession(ctx, &store.Session{ID: "old", User: "alice", Created: now.Add(-13 * time.Hour), LastSeen: now})
	us.CreateSession(ctx, &store.Session{ID: "idle", User: "alice", Created: now, LastSeen: now.Add(-time.Hour)})
	us.CreateSession(ctx, &store.Session{ID: "live", User: "alice", Created: now, LastSeen: now})
	if err := us.DeleteSessionsBefore(ctx, now.Add(-12*time.Hour), now.Add(-30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"old": false, "idle": false, "live": true} {
		if _, err := us.Session(ctx, id); (err == nil) != want {
			t.Errorf("session %s after sweep: %v", id, err)
		}
	}
	// Removing the account ends its sessions.
	if err := us.DeleteUIUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := us.Session(ctx, "live"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session of a removed account: %v", err)
	}
	if users, _ := us.UIUsers(ctx); len(users) != 0 {
		t.Fatalf("users: %+v", users)
	}
}

func TestUISQLite(t *testing.T) {
	uiSuite(t, func(t *testing.T) store.Store {
		s, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "t.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestUIPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	var n atomic.Int32
	uiSuite(t, func(t *testing.T) store.Store {
		s, err := store.Open(context.Background(), pg.CreateDB(t, fmt.Sprintf("ui%d", n.Add(1))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
