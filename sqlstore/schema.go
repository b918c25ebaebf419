package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
)

const (
	activeIn   = "status IN ('pending', 'running')"
	terminalIn = "status IN ('completed', 'failed', 'cancelled')"
	// claimable is the condition of a record that Claim may take, and the
	// predicate of the partial index that serves it.
	claimable = "status = 'pending' AND resumable = 1 AND owner = ''"
	// ready is a claimable record not waiting for its not_before (due):
	// the claim indexes' predicate, so that a million scheduled records
	// are not in the index a Claim walks. waiting is a record that waits:
	// the scheduled index's predicate, which the promote walks by
	// not_before. It names no state, so that no planner takes the (status,
	// seq) index for the promote, over every pending record: a record that
	// ended while it waited (a cancel) stays in the scheduled index until
	// its time, when the promote takes it out.
	ready   = claimable + " AND due = 1"
	waiting = "due = 0"
	// held is an active record that an owner holds (running, or pending
	// on its way to a start): the held index's predicate, which Recover,
	// Orphans' records of dead owners and the index itself spell the
	// same way, so that PostgreSQL proves that the index serves them and
	// SQLite accepts it by INDEXED BY. A record held by no one (waiting
	// for its time, or for a claim) is not in it: recovery costs what
	// the managers hold, not what waits.
	held = activeIn + " AND owner <> ''"
	// keyHeld is the condition of a record that holds its unique key:
	// the unique key index's predicate.
	keyHeld = "unique_key IS NOT NULL AND status IN ('pending', 'running', 'completed')"
	// expiresAt is a terminal record's reference time for Sweep and
	// ListExpired: completed_at, or submitted_at when it is unset, or
	// when both are unset the zero time.Time's (in Unix microseconds), as
	// the manager reads a record with neither time. The sweep index is on
	// this very expression, which a query must spell the same way for the
	// index to serve it.
	expiresAt = "COALESCE(completed_at, submitted_at, -62135596800000000)"
	// countedIn is the condition of a record that the count rows count:
	// one in any of the five states.
	countedIn = "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')"
)

// tallies are the count rows' columns after active, one per terminal
// state: each counts the records in that state, as active counts the
// pending and running ones (see Count). Pending and running are not
// counted apart: a start (pending to running) would then write a count
// row, which it does not now.
var tallies = []string{"completed", "failed", "cancelled"}

// tallyDefs are the definitions of the tallies' columns.
func tallyDefs() []string {
	defs := make([]string, len(tallies))
	for i, c := range tallies {
		defs[i] = c + " BIGINT NOT NULL DEFAULT 0"
	}
	return defs
}

// tallyChange returns the SET list that adds one to (sign "+") or takes
// one from (sign "-") the count column of the state of the record rec (NEW
// or OLD, as a trigger names it), and nothing from the others: "active =
// active + (rec.status IN ('pending', 'running'))::int, completed = ...".
// SQLite's comparisons are integers already; PostgreSQL's booleans need
// the cast.
func (s *Store) tallyChange(rec, sign string) string {
	cast := ""
	if s.dialect == PostgreSQL {
		cast = "::int"
	}
	sets := []string{fmt.Sprintf("active = active %s (%s.%s)%s", sign, rec, activeIn, cast)}
	for _, c := range tallies {
		sets = append(sets, fmt.Sprintf("%s = %s %s (%s.status = '%s')%s", c, c, sign, rec, c, cast))
	}
	return strings.Join(sets, ", ")
}

// tallyMove is tallyChange for an update that keeps the record in its
// count row: its OLD state's column down by one and its NEW state's up,
// in one SET list (which names a column once).
func (s *Store) tallyMove() string {
	cast := ""
	if s.dialect == PostgreSQL {
		cast = "::int"
	}
	in := func(cond string) string {
		return fmt.Sprintf("(NEW.%s)%s - (OLD.%s)%s", cond, cast, cond, cast)
	}
	sets := []string{"active = active + " + in(activeIn)}
	for _, c := range tallies {
		sets = append(sets, fmt.Sprintf("%s = %s + %s", c, c, in("status = '"+c+"'")))
	}
	return strings.Join(sets, ", ")
}

// The names of what New creates beside the table: the leases; on SQLite
// the one-row count of active records; on PostgreSQL the count's slots
// and the function that shares the cap out among them.
func (s *Store) leases() string  { return s.table + "_leases" }
func (s *Store) counter() string { return s.table + "_active" }
func (s *Store) slots() string   { return s.table + "_slots" }
func (s *Store) admitFn() string { return s.table + "_admit" }

// pgSlots is how many rows the count of active records is split into on
// PostgreSQL. Each row counts the active records whose slot column names
// it, and has a share of the cap (cap) of its own: an insert locks one row
// (its task id's hash picks it), so that inserts and task ends spread over
// the rows instead of queueing on one. Only when that row's share is used
// up does an insert lock them all, in order, to share the cap out anew
// (see admitFunction). Under 16 submitters this doubled the inserts a
// second of the durable benchmark (benchmarks/durable, "16 submitters,
// PostgreSQL"), where one row had held every insert and every end.
const pgSlots = 16

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

// slotColumn is the PostgreSQL table's extra column: the count's slot
// that the record is counted in while active (see pgSlots).
var slotColumn = [2]string{"slot", "SMALLINT NOT NULL DEFAULT 0"}

// allColumnDefs are columnDefs, and on PostgreSQL the slot column.
func (s *Store) allColumnDefs() [][2]string {
	defs := s.columnDefs()
	if s.dialect == PostgreSQL {
		defs = append(defs, slotColumn)
	}
	return defs
}

// createTable returns the CREATE TABLE statements: the tasks, the leases,
// and the count of records by state (one row on SQLite, pgSlots rows on
// PostgreSQL, each with its share of the cap and the cap it was shared
// from): active, and the tallies.
func (s *Store) createTable() []string {
	seq := "seq INTEGER PRIMARY KEY AUTOINCREMENT"
	if s.dialect == PostgreSQL {
		seq = "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
	}
	defs := []string{seq}
	for _, c := range s.allColumnDefs() {
		defs = append(defs, c[0]+" "+c[1])
	}
	tally := strings.Join(tallyDefs(), ", ")
	count := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (id INTEGER PRIMARY KEY CHECK (id = 1), active BIGINT NOT NULL, %s)", s.counter(), tally)
	if s.dialect == PostgreSQL {
		count = fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (id SMALLINT PRIMARY KEY, active BIGINT NOT NULL, cap BIGINT NOT NULL, lim BIGINT NOT NULL, %s)", s.slots(), tally)
	}
	return []string{
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n\t%s\n)", s.table, strings.Join(defs, ",\n\t")),
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (owner TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)", s.leases()),
		count,
	}
}

// indexes returns the CREATE INDEX statements, made after the columns
// exist (on a table an older version made too), and the DROP INDEX of the
// one they replace: <table>_expiry, on completed_at over terminal records,
// which the sweep index on expiresAt over them serves as well (and Sweep
// too), so that a record's end writes one index entry fewer.
func (s *Store) indexes() []string {
	t := s.table
	return []string{
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_status_seq ON %s (status, seq)", t, t),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_sweep ON %s ((%s)) WHERE %s", t, t, expiresAt, terminalIn),
		fmt.Sprintf("DROP INDEX IF EXISTS %s_expiry", t),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_claim ON %s (seq) WHERE %s", t, t, claimable),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_claim_module ON %s (module_id, seq) WHERE %s", t, t, claimable),
	}
}

// triggers returns the statements that keep the count rows exact under
// every write of the table: inserts, updates of status, deletes, and on
// PostgreSQL TRUNCATE. Each record in one of the five states counts once,
// in active or in its state's tally; on PostgreSQL in the slot row its slot
// column names.
func (s *Store) triggers() []string {
	t, c := s.table, s.counter()
	if s.dialect == SQLite {
		// Triggers per row: SQLite has one writer at a time and updates
		// the count row in place, so each record written costs one small
		// update, however many a statement writes.
		return []string{
			fmt.Sprintf(`CREATE TRIGGER IF NOT EXISTS %s_count_insert AFTER INSERT ON %s WHEN new.%s
BEGIN UPDATE %s SET %s WHERE id = 1; END`, t, t, countedIn, c, s.tallyChange("new", "+")),
			fmt.Sprintf(`CREATE TRIGGER IF NOT EXISTS %s_count_delete AFTER DELETE ON %s WHEN old.%s
BEGIN UPDATE %s SET %s WHERE id = 1; END`, t, t, countedIn, c, s.tallyChange("old", "-")),
			fmt.Sprintf(`CREATE TRIGGER IF NOT EXISTS %s_count_update AFTER UPDATE OF status ON %s WHEN new.status <> old.status AND NOT (new.%s AND old.%s)
BEGIN UPDATE %s SET %s WHERE id = 1; END`, t, t, activeIn, activeIn, c, s.tallyMove()),
		}
	}
	fn, sl := t+"_slot_count", s.slots()
	// byState is a transition table's records that meet where, counted by
	// slot and state, in the columns of the count rows.
	byState := func(rows, where string) string {
		cols := []string{"slot", fmt.Sprintf("count(*) FILTER (WHERE %s) AS active", activeIn)}
		for _, c := range tallies {
			cols = append(cols, fmt.Sprintf("count(*) FILTER (WHERE status = '%s') AS %s", c, c))
		}
		return fmt.Sprintf("SELECT %s FROM %s WHERE %s GROUP BY slot", strings.Join(cols, ", "), rows, where)
	}
	// apply returns the UPDATE that adds (sign "+") or takes (sign "-")
	// the counts of byState to or from the slot rows, after it locks
	// those rows in order of id: two statements that each change several
	// slots (two sweeps) cannot deadlock, nor one with admitFunction.
	apply := func(rows, where, sign string) string {
		sets := []string{fmt.Sprintf("active = %s.active %s g.active", sl, sign)}
		for _, c := range tallies {
			sets = append(sets, fmt.Sprintf("%s = %s.%s %s g.%s", c, sl, c, sign, c))
		}
		return fmt.Sprintf(`PERFORM 1 FROM %s WHERE id IN (SELECT slot FROM %s WHERE %s) ORDER BY id FOR UPDATE;
	UPDATE %s SET %s FROM (%s) AS g WHERE %s.id = g.slot;`, sl, rows, where, sl, strings.Join(sets, ", "), byState(rows, where), sl)
	}
	return []string{
		fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'TRUNCATE' THEN
		UPDATE %s SET active = 0, %s;
		RETURN NULL;
	END IF;
	IF TG_OP = 'UPDATE' AND OLD.slot = NEW.slot THEN
		UPDATE %s SET %s WHERE id = NEW.slot;
		RETURN NULL;
	END IF;
	IF TG_OP <> 'DELETE' AND NEW.%s THEN
		UPDATE %s SET %s WHERE id = NEW.slot;
	END IF;
	IF TG_OP <> 'INSERT' AND OLD.%s THEN
		UPDATE %s SET %s WHERE id = OLD.slot;
	END IF;
	RETURN NULL;
END $$`, fn, sl, strings.Join(tallies, " = 0, ")+" = 0",
			sl, s.tallyMove(),
			countedIn, sl, s.tallyChange("NEW", "+"), countedIn, sl, s.tallyChange("OLD", "-")),
		// The statement-level functions: the records a statement inserted
		// in a terminal state (born; the active ones the row trigger
		// counts, on the path of Insert), and every record a statement
		// deleted (gone), counted together: a sweep of a thousand records
		// changes a few slot rows once each, where a trigger per row
		// would update them a thousand times (and PostgreSQL follows a
		// row's versions of one transaction at each update).
		fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s_slot_born() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM born WHERE %s) THEN
	%s
	END IF;
	RETURN NULL;
END $$`, t, terminalIn, apply("born", terminalIn, "+")),
		fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s_slot_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	%s
	RETURN NULL;
END $$`, t, apply("gone", countedIn, "-")),
		// The WHEN conditions keep the function (and the trigger's queued
		// event) off the writes that leave the counts as they are: a
		// start, a claim, a progress write.
		fmt.Sprintf("CREATE TRIGGER %s_slot_insert AFTER INSERT ON %s FOR EACH ROW WHEN (NEW.%s) EXECUTE FUNCTION %s()", t, t, activeIn, fn),
		fmt.Sprintf("CREATE TRIGGER %s_slot_born AFTER INSERT ON %s REFERENCING NEW TABLE AS born FOR EACH STATEMENT EXECUTE FUNCTION %s_slot_born()", t, t, t),
		fmt.Sprintf("CREATE TRIGGER %s_slot_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION %s_slot_gone()", t, t, t),
		fmt.Sprintf("CREATE TRIGGER %s_slot_update AFTER UPDATE OF status ON %s FOR EACH ROW WHEN (OLD.status <> NEW.status AND NOT ((OLD.%s) AND (NEW.%s))) EXECUTE FUNCTION %s()",
			t, t, activeIn, activeIn, fn),
		fmt.Sprintf("CREATE TRIGGER %s_slot_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()", t, t, fn),
		s.admitFunction(),
	}
}

// admitFunction returns the PostgreSQL function an insert calls when its
// slot has no room left under the cap it was given (or the cap changed):
// it locks every slot, in order, and returns NULL if the active records
// reach lim; otherwise it shares what is left of lim out evenly, each
// slot's cap becoming its count plus its share, and returns a slot with
// room. Each slot's count stays within its cap and the caps add up to lim,
// so an insert that checks one slot's room against its cap keeps the
// whole count within lim.
//
// Locking in order cannot deadlock with the inserts, which lock one slot
// each; a statement that ends many active records at once (Recover) locks
// slots in the order of its rows, and if PostgreSQL finds the two in a
// deadlock it aborts one, which Insert then runs again (see Insert).
func (s *Store) admitFunction() string {
	return fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s(want bigint) RETURNS smallint LANGUAGE plpgsql AS $$
DECLARE
	total bigint;
	n bigint;
	spare bigint;
	pick smallint;
BEGIN
	PERFORM 1 FROM %s ORDER BY id FOR UPDATE;
	SELECT COALESCE(sum(active), 0), count(*) INTO total, n FROM %s;
	IF n = 0 OR total >= want THEN
		RETURN NULL;
	END IF;
	spare := want - total;
	UPDATE %s SET lim = want,
		cap = active + spare / n + CASE WHEN id < spare %% n THEN 1 ELSE 0 END;
	SELECT id INTO pick FROM %s WHERE active < cap ORDER BY cap - active DESC, id LIMIT 1;
	RETURN pick;
END $$`, s.admitFn(), s.slots(), s.slots(), s.slots(), s.slots())
}

// upTables is migration 1: the tables (the tasks, the leases, the count
// rows), and on a table that a version before numbered migrations made,
// the columns it lacks (ALTER TABLE ADD COLUMN) and, on PostgreSQL, its
// JSONB result column turned into TEXT (see the package doc). Like
// migrations 2 and 3 it changes only what differs, so that it upgrades
// any layout those versions left.
func (s *Store) upTables(ctx context.Context, tx execer) error {
	for _, stmt := range s.createTable() {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	have, err := s.existingColumns(ctx, tx, s.table)
	if err != nil {
		return err
	}
	for _, c := range s.allColumnDefs() {
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
	return nil
}

// upIndexes is migration 2: the indexes (and the older expiry index
// dropped), and on PostgreSQL 14 and later the statistics on the sweep's
// reference time.
func (s *Store) upIndexes(ctx context.Context, tx execer) error {
	for _, stmt := range s.indexes() {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	return s.ensureStatistics(ctx, tx)
}

// ensureStatistics creates, on PostgreSQL 14 and later, statistics on
// expiresAt (<table>_expires; ANALYZE and autovacuum fill them). The
// planner keeps no statistics of a partial index's expression, such as the
// sweep index's, and without them guesses that a third of the table
// expired at any time: ListExpired then read the whole table by the
// primary key, for its order, however few records had expired.
func (s *Store) ensureStatistics(ctx context.Context, tx execer) error {
	if s.dialect != PostgreSQL {
		return nil
	}
	var version int
	if err := tx.QueryRowContext(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return err
	}
	if version < 140000 { // statistics on an expression came with 14
		return nil
	}
	_, err := tx.ExecContext(ctx, fmt.Sprintf("CREATE STATISTICS IF NOT EXISTS %s_expires ON (%s) FROM %s", s.table, expiresAt, s.table))
	return err
}

// existingColumns returns a table's columns and their types.
func (s *Store) existingColumns(ctx context.Context, tx execer, table string) (map[string]string, error) {
	query := "SELECT name, lower(type) FROM pragma_table_info(?)"
	if s.dialect == PostgreSQL {
		query = `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`
	}
	rows, err := tx.QueryContext(ctx, query, table)
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

// ensureTriggers creates the counting triggers when they are missing or
// are an older version's (whose count rows lack the tallies), and then
// sets the counts to the records there are. On PostgreSQL, DROP TRIGGER
// and CREATE TRIGGER lock out the table's writers until the migration
// commits, so the counts cannot miss one; on SQLite the write lock does.
func (s *Store) ensureTriggers(ctx context.Context, tx execer) error {
	if s.dialect == PostgreSQL {
		return s.ensureSlots(ctx, tx)
	}
	names := s.triggerNames("count", false)
	n, present, err := s.countState(ctx, tx, names, s.counter())
	if err != nil {
		return err
	}
	tallied, err := s.addTallies(ctx, tx, s.counter())
	if err != nil {
		return err
	}
	if n == len(names) && present == 1 && tallied {
		return nil
	}
	for _, name := range names { // an older version's, which count no tallies
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("DROP TRIGGER IF EXISTS %s", name)); err != nil {
			return err
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
	_, err = tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (id, active, %s) SELECT 1, %s FROM %s",
		s.counter(), strings.Join(tallies, ", "), s.countColumns(), s.table))
	return err
}

// countColumns returns the aggregates that count a table's records into
// the count rows' columns: active, then the tallies.
func (s *Store) countColumns() string {
	conds := []string{activeIn}
	for _, c := range tallies {
		conds = append(conds, "status = '"+c+"'")
	}
	out := make([]string, len(conds))
	for i, cond := range conds {
		out[i] = fmt.Sprintf("COALESCE(sum(CASE WHEN %s THEN 1 ELSE 0 END), 0)", cond)
	}
	return strings.Join(out, ", ")
}

// addTallies adds the tallies' columns that the count table (countTable)
// lacks, and reports whether it had them all: a table that an older
// version made has none, and its triggers count no tallies.
func (s *Store) addTallies(ctx context.Context, tx execer, countTable string) (bool, error) {
	have, err := s.existingColumns(ctx, tx, countTable)
	if err != nil {
		return false, err
	}
	all := true
	for i, c := range tallies {
		if _, ok := have[c]; ok {
			continue
		}
		all = false
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s", countTable, tallyDefs()[i])); err != nil {
			return false, err
		}
	}
	return all, nil
}

// triggerNames are the names of the counting triggers of one kind ("count"
// for the one-row count, "slot" for PostgreSQL's slots), with the TRUNCATE
// trigger that only PostgreSQL has when truncate is set.
func (s *Store) triggerNames(kind string, truncate bool) []string {
	names := []string{s.table + "_" + kind + "_insert", s.table + "_" + kind + "_delete", s.table + "_" + kind + "_update"}
	if truncate {
		names = append(names, s.table+"_"+kind+"_truncate")
	}
	return names
}

// countState returns how many of the triggers named exist on the table,
// and how many rows the count's table (countTable) holds: what
// ensureTriggers and ensureSlots check before they make the count anew.
// On PostgreSQL a <table>_slot_delete trigger counts only if it fires once
// a statement, as this version's does (an older version's fired for each
// row).
func (s *Store) countState(ctx context.Context, tx execer, names []string, countTable string) (triggers, rows int, err error) {
	quoted := "'" + strings.Join(names, "', '") + "'" // checkIdent allows no quote
	query := "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? AND name IN (" + quoted + ")"
	args := []any{s.table}
	if s.dialect == PostgreSQL {
		// tgtype's bit 1 is set on a trigger FOR EACH ROW.
		query = "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname IN (" + quoted + ") AND (tgname <> $2 OR tgtype & 1 = 0)"
		args = append(args, s.table+"_slot_delete")
	}
	if err := tx.QueryRowContext(ctx, query, args...).Scan(&triggers); err != nil {
		return 0, 0, err
	}
	err = tx.QueryRowContext(ctx, fmt.Sprintf("SELECT count(*) FROM %s", countTable)).Scan(&rows)
	return triggers, rows, err
}

// ensureSlots is ensureTriggers on PostgreSQL: when the slot triggers,
// the slots or their tallies are missing (a new table, one that an older
// version kept with a one-row count, or with slots that counted only the
// active records), it drops the older triggers, deals the active records
// out over the slots, and counts the records of each slot by state. Each
// slot's cap starts at its count, so the first insert shares the cap out
// (see admitFunction).
//
// An older version's process that starts on a table this one migrated
// finds the slot triggers it knows by name and leaves them; one already
// running writes through them, as they live in the database: its records
// are counted as this version's are.
func (s *Store) ensureSlots(ctx context.Context, tx execer) error {
	t := s.table
	names := append(s.triggerNames("slot", true), t+"_slot_born")
	n, present, err := s.countState(ctx, tx, names, s.slots())
	if err != nil {
		return err
	}
	tallied, err := s.addTallies(ctx, tx, s.slots())
	if err != nil {
		return err
	}
	if n == len(names) && present == pgSlots && tallied {
		return nil
	}
	for _, name := range append(names, s.triggerNames("count", true)...) { // and the one-row count's
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", name, t)); err != nil {
			return err
		}
	}
	stmts := []string{
		fmt.Sprintf("UPDATE %s SET slot = seq %% %d WHERE %s AND slot <> seq %% %d", t, pgSlots, activeIn, pgSlots),
		fmt.Sprintf("DELETE FROM %s", s.slots()),
		// One scan of the table counts every slot (a record whose slot
		// is out of range, which no version writes, is counted nowhere
		// and taken from nowhere when it goes).
		fmt.Sprintf(`INSERT INTO %s (id, active, cap, lim, %s)
SELECT g, COALESCE(c.active, 0), COALESCE(c.active, 0), 0, %s FROM generate_series(0, %d) AS g
LEFT JOIN (SELECT slot, %s FROM %s GROUP BY slot) AS c (slot, active, %s) ON c.slot = g`,
			s.slots(), strings.Join(tallies, ", "), "COALESCE(c."+strings.Join(tallies, ", 0), COALESCE(c.")+", 0)", pgSlots-1,
			s.countColumns(), t, strings.Join(tallies, ", ")),
	}
	for _, stmt := range append(stmts, s.triggers()...) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
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
