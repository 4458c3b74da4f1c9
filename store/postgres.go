package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver, name "pgx"
)

// OpenPostgres opens the store in a PostgreSQL database (a pgx connection
// string or URL), creating its tables or bringing them up to date
// (store/migrate.go). Several tether servers may share one database: device changes are compare-and-swap, tokens and
// approvals change with single conditional statements, and audit appends
// lock the chain head row (SELECT ... FOR UPDATE), so the chain stays
// linear across replicas.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	// Two replicas starting at once both migrate; the first takes the
	// lock and the second then finds nothing left to do.
	from, created, err := migrate(ctx, db, postgresDialect, pgName(dsn), migrations)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &sqlStore{db: db, forUpdate: "FOR UPDATE", schemaFrom: from, schemaNew: created}, nil
}

// pgName names the database for errors without the DSN's password.
func pgName(dsn string) string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil || cfg.Database == "" {
		return "in PostgreSQL"
	}
	return fmt.Sprintf("in PostgreSQL database %q", cfg.Database)
}
