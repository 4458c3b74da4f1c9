package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // pure Go SQLite, driver name "sqlite"
)

// OpenSQLite opens (creating if needed) the SQLite store at path and
// brings its schema up to date (store/migrate.go). The file is created
// 0600: it holds wrapped keys and the audit log.
//
// Durability: WAL with synchronous=FULL, so a write the server has
// acknowledged survives kill -9 and power loss. secure_delete overwrites
// the pages of deleted rows (a revoked device's wrapped key), and Revoke
// checkpoints the WAL so no copy lingers there either (see Checkpoint).
func OpenSQLite(ctx context.Context, path string) (Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	f.Close()
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "secure_delete(ON)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	// One connection: SQLite has one writer anyway, and a single
	// connection makes every transaction (the audit append above all)
	// serial without busy retries.
	db.SetMaxOpenConns(1)
	from, created, err := migrate(ctx, db, sqliteDialect, path, migrations)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &sqliteStore{sqlStore{db: db, schemaFrom: from, schemaNew: created}}, nil
}

type sqliteStore struct{ sqlStore }

// Checkpoint moves the WAL into the database file and truncates it, so
// that deleted data (with secure_delete on) is gone from both files.
func (s *sqliteStore) Checkpoint(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}

// Checkpointer is implemented by stores that keep a write-ahead log that
// can hold copies of deleted data.
type Checkpointer interface {
	Checkpoint(ctx context.Context) error
}
