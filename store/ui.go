package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The dashboard's accounts and sign-in sessions. They live in the store
// (not in a server's memory) so that every replica behind a load balancer
// knows every session, and signing out or removing an account on one
// replica ends the session on all of them.

// UIUser is a dashboard account. Hash is a PHC-format argon2id string;
// the store never sees a password.
type UIUser struct {
	Name    string
	Hash    string
	Created time.Time
	Updated time.Time
}

// Session is a signed-in browser. ID is the SHA-256 (hex) of the cookie's
// secret: a copy of the database does not give anyone a live session.
type Session struct {
	ID       string
	User     string
	CSRF     string // per-session token the page sends with every change
	Source   string // address that signed in
	Created  time.Time
	LastSeen time.Time
}

// UIStore persists dashboard accounts and sessions. The SQL stores
// implement it; the server checks for it with a type assertion so that
// other Store implementations need not.
type UIStore interface {
	// CreateUIUser adds an account; ErrExists if the name is taken.
	CreateUIUser(ctx context.Context, u *UIUser) error
	// SetUIUserHash replaces an account's password hash and ends its
	// sessions; ErrNotFound if there is no such account.
	SetUIUserHash(ctx context.Context, name, hash string, now time.Time) error
	UIUser(ctx context.Context, name string) (*UIUser, error)
	UIUsers(ctx context.Context) ([]*UIUser, error)
	// DeleteUIUser removes an account and its sessions.
	DeleteUIUser(ctx context.Context, name string) error

	CreateSession(ctx context.Context, s *Session) error
	Session(ctx context.Context, id string) (*Session, error)
	// TouchSession moves a session's LastSeen forward.
	TouchSession(ctx context.Context, id string, t time.Time) error
	DeleteSession(ctx context.Context, id string) error
	// DeleteSessionsBefore removes sessions created before created or idle
	// since before seen (expired ones).
	DeleteSessionsBefore(ctx context.Context, created, seen time.Time) error
}

const uiSchema = `
CREATE TABLE IF NOT EXISTS ui_users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, created {int} NOT NULL, updated {int} NOT NULL);
CREATE TABLE IF NOT EXISTS ui_sessions (
	id TEXT PRIMARY KEY, usr TEXT NOT NULL, csrf TEXT NOT NULL, source TEXT NOT NULL,
	created {int} NOT NULL, last_seen {int} NOT NULL
);
`

func (s *sqlStore) CreateUIUser(ctx context.Context, u *UIUser) error {
	res, err := s.db.ExecContext(ctx, `INSERT INTO ui_users (name, hash, created, updated) VALUES ($1,$2,$3,$4)
		ON CONFLICT (name) DO NOTHING`, u.Name, u.Hash, nanos(u.Created), nanos(u.Updated))
	if err != nil {
		return fmt.Errorf("create account %s: %w", u.Name, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("account %s: %w", u.Name, ErrExists)
	}
	return nil
}

func (s *sqlStore) SetUIUserHash(ctx context.Context, name, hash string, now time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE ui_users SET hash=$1, updated=$2 WHERE name=$3`, hash, nanos(now), name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNotFound
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ui_sessions WHERE usr=$1`, name); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *sqlStore) UIUser(ctx context.Context, name string) (*UIUser, error) {
	var u UIUser
	var c, up int64
	err := s.db.QueryRowContext(ctx, `SELECT name, hash, created, updated FROM ui_users WHERE name=$1`, name).Scan(&u.Name, &u.Hash, &c, &up)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	u.Created, u.Updated = fromNanos(c), fromNanos(up)
	return &u, nil
}

func (s *sqlStore) UIUsers(ctx context.Context) ([]*UIUser, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, hash, created, updated FROM ui_users ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*UIUser
	for rows.Next() {
		var u UIUser
		var c, up int64
		if err := rows.Scan(&u.Name, &u.Hash, &c, &up); err != nil {
			return nil, err
		}
		u.Created, u.Updated = fromNanos(c), fromNanos(up)
		out = append(out, &u)
	}
	return out, rows.Err()
}

func (s *sqlStore) DeleteUIUser(ctx context.Context, name string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM ui_users WHERE name=$1`, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNotFound
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ui_sessions WHERE usr=$1`, name); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *sqlStore) CreateSession(ctx context.Context, ss *Session) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO ui_sessions (id, usr, csrf, source, created, last_seen) VALUES ($1,$2,$3,$4,$5,$6)`,
		ss.ID, ss.User, ss.CSRF, ss.Source, nanos(ss.Created), nanos(ss.LastSeen))
	return err
}

func (s *sqlStore) Session(ctx context.Context, id string) (*Session, error) {
	var ss Session
	var c, l int64
	err := s.db.QueryRowContext(ctx, `SELECT id, usr, csrf, source, created, last_seen FROM ui_sessions WHERE id=$1`, id).
		Scan(&ss.ID, &ss.User, &ss.CSRF, &ss.Source, &c, &l)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	ss.Created, ss.LastSeen = fromNanos(c), fromNanos(l)
	return &ss, nil
}

func (s *sqlStore) TouchSession(ctx context.Context, id string, t time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE ui_sessions SET last_seen=$1 WHERE id=$2 AND last_seen < $1`, nanos(t), id)
	return err
}

func (s *sqlStore) DeleteSession(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM ui_sessions WHERE id=$1`, id)
	return err
}

func (s *sqlStore) DeleteSessionsBefore(ctx context.Context, created, seen time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM ui_sessions WHERE created < $1 OR last_seen < $2`, nanos(created), nanos(seen))
	return err
}
