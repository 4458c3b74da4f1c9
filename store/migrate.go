package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Schema versions. The schema_version table holds one row, the number of
// the last migration applied. A store without it is version 0: either
// empty, or made by a release before schema versions, whose tables
// migration 1 completes (it is those releases' own CREATE ... IF NOT
// EXISTS). Opening a store applies the missing migrations in one
// transaction, with the version bump in the same transaction: if it fails
// or the process dies, the store is left at its old version, with its old
// data, and the next open tries again. A store whose version is higher
// than this build's is refused: this build would not know what the newer
// columns mean.
//
// Both databases run DDL inside transactions (SQLite natively,
// PostgreSQL too), so one mechanism serves both.

// migration is one step of the schema. sql uses {blob} and {int} for the
// dialect's types; run, if set, is Go code that runs after sql in the same
// transaction (a change that must compute, not only declare).
type migration struct {
	version int
	sql     string
	run     func(ctx context.Context, c *sql.Conn) error
}

// migrations are applied in order; append, never edit or reorder: a
// store records only how far it got.
var migrations = []migration{
	{version: 1, sql: schemaV1},
	// PendingApprovals (every admin's approval list, and every unlock that
	// waits) looked at every approval ever made: they are never deleted.
	{version: 2, sql: `CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (state, deadline);`},
	// The PCR values devices asked the server to sign (signed PCR
	// policies, server/managed/pcrsign.go), and what was decided.
	{version: 3, sql: `CREATE TABLE IF NOT EXISTS pcr_states (
	device TEXT NOT NULL,
	bank TEXT NOT NULL,
	pcr_ids TEXT NOT NULL,
	policy TEXT NOT NULL,
	pcr_values TEXT NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	created {int} NOT NULL,
	decided {int} NOT NULL,
	PRIMARY KEY (device, bank, pcr_ids, policy)
);
CREATE INDEX IF NOT EXISTS pcr_states_policy ON pcr_states (bank, pcr_ids, policy);
CREATE INDEX IF NOT EXISTS pcr_states_state ON pcr_states (state, created);`},
}

// SchemaVersion is the schema version this build writes.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// ErrSchemaTooNew is wrapped by the error that refuses a store made by a
// newer build.
var ErrSchemaTooNew = errors.New("made by a newer tether")

// dialect is what differs between the databases when migrating.
type dialect struct {
	blob, int string
	// begin starts the migration transaction and takes the lock that keeps
	// two processes (replicas, or a server and tether server admin) from
	// migrating at once: both read the version under it.
	begin []string
	// hasDevices counts the devices tables (0 or 1): at version 0 it tells
	// an empty database from a store made before schema versions.
	hasDevices string
}

var (
	// IMMEDIATE takes SQLite's write lock at BEGIN: with a deferred BEGIN
	// two openers could both read version 0 and one fail at its first write.
	sqliteDialect = dialect{blob: "BLOB", int: "INTEGER", begin: []string{"BEGIN IMMEDIATE"},
		hasDevices: `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'devices'`}
	// The advisory lock is released by COMMIT or ROLLBACK.
	postgresDialect = dialect{blob: "BYTEA", int: "BIGINT", begin: []string{"BEGIN", "SELECT pg_advisory_xact_lock(7500)"},
		hasDevices: `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'devices'`}
)

func (d dialect) ddl(s string) string {
	return strings.NewReplacer("{blob}", d.blob, "{int}", d.int).Replace(s)
}

// Upgraded is implemented by the SQL stores: whether opening the store
// upgraded the schema of an existing store, and from which version (0:
// made before schema versions), so the server can log it. A new store is
// not upgraded.
type Upgraded interface {
	SchemaUpgrade() (from, to int, upgraded bool)
}

func (s *sqlStore) SchemaUpgrade() (from, to int, upgraded bool) {
	return s.schemaFrom, SchemaVersion(), !s.schemaNew && s.schemaFrom != SchemaVersion()
}

// migrate brings the store in db to SchemaVersion, or refuses it, and
// returns the version it found and whether the store was empty (created,
// not upgraded). name says which store for errors (never a DSN: it may
// hold a password).
func migrate(ctx context.Context, db *sql.DB, d dialect, name string, steps []migration) (have int, created bool, err error) {
	c, err := db.Conn(ctx)
	if err != nil {
		return have, false, fmt.Errorf("store %s: %w", name, err)
	}
	defer c.Close()
	for _, stmt := range d.begin {
		if _, err := c.ExecContext(ctx, stmt); err != nil {
			if stmt != d.begin[0] {
				c.ExecContext(context.Background(), "ROLLBACK")
			}
			return have, false, fmt.Errorf("store %s: lock the schema: %w", name, err)
		}
	}
	done := false
	defer func() {
		if !done {
			// On PostgreSQL a failed statement aborts the transaction
			// anyway; on SQLite this undoes the DDL that did run.
			c.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	if _, err := c.ExecContext(ctx, d.ddl(`CREATE TABLE IF NOT EXISTS schema_version (id {int} PRIMARY KEY, version {int} NOT NULL)`)); err != nil {
		return have, false, fmt.Errorf("store %s: read the schema version: %w", name, err)
	}
	switch err := c.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&have); {
	case errors.Is(err, sql.ErrNoRows):
		// Version 0: empty, or made before schema versions.
		var n int
		if err := c.QueryRowContext(ctx, d.hasDevices).Scan(&n); err != nil {
			return 0, false, fmt.Errorf("store %s: read the schema version: %w", name, err)
		}
		have, created = 0, n == 0
	case err != nil:
		return have, false, fmt.Errorf("store %s: read the schema version: %w", name, err)
	}
	want := steps[len(steps)-1].version
	if have > want {
		return have, false, fmt.Errorf("store %s: %w: its schema is version %d, but this tether knows versions up to %d; "+
			"run the tether that upgraded it, or restore a backup from before the upgrade", name, ErrSchemaTooNew, have, want)
	}
	if have == want {
		return have, false, nil
	}
	for _, m := range steps {
		if m.version <= have {
			continue
		}
		if _, err := c.ExecContext(ctx, d.ddl(m.sql)); err != nil {
			return have, false, fmt.Errorf("store %s: upgrade the schema from version %d to %d: %w; the store is unchanged at version %d", name, have, m.version, err, have)
		}
		if m.run != nil {
			if err := m.run(ctx, c); err != nil {
				return have, false, fmt.Errorf("store %s: upgrade the schema from version %d to %d: %w; the store is unchanged at version %d", name, have, m.version, err, have)
			}
		}
	}
	if _, err := c.ExecContext(ctx, `INSERT INTO schema_version (id, version) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET version = excluded.version`, want); err != nil {
		return have, false, fmt.Errorf("store %s: record schema version %d: %w; the store is unchanged at version %d", name, want, err, have)
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		return have, false, fmt.Errorf("store %s: upgrade the schema from version %d to %d: commit: %w", name, have, want, err)
	}
	done = true
	return have, created, nil
}
