package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/store/pgtest"
)

// copyFixture copies the SQLite upgrade fixture to a temporary file.
func copyFixture(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/unversioned/sqlite.db")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tether.db")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func rawSQLite(t *testing.T, p string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+p+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func rawPostgres(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// schemaVersion reads the recorded version: 0 when there is none.
func schemaVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	err := db.QueryRow(`SELECT version FROM schema_version WHERE id = 1`).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) && !strings.Contains(err.Error(), "schema_version") {
		t.Fatalf("read schema version: %v", err)
	}
	return v
}

// hasIndex says whether the migration 2 index exists.
func hasIndex(t *testing.T, db *sql.DB, pg bool) bool {
	t.Helper()
	q := `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'approvals_pending'`
	if pg {
		q = `SELECT count(*) FROM pg_indexes WHERE indexname = 'approvals_pending'`
	}
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// checkUpgraded checks a store opened from a fixture: every row as
// fillFixture made it (want), and the store still works: the audit chain
// verifies and extends, the token is consumed once, the approval list
// uses the new index's table as before.
func checkUpgraded(t *testing.T, s Store, db *sql.DB, want string, pg bool) {
	t.Helper()
	ctx := context.Background()
	if got := dumpRows(t, db); got != want {
		t.Fatalf("upgraded store differs from the fixture's data:\n--- got\n%s\n--- want\n%s", got, want)
	}
	if v := schemaVersion(t, db); v != SchemaVersion() {
		t.Fatalf("schema version after upgrade = %d, want %d", v, SchemaVersion())
	}
	if !hasIndex(t, db, pg) {
		t.Fatal("migration 2's index approvals_pending is missing after the upgrade")
	}
	d, err := s.Device(ctx, "dev-enabled")
	if err != nil || d.Policy.Rate != 7 || d.LastSeen != fixtureTime.Add(30*time.Minute) || string(d.ExchangeKey) != "wrapped\x00\x01\xfe-dev-enabled" {
		t.Fatalf("device after upgrade: %+v, %v", d, err)
	}
	if _, err := s.DeviceByKey(ctx, "key-revoked"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoked device found by key after upgrade: %v", err)
	}
	if _, err := s.ConsumeToken(ctx, []byte("token-hash-0123456789abcdef01234"), fixtureTime); err != nil {
		t.Fatalf("consume the fixture's token: %v", err)
	}
	if _, err := s.ConsumeToken(ctx, []byte("token-hash-0123456789abcdef01234"), fixtureTime); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token consumed twice after upgrade: %v", err)
	}
	pending, err := s.PendingApprovals(ctx, fixtureTime.Add(42*time.Minute))
	if err != nil || len(pending) != 1 || pending[0].ID != "appr-pending" {
		t.Fatalf("pending approvals after upgrade: %v, %v", pending, err)
	}
	if err := s.AppendAudit(ctx, &audit.Record{Time: fixtureTime.Add(time.Hour), Action: "lockdown", Decision: audit.OK, Actor: "admin"}); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Audit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	c := audit.NewChain()
	for _, r := range recs {
		if err := c.Next(r); err != nil {
			t.Fatalf("audit chain after upgrade: %v", err)
		}
	}
	if c.Seq != 6 {
		t.Fatalf("audit chain after upgrade ends at %d, want 6", c.Seq)
	}
}

func TestUpgradeSQLiteFixture(t *testing.T) {
	ctx := context.Background()
	fresh, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "fresh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if from, _, up := fresh.(Upgraded).SchemaUpgrade(); from != 0 || up {
		t.Errorf("new store: SchemaUpgrade() = %d, _, %v; want 0, _, false", from, up)
	}
	fillFixture(t, fresh)
	want := dumpRows(t, fresh.(*sqliteStore).db)

	p := copyFixture(t)
	if v, idx := schemaVersion(t, rawSQLite(t, p)), hasIndex(t, rawSQLite(t, p), false); v != 0 || idx {
		t.Fatalf("fixture is not a store from before schema versions: version %d, index %v", v, idx)
	}
	s, err := OpenSQLite(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if from, to, up := s.(Upgraded).SchemaUpgrade(); from != 0 || to != SchemaVersion() || !up {
		t.Errorf("SchemaUpgrade() = %d, %d, %v; want 0, %d, true", from, to, up, SchemaVersion())
	}
	checkUpgraded(t, s, s.(*sqliteStore).db, want, false)
	s.Close()
	// A second open finds nothing to do.
	s, err = OpenSQLite(ctx, p)
	if err != nil {
		t.Fatalf("reopen an upgraded store: %v", err)
	}
	if from, _, up := s.(Upgraded).SchemaUpgrade(); from != SchemaVersion() || up {
		t.Errorf("reopened store: SchemaUpgrade() = %d, _, %v; want %d, false", from, up, SchemaVersion())
	}
	s.Close()
}

func TestUpgradePostgresFixture(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t)
	fresh, err := OpenPostgres(ctx, pg.CreateDB(t, "fresh"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, _, up := fresh.(Upgraded).SchemaUpgrade(); up {
		t.Error("new store: SchemaUpgrade() says upgraded")
	}
	fillFixture(t, fresh)
	want := dumpRows(t, fresh.(*sqlStore).db)

	dump, err := os.ReadFile("testdata/unversioned/postgres.sql")
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.Load(t, "fixture", dump)
	if v, idx := schemaVersion(t, rawPostgres(t, dsn)), hasIndex(t, rawPostgres(t, dsn), true); v != 0 || idx {
		t.Fatalf("fixture is not a store from before schema versions: version %d, index %v", v, idx)
	}
	s, err := OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if from, _, up := s.(Upgraded).SchemaUpgrade(); from != 0 || !up {
		t.Errorf("SchemaUpgrade() = %d, _, %v; want 0, _, true", from, up)
	}
	checkUpgraded(t, s, s.(*sqlStore).db, want, true)
}

// A store upgraded by a newer build is refused, with both versions named,
// and left as it is.
func TestSchemaTooNew(t *testing.T) {
	ctx := context.Background()
	newer := SchemaVersion() + 1
	check := func(t *testing.T, open func() (Store, error), db *sql.DB) {
		if _, err := db.Exec(`UPDATE schema_version SET version = $1 WHERE id = 1`, newer); err != nil {
			t.Fatal(err)
		}
		before := dumpRows(t, db)
		_, err := open()
		if !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("open a store of schema version %d: %v, want ErrSchemaTooNew", newer, err)
		}
		for _, w := range []string{fmt.Sprintf("version %d", newer), fmt.Sprintf("up to %d", SchemaVersion()), "restore a backup"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
		if v := schemaVersion(t, db); v != newer {
			t.Errorf("refused store's version changed to %d", v)
		}
		if after := dumpRows(t, db); after != before {
			t.Error("refused store's data changed")
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "tether.db")
		s, err := OpenSQLite(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		fillFixture(t, s)
		s.Close()
		check(t, func() (Store, error) { return OpenSQLite(ctx, p) }, rawSQLite(t, p))
	})
	t.Run("postgres", func(t *testing.T) {
		pg := pgtest.Start(t)
		dsn := pg.CreateDB(t, "newer")
		s, err := OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		fillFixture(t, s)
		s.Close()
		check(t, func() (Store, error) { return OpenPostgres(ctx, dsn) }, rawPostgres(t, dsn))
	})
}

// failing is a migration whose second statement fails after its first
// created a table: the whole upgrade, migration 2 included, must be undone.
var failing = migration{version: 3, sql: `CREATE TABLE t3 (x {int}); CREATE INDEX t3_bad ON no_such_table (x);`}

func tableExists(t *testing.T, db *sql.DB, pg bool, name string) bool {
	t.Helper()
	q := `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1`
	if pg {
		q = `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`
	}
	var n int
	if err := db.QueryRow(q, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// checkUntouched checks that a fixture store whose upgrade failed is as
// the release before schema versions left it, and that a normal open
// then upgrades it.
func checkUntouched(t *testing.T, db *sql.DB, pg bool, want string, open func() (Store, error)) {
	t.Helper()
	if v := schemaVersion(t, db); v != 0 {
		t.Errorf("schema version after a failed upgrade = %d, want 0", v)
	}
	if hasIndex(t, db, pg) || tableExists(t, db, pg, "t3") {
		t.Error("a failed upgrade left part of its changes")
	}
	if got := dumpRows(t, db); got != want {
		t.Errorf("a failed upgrade changed data:\n%s", got)
	}
	s, err := open()
	if err != nil {
		t.Fatalf("open after a failed upgrade: %v", err)
	}
	s.Close()
	if v := schemaVersion(t, db); v != SchemaVersion() {
		t.Errorf("schema version after the retried upgrade = %d, want %d", v, SchemaVersion())
	}
}

func TestFailedUpgradeLeavesOldVersion(t *testing.T) {
	ctx := context.Background()
	steps := append(append([]migration{}, migrations...), failing)
	t.Run("sqlite", func(t *testing.T) {
		p := copyFixture(t)
		db := rawSQLite(t, p)
		want := dumpRows(t, db)
		_, _, err := migrate(ctx, db, sqliteDialect, p, steps)
		if err == nil || !strings.Contains(err.Error(), "from version 0 to 3") || !strings.Contains(err.Error(), "unchanged at version 0") {
			t.Fatalf("failing migration: %v", err)
		}
		checkUntouched(t, db, false, want, func() (Store, error) { return OpenSQLite(ctx, p) })
	})
	t.Run("postgres", func(t *testing.T) {
		pg := pgtest.Start(t)
		dump, err := os.ReadFile("testdata/unversioned/postgres.sql")
		if err != nil {
			t.Fatal(err)
		}
		dsn := pg.Load(t, "fixture", dump)
		db := rawPostgres(t, dsn)
		want := dumpRows(t, db)
		_, _, err = migrate(ctx, db, postgresDialect, "fixture", steps)
		if err == nil || !strings.Contains(err.Error(), "from version 0 to 3") {
			t.Fatalf("failing migration: %v", err)
		}
		checkUntouched(t, db, true, want, func() (Store, error) { return OpenPostgres(ctx, dsn) })
	})
}

// TestUpgradeKilled kills a process in the middle of an upgrade, after
// every migration ran and before COMMIT: the store must be left at its
// old version with its old data.
func TestUpgradeKilled(t *testing.T) {
	if target := os.Getenv("TETHER_TEST_MIGRATE_KILL"); target != "" {
		killedUpgrade(target)
		return
	}
	ctx := context.Background()
	run := func(t *testing.T, target string) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUpgradeKilled$", "-test.count=1")
		cmd.Env = append(os.Environ(), "TETHER_TEST_MIGRATE_KILL="+target)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("the upgrading process was not killed: %v\n%s", err, out)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		p := copyFixture(t)
		want := dumpRows(t, rawSQLite(t, p))
		run(t, "sqlite:"+p)
		db := rawSQLite(t, p)
		checkUntouched(t, db, false, want, func() (Store, error) { return OpenSQLite(ctx, p) })
	})
	t.Run("postgres", func(t *testing.T) {
		pg := pgtest.Start(t)
		dump, err := os.ReadFile("testdata/unversioned/postgres.sql")
		if err != nil {
			t.Fatal(err)
		}
		dsn := pg.Load(t, "fixture", dump)
		db := rawPostgres(t, dsn)
		want := dumpRows(t, db)
		run(t, dsn)
		checkUntouched(t, db, true, want, func() (Store, error) { return OpenPostgres(ctx, dsn) })
	})
}

// killedUpgrade runs in the child of TestUpgradeKilled: it upgrades the
// store with one more migration that creates a table and then SIGKILLs
// the process before the transaction can commit.
func killedUpgrade(target string) {
	var db *sql.DB
	d := postgresDialect
	if p, ok := strings.CutPrefix(target, "sqlite:"); ok {
		db, _ = sql.Open("sqlite", "file:"+p+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
		db.SetMaxOpenConns(1)
		d = sqliteDialect
	} else {
		db, _ = sql.Open("pgx", target)
	}
	kill := migration{version: 3, sql: `CREATE TABLE t3 (x {int}); INSERT INTO t3 VALUES (1);`,
		run: func(context.Context, *sql.Conn) error {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}}
	_, _, err := migrate(context.Background(), db, d, target, append(append([]migration{}, migrations...), kill))
	fmt.Println("upgrade returned:", err)
	os.Exit(1)
}

// Replicas (or a server and tether server admin) opening one store at the
// same moment: one migrates, the others wait for it and find nothing to do.
func TestConcurrentOpen(t *testing.T) {
	ctx := context.Background()
	both := func(t *testing.T, open func() (Store, error)) {
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := open()
				if err == nil {
					s.Close()
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent open: %v", err)
			}
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		p := copyFixture(t)
		both(t, func() (Store, error) { return OpenSQLite(ctx, p) })
	})
	t.Run("postgres", func(t *testing.T) {
		pg := pgtest.Start(t)
		dsn := pg.CreateDB(t, "concurrent")
		both(t, func() (Store, error) { return OpenPostgres(ctx, dsn) })
	})
}
