package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"hash/fnv"
	"strings"
)

const (
	activeIn   = "status IN ('pending', 'running')"
	terminalIn = "status IN ('completed', 'failed', 'cancelled')"
	// claimable is the condition of a record that Claim may take, and the
	// predicate of the partial index that serves it.
	claimable = "status = 'pending' AND resumable = 1 AND owner = ''"
)

// The names of what New creates beside the table.
func (s *Store) leases() string  { return s.table + "_leases" }
func (s *Store) counter() string { return s.table + "_active" }

// columnDefs are the table's columns after seq, with their types; the
// second stage's columns (from error_code on) are added to older tables.
func (s *Store) columnDefs() [][2]string {
	return [][2]string{
		{"task_id", "TEXT NOT NULL UNIQUE"},
		{"module_id", "TEXT NOT NULL"},
		{"status", "TEXT NOT NULL"},
		{"submitted_at", "BIGINT"},
		{"started_at", "BIGINT"},
		{"completed_at", "BIGINT"},
		{"result", "TEXT"},
		{"error", "TEXT"},
		{"retry_count", "INTEGER NOT NULL DEFAULT 0"},
		{"max_retries", "INTEGER NOT NULL DEFAULT 0"},
		{"error_code", "TEXT"},
		{"progress", "DOUBLE PRECISION"},
		{"progress_message", "TEXT"},
		{"owner", "TEXT NOT NULL DEFAULT ''"},
		{"resumable", "INTEGER NOT NULL DEFAULT 0"},
		{"inputs", "TEXT"},
		{"spec", "TEXT"},
		{"not_before", "BIGINT"},
	}
}

// createTable returns the CREATE TABLE statements: the tasks, the leases,
// and the one-row count of active records.
func (s *Store) createTable() []string {
	seq := "seq INTEGER PRIMARY KEY AUTOINCREMENT"
	if s.dialect == PostgreSQL {
		seq = "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
	}
	defs := []string{seq}
	for _, c := range s.columnDefs() {
		defs = append(defs, c[0]+" "+c[1])
	}
	return []string{
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n\t%s\n)", s.table, strings.Join(defs, ",\n\t")),
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (owner TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)", s.leases()),
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (id INTEGER PRIMARY KEY CHECK (id = 1), active BIGINT NOT NULL)", s.counter()),
	}
}

// indexes returns the CREATE INDEX statements, made after the columns exist.
func (s *Store) indexes() []string {
	t := s.table
	return []string{
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_status_seq ON %s (status, seq)", t, t),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_expiry ON %s (completed_at) WHERE %s AND completed_at IS NOT NULL", t, t, terminalIn),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_claim ON %s (seq) WHERE %s", t, t, claimable),
	}
}

// triggers returns the statements that keep the count of active records
// (the counter table's one row) exact under every write of the table:
// inserts, updates of status, deletes, and on PostgreSQL TRUNCATE.
func (s *Store) triggers() []string {
	t, c := s.table, s.counter()
	if s.dialect == SQLite {
		return []string{
			fmt.Sprintf(`CREATE TRIGGER IF NOT EXISTS %s_count_insert AFTER INSERT ON %s WHEN new.%s
BEGIN UPDATE %s SET active = active + 1 WHERE id = 1; END`, t, t, activeIn, c),
			fmt.Sprintf(`CREATE TRIGGER IF NOT EXISTS %s_count_delete AFTER DELETE ON %s WHEN old.%s
BEGIN UPDATE %s SET active = active - 1 WHERE id = 1; END`, t, t, activeIn, c),
			fmt.Sprintf(`CREATE TRIGGER IF NOT EXISTS %s_count_update AFTER UPDATE OF status ON %s WHEN (new.%s) <> (old.%s)
BEGIN UPDATE %s SET active = active + (CASE WHEN new.%s THEN 1 ELSE -1 END) WHERE id = 1; END`, t, t, activeIn, activeIn, c, activeIn),
		}
	}
	fn := t + "_count_active"
	return []string{
		fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE d integer := 0;
BEGIN
	IF TG_OP = 'TRUNCATE' THEN
		UPDATE %s SET active = 0 WHERE id = 1;
		RETURN NULL;
	END IF;
	IF TG_OP <> 'DELETE' AND NEW.%s THEN d := d + 1; END IF;
	IF TG_OP <> 'INSERT' AND OLD.%s THEN d := d - 1; END IF;
	IF d <> 0 THEN
		UPDATE %s SET active = active + d WHERE id = 1;
	END IF;
	RETURN NULL;
END $$`, fn, c, activeIn, activeIn, c),
		// The WHEN conditions keep the function (and the trigger's queued
		// event) off the writes that leave the count as it is: a start, a
		// claim, a progress write.
		fmt.Sprintf("CREATE TRIGGER %s_count_insert AFTER INSERT ON %s FOR EACH ROW WHEN (NEW.%s) EXECUTE FUNCTION %s()", t, t, activeIn, fn),
		fmt.Sprintf("CREATE TRIGGER %s_count_delete AFTER DELETE ON %s FOR EACH ROW WHEN (OLD.%s) EXECUTE FUNCTION %s()", t, t, activeIn, fn),
		fmt.Sprintf("CREATE TRIGGER %s_count_update AFTER UPDATE OF status ON %s FOR EACH ROW WHEN ((OLD.%s) <> (NEW.%s)) EXECUTE FUNCTION %s()",
			t, t, activeIn, activeIn, fn),
		fmt.Sprintf("CREATE TRIGGER %s_count_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()", t, t, fn),
	}
}

// migrate creates what is missing, adds the columns an older version's
// table lacks (ALTER TABLE ADD COLUMN), turns an older PostgreSQL table's
// JSONB result column into TEXT (see the package doc), and creates the
// counting triggers with the count of the records already there. On
// PostgreSQL a transaction-scoped advisory lock keyed by the table name
// serialises processes that start at once (CREATE ... IF NOT EXISTS alone
// can fail when two run together); on SQLite an immediate transaction
// holds the database's write lock from the start.
func (s *Store) migrate(ctx context.Context) error {
	return s.inTx(ctx, "migrate "+s.table, func(tx execer) error {
		if s.dialect == PostgreSQL {
			h := fnv.New64a()
			h.Write([]byte("apcore.sqlstore." + s.table))
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
				return err
			}
		}
		for _, stmt := range s.createTable() {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		have, err := s.existingColumns(ctx, tx)
		if err != nil {
			return err
		}
		for _, c := range s.columnDefs() {
			if _, ok := have[c[0]]; !ok {
				if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", s.table, c[0], c[1])); err != nil {
					return err
				}
			}
		}
		if have["result"] == "jsonb" {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN result TYPE TEXT USING result::text", s.table)); err != nil {
				return err
			}
		}
		for _, stmt := range s.indexes() {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return s.ensureTriggers(ctx, tx)
	})
}

// existingColumns returns the table's columns and their types.
func (s *Store) existingColumns(ctx context.Context, tx execer) (map[string]string, error) {
	query := "SELECT name, lower(type) FROM pragma_table_info(?)"
	if s.dialect == PostgreSQL {
		query = `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`
	}
	rows, err := tx.QueryContext(ctx, query, s.table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	have := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, err
		}
		have[name] = typ
	}
	return have, rows.Err()
}

// ensureTriggers creates the counting triggers when they are missing, and
// then sets the count to the active records there are. On PostgreSQL,
// CREATE TRIGGER locks out the table's writers until the migration
// commits, so the count cannot miss one; on SQLite the write lock does.
func (s *Store) ensureTriggers(ctx context.Context, tx execer) error {
	names := []string{s.table + "_count_insert", s.table + "_count_delete", s.table + "_count_update"}
	if s.dialect == PostgreSQL {
		names = append(names, s.table+"_count_truncate")
	}
	quoted := "'" + strings.Join(names, "', '") + "'" // checkIdent allows no quote
	query := "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? AND name IN (" + quoted + ")"
	if s.dialect == PostgreSQL {
		query = "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname IN (" + quoted + ")"
	}
	var n int
	if err := tx.QueryRowContext(ctx, query, s.table).Scan(&n); err != nil {
		return err
	}
	var present int
	if err := tx.QueryRowContext(ctx, fmt.Sprintf("SELECT count(*) FROM %s", s.counter())).Scan(&present); err != nil {
		return err
	}
	if n == len(names) && present == 1 {
		return nil
	}
	if n > 0 && s.dialect == PostgreSQL {
		for _, name := range names {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", name, s.table)); err != nil {
				return err
			}
		}
	}
	for _, stmt := range s.triggers() {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s", s.counter())); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (id, active) SELECT 1, count(*) FROM %s WHERE %s", s.counter(), s.table, activeIn))
	return err
}

// execer is what a transaction's statements run on: a *sql.Tx, or a
// *sql.Conn inside BEGIN IMMEDIATE.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// inTx runs fn in one transaction and commits it; any error rolls back
// and is returned as unavailable (or as it is, for an *apcore.Error). On
// SQLite the transaction is BEGIN IMMEDIATE on a connection of its own,
// which takes the write lock at once: a deferred transaction that reads
// first and writes later fails with SQLITE_BUSY when another writer got in
// between, whatever the busy timeout.
func (s *Store) inTx(ctx context.Context, op string, fn func(tx execer) error) error {
	wrap := func(err error) error {
		if isAPCoreError(err) {
			return err
		}
		return unavailable(op, err)
	}
	if s.dialect == PostgreSQL {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return wrap(err)
		}
		if err := fn(tx); err != nil {
			_ = tx.Rollback()
			return wrap(err)
		}
		if err := tx.Commit(); err != nil {
			return wrap(err)
		}
		return nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return wrap(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return wrap(err)
	}
	err = fn(conn)
	if err == nil {
		_, err = conn.ExecContext(ctx, "COMMIT")
	}
	if err != nil {
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil && !strings.Contains(rerr.Error(), "no transaction") {
			// The connection's state is unknown: drop it from the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		return wrap(err)
	}
	return nil
}
