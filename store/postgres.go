package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver, name "pgx"
)

// OpenPostgres opens the store in a PostgreSQL database (a pgx connection
// string or URL) and creates its tables if needed. Several tether servers
// may share one database: device changes are compare-and-swap, tokens and
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
	ddl := strings.NewReplacer("{blob}", "BYTEA", "{int}", "BIGINT").Replace(schema)
	// Two replicas starting at once both run CREATE ... IF NOT EXISTS;
	// an advisory lock keeps them from racing on the catalog.
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7500)`); err != nil {
		db.Close()
		return nil, err
	}
	_, err = conn.ExecContext(ctx, ddl)
	conn.ExecContext(ctx, `SELECT pg_advisory_unlock(7500)`)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema: %w", err)
	}
	return &sqlStore{db: db, forUpdate: "FOR UPDATE"}, nil
}
