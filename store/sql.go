package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
)

// sqlStore implements Store for any database/sql driver that takes $N
// placeholders and RETURNING (SQLite ≥ 3.35, PostgreSQL). The dialect
// supplies the schema and how to lock the audit chain head.
type sqlStore struct {
	db *sql.DB
	// forUpdate is appended to the audit head SELECT: "FOR UPDATE" on
	// PostgreSQL; empty on SQLite, whose single writer serialises anyway.
	forUpdate string
	group     groupCommit // the writes of every unlock: audit appends, Touch
	// schemaFrom is the schema version the store had when opened;
	// schemaNew says it was empty.
	schemaFrom int
	schemaNew  bool
}

const deviceCols = `id, name, grp, key_id, public_key, state, reason, exchange_key, exchange_pub, policy, created, updated, last_seen, version`

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

type scanner interface{ Scan(...any) error }

func scanDevice(s scanner) (*policy.Device, error) {
	var d policy.Device
	var pol string
	var created, updated, seen int64
	var state string
	if err := s.Scan(&d.ID, &d.Name, &d.Group, &d.KeyID, &d.PublicKey, &state, &d.Reason, &d.ExchangeKey,
		&d.ExchangePub, &pol, &created, &updated, &seen, &d.Version); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	d.State = policy.State(state)
	if err := json.Unmarshal([]byte(pol), &d.Policy); err != nil {
		return nil, fmt.Errorf("device %s: stored policy: %w", d.ID, err)
	}
	d.Created, d.Updated, d.LastSeen = fromNanos(created), fromNanos(updated), fromNanos(seen)
	if len(d.ExchangeKey) == 0 {
		d.ExchangeKey = nil
	}
	return &d, nil
}

func policyJSON(p policy.Policy) string {
	b, _ := json.Marshal(p)
	return string(b)
}

func (s *sqlStore) CreateDevice(ctx context.Context, d *policy.Device) error {
	d.Version = 1
	_, err := s.db.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)`,
		d.ID, d.Name, d.Group, d.KeyID, d.PublicKey, string(d.State), d.Reason, d.ExchangeKey, d.ExchangePub,
		policyJSON(d.Policy), nanos(d.Created), nanos(d.Updated), nanos(d.LastSeen), d.Version)
	if err != nil {
		if _, e := s.DeviceByKey(ctx, d.KeyID); e == nil {
			return fmt.Errorf("create device: identity key %w", ErrExists)
		}
		return fmt.Errorf("create device: %w", err)
	}
	return nil
}

func (s *sqlStore) Device(ctx context.Context, id string) (*policy.Device, error) {
	return scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
}

func (s *sqlStore) DeviceByKey(ctx context.Context, keyID string) (*policy.Device, error) {
	return scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE key_id = $1 AND state <> 'revoked'`, keyID))
}

func (s *sqlStore) RevokedByKey(ctx context.Context, keyID string) ([]*policy.Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE key_id = $1 AND state = 'revoked' ORDER BY updated DESC, id LIMIT 16`, keyID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*policy.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func (s *sqlStore) Devices(ctx context.Context) ([]*policy.Device, error) {
	var out []*policy.Device
	err := s.EachDevice(ctx, func(d *policy.Device) error {
		out = append(out, d)
		return nil
	})
	return out, err
}

func (s *sqlStore) EachDevice(ctx context.Context, fn func(*policy.Device) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices ORDER BY created, id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return err
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (s *sqlStore) EachKeepAlive(ctx context.Context, fn func(KeepAliveInput) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT id, grp, policy, last_seen FROM devices WHERE state = $1`, string(policy.Enabled))
	if err != nil {
		return fmt.Errorf("keep-alive scan: %w", err)
	}
	defer rows.Close()
	// Most devices carry the same few policies (often none of their own):
	// decode each distinct one once.
	policies := map[string]policy.Policy{}
	for rows.Next() {
		var k KeepAliveInput
		var pol string
		var seen int64
		if err := rows.Scan(&k.ID, &k.Group, &pol, &seen); err != nil {
			return fmt.Errorf("keep-alive scan: %w", err)
		}
		p, ok := policies[pol]
		if !ok {
			if err := json.Unmarshal([]byte(pol), &p); err != nil {
				return fmt.Errorf("device %s: stored policy: %w", k.ID, err)
			}
			policies[pol] = p
		}
		k.Policy, k.LastSeen = p, fromNanos(seen)
		if err := fn(k); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (s *sqlStore) UpdateDevice(ctx context.Context, d *policy.Device) error {
	var ek any = d.ExchangeKey
	if d.ExchangeKey == nil {
		ek = nil
	}
	res, err := s.db.ExecContext(ctx, `UPDATE devices SET name=$1, grp=$2, state=$3, reason=$4, exchange_key=$5,
		policy=$6, updated=$7, version=version+1 WHERE id=$8 AND version=$9 AND state <> 'revoked'`,
		d.Name, d.Group, string(d.State), d.Reason, ek, policyJSON(d.Policy), nanos(d.Updated), d.ID, d.Version)
	if err != nil {
		return fmt.Errorf("update device %s: %w", d.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		d.Version++
		return nil
	}
	cur, err := s.Device(ctx, d.ID)
	switch {
	case err != nil:
		return fmt.Errorf("update device %s: %w", d.ID, err)
	case cur.State == policy.Revoked:
		return fmt.Errorf("update device %s: %w", d.ID, ErrRevoked)
	}
	return fmt.Errorf("update device %s: %w", d.ID, ErrConflict)
}

func (s *sqlStore) DevicePage(ctx context.Context, q DeviceQuery) (*DevicePage, error) {
	where, args := "TRUE", []any{}
	if q.State != "" {
		args = append(args, string(q.State))
		where += fmt.Sprintf(" AND state = $%d", len(args))
	}
	if q.Text != "" {
		// LIKE with the wildcards of the text escaped; lower() on both
		// sides, since PostgreSQL's LIKE minds case and SQLite's does not.
		esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(strings.ToLower(q.Text))
		args = append(args, "%"+esc+"%")
		n := len(args)
		where += fmt.Sprintf(` AND (lower(name) LIKE $%d ESCAPE '\' OR lower(id) LIKE $%d ESCAPE '\' OR lower(grp) LIKE $%d ESCAPE '\')`, n, n, n)
	}
	page := &DevicePage{Counts: map[policy.State]int{}}
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM devices GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("device counts: %w", err)
	}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return nil, err
		}
		page.Counts[policy.State(st)] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE `+where, args...).Scan(&page.Matched); err != nil {
		return nil, fmt.Errorf("device count: %w", err)
	}
	args = append(args, q.Limit, q.Offset)
	rows, err = s.db.QueryContext(ctx, fmt.Sprintf(`SELECT `+deviceCols+` FROM devices WHERE %s ORDER BY created, id LIMIT $%d OFFSET $%d`,
		where, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("device page: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		page.Devices = append(page.Devices, d)
	}
	return page, rows.Err()
}

func (s *sqlStore) DeviceStamp(ctx context.Context) (string, error) {
	// Devices are never deleted and every change bumps a version, so the
	// count and the sum of versions change with every create and update;
	// Touch moves a last_seen forward to "now", so the maximum changes too.
	var n, versions, seen int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(version),0), COALESCE(MAX(last_seen),0) FROM devices`).
		Scan(&n, &versions, &seen)
	if err != nil {
		return "", fmt.Errorf("device stamp: %w", err)
	}
	return fmt.Sprintf("%d/%d/%d", n, versions, seen), nil
}

func (s *sqlStore) Touch(ctx context.Context, id string, t time.Time) error {
	return s.inGroup("touch:"+id, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE devices SET last_seen=$1 WHERE id=$2 AND last_seen < $1`, nanos(t), id)
		return err
	})
}

func (s *sqlStore) PutGroup(ctx context.Context, name string, p policy.Policy) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO groups (name, policy) VALUES ($1,$2)
		ON CONFLICT (name) DO UPDATE SET policy = excluded.policy`, name, policyJSON(p))
	return err
}

func (s *sqlStore) Group(ctx context.Context, name string) (policy.Policy, error) {
	var pol string
	var p policy.Policy
	err := s.db.QueryRowContext(ctx, `SELECT policy FROM groups WHERE name=$1`, name).Scan(&pol)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, err
	}
	return p, json.Unmarshal([]byte(pol), &p)
}

func (s *sqlStore) Groups(ctx context.Context) (map[string]policy.Policy, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, policy FROM groups`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]policy.Policy{}
	for rows.Next() {
		var name, pol string
		var p policy.Policy
		if err := rows.Scan(&name, &pol); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(pol), &p); err != nil {
			return nil, err
		}
		out[name] = p
	}
	return out, rows.Err()
}

func (s *sqlStore) CreateToken(ctx context.Context, t *Token) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (hash, grp, note, created, expires) VALUES ($1,$2,$3,$4,$5)`,
		t.Hash, t.Group, t.Note, nanos(t.Created), nanos(t.Expires))
	return err
}

func (s *sqlStore) ConsumeToken(ctx context.Context, hash []byte, now time.Time) (*Token, error) {
	var t Token
	var created, expires int64
	err := s.db.QueryRowContext(ctx, `DELETE FROM tokens WHERE hash=$1 RETURNING hash, grp, note, created, expires`, hash).
		Scan(&t.Hash, &t.Group, &t.Note, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	t.Created, t.Expires = fromNanos(created), fromNanos(expires)
	if !now.Before(t.Expires) {
		return nil, ErrNotFound
	}
	return &t, nil
}

func (s *sqlStore) CreateApproval(ctx context.Context, a *Approval) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO approvals (id, device, source, created, deadline, state) VALUES ($1,$2,$3,$4,$5,$6)`,
		a.ID, a.Device, a.Source, nanos(a.Created), nanos(a.Deadline), a.State)
	return err
}

func scanApproval(s scanner) (*Approval, error) {
	var a Approval
	var c, d int64
	if err := s.Scan(&a.ID, &a.Device, &a.Source, &c, &d, &a.State); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	a.Created, a.Deadline = fromNanos(c), fromNanos(d)
	return &a, nil
}

func (s *sqlStore) Approval(ctx context.Context, id string) (*Approval, error) {
	return scanApproval(s.db.QueryRowContext(ctx, `SELECT id, device, source, created, deadline, state FROM approvals WHERE id=$1`, id))
}

func (s *sqlStore) PendingApprovals(ctx context.Context, now time.Time) ([]*Approval, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, device, source, created, deadline, state FROM approvals
		WHERE state='pending' AND deadline > $1 ORDER BY created`, nanos(now))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *sqlStore) DecideApproval(ctx context.Context, id, state string) error {
	return s.moveApproval(ctx, id, "pending", state)
}

func (s *sqlStore) UseApproval(ctx context.Context, id string) error {
	return s.moveApproval(ctx, id, "approved", "used")
}

func (s *sqlStore) moveApproval(ctx context.Context, id, from, to string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE approvals SET state=$1 WHERE id=$2 AND state=$3`, to, id, from)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if _, err := s.Approval(ctx, id); err != nil {
		return err
	}
	return ErrConflict
}

const pcrStateCols = `device, bank, pcr_ids, policy, pcr_values, state, reason, created, decided`

func scanPCRState(s scanner) (*PCRState, error) {
	var r PCRState
	var c, d int64
	if err := s.Scan(&r.Device, &r.Bank, &r.PCRIDs, &r.Policy, &r.Values, &r.State, &r.Reason, &c, &d); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	r.Created, r.Decided = fromNanos(c), fromNanos(d)
	return &r, nil
}

func (s *sqlStore) ReportPCRState(ctx context.Context, r *PCRState) (*PCRState, bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO pcr_states (`+pcrStateCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
		ON CONFLICT (device, bank, pcr_ids, policy) DO NOTHING`,
		r.Device, r.Bank, r.PCRIDs, r.Policy, r.Values, r.State, r.Reason, nanos(r.Created), nanos(r.Decided))
	if err != nil {
		return nil, false, err
	}
	n, _ := res.RowsAffected()
	got, err := scanPCRState(s.db.QueryRowContext(ctx, `SELECT `+pcrStateCols+` FROM pcr_states
		WHERE device=$1 AND bank=$2 AND pcr_ids=$3 AND policy=$4`, r.Device, r.Bank, r.PCRIDs, r.Policy))
	return got, n == 1, err
}

func (s *sqlStore) DecidePCRState(ctx context.Context, r *PCRState) error {
	res, err := s.db.ExecContext(ctx, `UPDATE pcr_states SET state=$1, reason=$2, decided=$3
		WHERE device=$4 AND bank=$5 AND pcr_ids=$6 AND policy=$7`,
		r.State, r.Reason, nanos(r.Decided), r.Device, r.Bank, r.PCRIDs, r.Policy)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNotFound
	}
	return nil
}

func (s *sqlStore) PCRStates(ctx context.Context, device, state string) ([]*PCRState, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+pcrStateCols+` FROM pcr_states
		WHERE ($1 = '' OR device = $1) AND ($2 = '' OR state = $2) ORDER BY created, device, policy`, device, state)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*PCRState
	for rows.Next() {
		r, err := scanPCRState(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *sqlStore) PCRStateDevices(ctx context.Context, group, bank, pcrIDs, policy string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(DISTINCT p.device) FROM pcr_states p JOIN devices d ON d.id = p.device
		WHERE p.bank=$1 AND p.pcr_ids=$2 AND p.policy=$3 AND d.grp=$4 AND d.state <> 'revoked'`,
		bank, pcrIDs, policy, group).Scan(&n)
	return n, err
}

func (s *sqlStore) HasApprovedPCRState(ctx context.Context, device, bank, pcrIDs string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM pcr_states WHERE device=$1 AND ($2 = '' OR bank=$2)
		AND ($3 = '' OR pcr_ids=$3) AND state='approved'`, device, bank, pcrIDs).Scan(&n)
	return n > 0, err
}

func (s *sqlStore) Rekey(ctx context.Context, rewrap func(string, []byte) ([]byte, error), settings map[string]string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	type wrappedKey struct {
		id  string
		key []byte
	}
	// Read them all, then write: one connection cannot do both at once.
	var keys []wrappedKey
	rows, err := tx.QueryContext(ctx, `SELECT id, exchange_key FROM devices WHERE exchange_key IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	for rows.Next() {
		var k wrappedKey
		if err := rows.Scan(&k.id, &k.key); err != nil {
			rows.Close()
			return fmt.Errorf("rekey: %w", err)
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	for _, k := range keys {
		w, err := rewrap(k.id, k.key)
		if err != nil {
			return fmt.Errorf("rekey device %s: %w", k.id, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET exchange_key=$1 WHERE id=$2`, w, k.id); err != nil {
			return fmt.Errorf("rekey device %s: %w", k.id, err)
		}
	}
	for name, value := range settings {
		if _, err := tx.ExecContext(ctx, setSetting, name, value); err != nil {
			return fmt.Errorf("rekey: setting %s: %w", name, err)
		}
	}
	return tx.Commit()
}

func (s *sqlStore) AppendAudit(ctx context.Context, r *audit.Record) error {
	return s.inGroup("audit", func(tx *sql.Tx) error {
		var seq int64
		var head string
		if err := tx.QueryRow(`SELECT seq, hash FROM audit_head WHERE id=1 `+s.forUpdate).Scan(&seq, &head); err != nil {
			return fmt.Errorf("append audit record: read chain head: %w", err)
		}
		r.Seq, r.Prev = seq+1, head
		r.Time = r.Time.UTC().Round(0)
		if _, err := tx.Exec(`INSERT INTO audit (seq, time, device, action, source, decision, reason, actor, prev)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)`, r.Seq, nanos(r.Time), r.Device, r.Action, r.Source, r.Decision, r.Reason, r.Actor, r.Prev); err != nil {
			return fmt.Errorf("append audit record: %w", err)
		}
		if _, err := tx.Exec(`UPDATE audit_head SET seq=$1, hash=$2 WHERE id=1`, r.Seq, r.Hash()); err != nil {
			return fmt.Errorf("append audit record: %w", err)
		}
		return nil
	})
}

func (s *sqlStore) Audit(ctx context.Context, after int64, limit int) ([]*audit.Record, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, time, device, action, source, decision, reason, actor, prev
		FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*audit.Record
	for rows.Next() {
		var r audit.Record
		var t int64
		if err := rows.Scan(&r.Seq, &t, &r.Device, &r.Action, &r.Source, &r.Decision, &r.Reason, &r.Actor, &r.Prev); err != nil {
			return nil, err
		}
		r.Time = time.Unix(0, t).UTC()
		out = append(out, &r)
	}
	return out, rows.Err()
}

func (s *sqlStore) Setting(ctx context.Context, name string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE name=$1`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return v, err
}

// setSetting is SetSetting's statement, also run inside Rekey's transaction.
const setSetting = `INSERT INTO settings (name, value) VALUES ($1,$2)
	ON CONFLICT (name) DO UPDATE SET value = excluded.value`

func (s *sqlStore) SetSetting(ctx context.Context, name, value string) error {
	_, err := s.db.ExecContext(ctx, setSetting, name, value)
	return err
}

func (s *sqlStore) InitSetting(ctx context.Context, name, value string) (string, error) {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ($1,$2) ON CONFLICT (name) DO NOTHING`, name, value); err != nil {
		return "", err
	}
	return s.Setting(ctx, name)
}

func (s *sqlStore) Close() error { return s.db.Close() }

// schemaV1 is migration 1: the tables as the releases before schema
// versions made them on every start. It must stay as it is (IF NOT
// EXISTS, ON CONFLICT DO NOTHING): it is also what completes and adopts a
// store made by one of those releases. Change the schema by adding a
// migration (store/migrate.go), never by editing this.
const schemaV1 = `
CREATE TABLE IF NOT EXISTS devices (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	grp TEXT NOT NULL,
	key_id TEXT NOT NULL,
	public_key {blob} NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	exchange_key {blob},
	exchange_pub TEXT NOT NULL,
	policy TEXT NOT NULL,
	created {int} NOT NULL,
	updated {int} NOT NULL,
	last_seen {int} NOT NULL,
	version {int} NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS devices_live_key ON devices (key_id) WHERE state <> 'revoked';
CREATE INDEX IF NOT EXISTS devices_key ON devices (key_id);
CREATE INDEX IF NOT EXISTS devices_created ON devices (created, id);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, policy TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
	hash {blob} PRIMARY KEY, grp TEXT NOT NULL, note TEXT NOT NULL, created {int} NOT NULL, expires {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
	id TEXT PRIMARY KEY, device TEXT NOT NULL, source TEXT NOT NULL,
	created {int} NOT NULL, deadline {int} NOT NULL, state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
	seq {int} PRIMARY KEY, time {int} NOT NULL, device TEXT NOT NULL, action TEXT NOT NULL, source TEXT NOT NULL,
	decision TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL, prev TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (id {int} PRIMARY KEY, seq {int} NOT NULL, hash TEXT NOT NULL);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '` + "0000000000000000000000000000000000000000000000000000000000000000" + `') ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
` + uiSchema // store/ui.go
