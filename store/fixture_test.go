package store

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/store/pgtest"
)

// The upgrade fixtures in testdata/ hold stores made by a release before
// schema versions (see testdata/README.md). fillFixture is what was put
// in them; the upgrade tests fill a fresh store the same way and compare
// every row, so a migration that loses or changes data fails.

// fixtureTime is the fixtures' clock: fixed, so that two fills are equal.
var fixtureTime = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

func fillFixture(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	at := func(m int) time.Time { return fixtureTime.Add(time.Duration(m) * time.Minute) }
	yes, no := true, false
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("fill fixture: %s: %v", what, err)
		}
	}
	devices := []*policy.Device{
		{ID: "dev-enabled", Name: "web-1", Group: "servers", KeyID: "key-enabled", State: policy.Enabled,
			Policy: policy.Policy{CIDRs: []string{"10.0.0.0/8", "fd00::/8"}, KeepAlive: policy.Duration(5 * time.Minute), Approval: &no, Rate: 7}},
		{ID: "dev-pending", Name: "laptop", Group: "", KeyID: "key-pending", State: policy.Pending},
		{ID: "dev-disabled", Name: "db-1", Group: "servers", KeyID: "key-disabled", State: policy.Disabled, Reason: "keep-alive timeout",
			Policy: policy.Policy{Approval: &yes}},
		{ID: "dev-revoked", Name: "stolen", Group: "laptops", KeyID: "key-revoked", State: policy.Enabled},
	}
	for i, d := range devices {
		d.PublicKey = []byte("spki\x00\xff-" + d.KeyID)
		d.ExchangeKey = []byte("wrapped\x00\x01\xfe-" + d.ID)
		d.ExchangePub = `{"kty":"EC","crv":"P-256","x":"` + d.ID + `","y":"y"}`
		d.Created, d.Updated, d.LastSeen = at(i), at(i), at(10+i)
		must("create device "+d.ID, s.CreateDevice(ctx, d))
	}
	rev := devices[3]
	rev.State, rev.Reason, rev.ExchangeKey, rev.Updated = policy.Revoked, "laptop stolen", nil, at(20)
	must("revoke", s.UpdateDevice(ctx, rev))
	must("touch", s.Touch(ctx, "dev-enabled", at(30)))

	must("group servers", s.PutGroup(ctx, "servers", policy.Policy{CIDRs: []string{"192.0.2.0/24"}, KeepAlive: policy.Duration(time.Hour)}))
	must("group laptops", s.PutGroup(ctx, "laptops", policy.Policy{Approval: &yes, Rate: 2}))

	must("token", s.CreateToken(ctx, &Token{Hash: []byte("token-hash-0123456789abcdef01234"), Group: "servers", Note: "rack 4", Created: at(1), Expires: at(24 * 60)}))
	must("token", s.CreateToken(ctx, &Token{Hash: []byte("token-hash-expired-0123456789abc"), Group: "", Note: "", Created: at(1), Expires: at(2)}))

	must("approval", s.CreateApproval(ctx, &Approval{ID: "appr-pending", Device: "dev-disabled", Source: "192.0.2.7", Created: at(40), Deadline: at(45), State: "pending"}))
	must("approval", s.CreateApproval(ctx, &Approval{ID: "appr-used", Device: "dev-enabled", Source: "192.0.2.8", Created: at(41), Deadline: at(46), State: "pending"}))
	must("approve", s.DecideApproval(ctx, "appr-used", "approved"))
	must("use", s.UseApproval(ctx, "appr-used"))

	records := []audit.Record{
		{Time: at(0), Device: "dev-enabled", Action: "enroll", Source: "192.0.2.7", Decision: audit.Allow},
		{Time: at(11), Device: "dev-enabled", Action: "unlock", Source: "192.0.2.7", Decision: audit.Allow},
		{Time: at(20), Device: "dev-revoked", Action: "device.revoke", Decision: audit.OK, Reason: "laptop stolen", Actor: "admin"},
		{Time: at(21), Device: "dev-revoked", Action: "unlock", Source: "198.51.100.1", Decision: audit.Deny, Reason: "device dev-revoked was revoked"},
		{Time: at(40), Device: "dev-disabled", Action: "unlock", Source: "192.0.2.7", Decision: audit.Wait, Reason: "approval required: \"quoted\" ünïcode"},
	}
	for i := range records {
		must("audit", s.AppendAudit(ctx, &records[i]))
	}
	must("setting", s.SetSetting(ctx, "enroll.open", "off"))
	must("setting", s.SetSetting(ctx, "kek.check", "check-value"))

	ui, ok := s.(UIStore)
	if !ok {
		t.Fatal("fill fixture: the store has no dashboard accounts")
	}
	must("ui user", ui.CreateUIUser(ctx, &UIUser{Name: "alice", Hash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", Created: at(2), Updated: at(3)}))
	must("session", ui.CreateSession(ctx, &Session{ID: "session-id-hash", User: "alice", CSRF: "csrf-token", Source: "192.0.2.9", Created: at(4), LastSeen: at(5)}))
}

// fixtureTables are the tables whose rows dumpRows compares.
var fixtureTables = []string{"devices", "groups", "tokens", "approvals", "audit", "audit_head", "settings", "ui_users", "ui_sessions"}

// dumpRows renders every row of every table, in key order, as text.
func dumpRows(t *testing.T, db *sql.DB) string {
	t.Helper()
	var b strings.Builder
	for _, table := range fixtureTables {
		rows, err := db.Query(`SELECT * FROM ` + table + ` ORDER BY 1`)
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		cols, _ := rows.Columns()
		fmt.Fprintf(&b, "%s %v\n", table, cols)
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("dump %s: %v", table, err)
			}
			for i, v := range vals {
				if i > 0 {
					b.WriteString(" | ")
				}
				fmt.Fprintf(&b, "%q", fmt.Sprint(v))
			}
			b.WriteString("\n")
		}
		if err := rows.Close(); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
	}
	return b.String()
}

// TestWriteFixture writes the fixtures of testdata/README.md. It runs only
// when asked: TETHER_STORE_FIXTURE=DIR go test -run TestWriteFixture ./store
func TestWriteFixture(t *testing.T) {
	dir := os.Getenv("TETHER_STORE_FIXTURE")
	if dir == "" {
		t.Skip("set TETHER_STORE_FIXTURE=DIR to write the upgrade fixtures")
	}
	p := filepath.Join(dir, "sqlite.db")
	os.Remove(p)
	s, err := OpenSQLite(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	fillFixture(t, s)
	if err := s.(Checkpointer).Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteFixturePostgres writes the PostgreSQL fixture: a pg_dump of a
// database filled by fillFixture.
func TestWriteFixturePostgres(t *testing.T) {
	dir := os.Getenv("TETHER_STORE_FIXTURE")
	if dir == "" {
		t.Skip("set TETHER_STORE_FIXTURE=DIR to write the upgrade fixtures")
	}
	pg := pgtest.Start(t)
	dsn := pg.CreateDB(t, "fixture")
	s, err := OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	fillFixture(t, s)
	s.Close()
	// pg_dump from 15.14 on brackets the dump in \restrict KEY ...
	// \unrestrict KEY, which older psql rejects; the fixture must load
	// with any PostgreSQL 15, so those two lines are dropped.
	var dump []byte
	for _, line := range bytes.SplitAfter(pg.Dump(t, "fixture"), []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(`\restrict `)) && !bytes.HasPrefix(line, []byte(`\unrestrict `)) {
			dump = append(dump, line...)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "postgres.sql"), dump, 0o644); err != nil {
		t.Fatal(err)
	}
}
