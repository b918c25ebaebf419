// Package sqlstore is an apcore.TaskStore on database/sql, for SQLite and
// PostgreSQL: task records that survive restarts and that several managers
// (several replicas of a service) share as one task manager. It implements
// apcore.SharedStore, apcore.Counter, apcore.ConditionalSaver,
// apcore.Remover, apcore.JSONStore, apcore.Pager, apcore.Sweeper,
// apcore.TxInserter (Submit WithTx, in the caller's transaction) and
// apcore.Notifier (on PostgreSQL: LISTEN/NOTIFY wakes idle managers).
//
// Pick a driver and open the database as usual, then hand it to New:
//
//	import _ "modernc.org/sqlite"            // SQLite, pure Go, no cgo
//	db, _ := sql.Open("sqlite", "file:tasks.db?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
//	store, err := sqlstore.New(ctx, db, sqlstore.SQLite)
//
//	import _ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL
//	db, _ := sql.Open("pgx", "postgres://app@db/app")
//	store, err := sqlstore.New(ctx, db, sqlstore.PostgreSQL)
//
//	mgr, err := apcore.NewTaskManager(reg, apcore.WithStore(store))
//
// # Schema
//
// The schema is made and upgraded by numbered migrations that Migrate
// runs (and New, unless WithoutMigrate), recorded in <table>_schema_version;
// SchemaVersion is the last, 5. Migrate runs them under a migration lock
// (an advisory lock on PostgreSQL, the write lock on SQLite), so processes
// may start at once, and refuses a table whose version is newer than it
// knows (GENERAL_INVALID_INPUT, a *SchemaError), changing nothing. What
// they make: the table, with a sequence column for insertion order, the
// record's columns (run_at, unique_key and priority among them, from
// migration 4) and, beside them, what replicas share (owner, resumable,
// inputs as JSON, spec: the retry policy, timeout and trace context as
// JSON, not_before, due); a <table>_leases table (owner primary key, expires_at); the
// count rows: the count of active (pending or running) records and of each
// terminal state's (completed, failed, cancelled): on SQLite a one-row
// <table>_active table, on PostgreSQL a <table>_slots table of 16 rows,
// each counting the records whose slot column names it, with its share of
// the cap (see Admission below); and triggers that keep those counts exact
// under every insert, delete and change of status, whoever makes it
// (TRUNCATE resets them on PostgreSQL). On PostgreSQL a record's end
// (running to completed) updates its one slot row, as it did when only the
// active records were counted, and a start (pending to running) none; the
// deletes of a statement (a Sweep's batch) and its inserts of ended
// records are counted together by statement triggers, a few slot rows
// updated once each. Count of a terminal state, of every record or of the
// active ones reads only the count rows. Migrations 1 to 3 are what New
// made before numbered migrations, which looked at what a table had: a
// table made by such a version (it has no version table) gets its missing
// columns (ALTER TABLE ADD COLUMN), its counts (taken
// under the lock that DROP TRIGGER and CREATE TRIGGER hold, so no write
// slips past them; on PostgreSQL the one-row count's triggers are dropped
// and its active records dealt out over the slots; count rows without the
// terminal states' columns get them, filled by one scan of the table) and,
// on PostgreSQL, its JSONB result column turned into TEXT (one rewrite of
// the table, once), and then migrations 4 and 5. Which versions may share a
// table during a rolling upgrade is in the README's Upgrading: the release
// before numbered migrations runs beside this one (its writes go through
// the triggers, which live in the database, and are counted; it leaves
// run_at, unique_key and priority as they are, claims by insertion order,
// and its start finds nothing to change on a migrated table).
//
// Indexes: the primary key (seq) serves ListPage; (status, seq) serves List
// by state, ListPage by state, Count of pending alone or running alone and
// Orphans' records held by no one; a partial index on owner over the
// active records that an owner holds (<table>_held, migration 5) serves
// Recover and Orphans' records of dead owners, which so read what the
// managers hold, not the records that wait; a partial index on the reference time,
// COALESCE(completed_at, submitted_at, the zero time), over terminal
// records (<table>_sweep) serves Sweep and ListExpired; a partial index on
// (priority DESC, seq) over the ready records (claimable: pending,
// resumable, held by no one; and due) serves Claim in its order, and one
// on (module_id, priority DESC, seq) over them a Claim limited to some
// modules, when their tasks are few among the ready ones (the planner
// picks); a partial index on not_before over the waiting records (due 0,
// <table>_scheduled) serves the promote; a partial unique index on
// unique_key over the records that hold their key (pending, running,
// completed; <table>_unique_key) makes a key's Insert atomic and serves
// the lookup of its holder; the unique task_id index serves Get, SaveIf,
// Update, Lost and Remove. Each of these queries costs what it reads or writes, not
// what the table keeps: at a million records each uses its index under
// the plan PostgreSQL makes for the values given and under the one it
// caches for a prepared statement (the tests check both). New creates the
// indexes a table made by an older version lacks, and drops that version's
// <table>_expiry index (on completed_at), which the sweep index replaces;
// CREATE INDEX blocks the table's writes while it runs (seconds at a
// million records), and on PostgreSQL 14 and later New creates statistics
// on the reference time (<table>_expires), which the planner keeps for no
// partial index. Times are Unix microseconds.
//
// # Pages and sweeps
//
// ListPage reads one page, Limit+1 rows, after (or, newest first, before)
// the seq that its cursor names: "s." and that number. A cursor is a place
// in the insertion order whatever the filter, and stays one when the
// record it names is deleted. Sweep deletes a batch of expired terminal
// records in one DELETE that picks them through the sweep index, on
// PostgreSQL locking them FOR UPDATE SKIP LOCKED so that racing sweepers
// take different records; it reports the rows that DELETE deleted. The
// count of active records is untouched: its triggers fire for active rows
// only.
//
// # Admission, leases, claims and fencing
//
// Insert admits and inserts in one statement. On PostgreSQL the limit is
// shared out among the slots: each slot row holds its count, its share of
// the limit (cap) and the limit it was shared from (lim); the shares add up
// to the limit and no slot's count exceeds its share, so the active records
// never exceed the limit. An insert tries the slot its task id hashes to:
// a CTE locks that row only if its count is below its share under this
// very limit (SELECT ... FOR UPDATE), and the INSERT selects from it; the
// insert's trigger raises the slot's count before the lock is released. A
// concurrent Insert on that slot waits for the lock, and READ COMMITTED
// re-checks the condition on the row's new version. When the slot's share
// is used up, or the limit differs from the one the shares came from, a
// second statement calls <table>_admit, which locks every slot in order,
// refuses at the limit, and otherwise shares what is left of it out again,
// evenly, and picks a slot with room. So inserts and task ends spread over
// 16 rows instead of queueing on one, the bound stays exact across any
// number of processes, and the cost is a row lookup or two however many
// dead or finished records the table holds. A changed limit is obeyed at
// once, since the shares are made anew from the counts; replicas that give
// different limits are each obeyed exactly too, but then their inserts lock
// every slot in turn, so replicas should share one max_tasks. On SQLite,
// one writer at a time makes INSERT ... SELECT ... WHERE (SELECT active
// ...) < limit atomic.
//
// Update is one UPDATE conditional on the record being active and held by
// the writer: once Recover has taken a lapsed manager's records, its late
// writes change nothing (fencing). Claim is one UPDATE of the due
// claimable records of the highest priority, oldest first among equals
// (on PostgreSQL chosen FOR UPDATE SKIP LOCKED, so racing claimers never
// wait for or share a record) RETURNING them; with Modules,
// of those modules only (module_id = ANY of a text array on PostgreSQL,
// module_id IN a JSON array's values on SQLite: one prepared statement
// whatever their number). Recover is one
// statement on PostgreSQL (a CTE deletes the lapsed leases, and the UPDATE
// resets or abandons what their owners, and owners with no lease, held)
// and one immediate transaction on SQLite. Lost is one query by task id.
// The manager's path for a task that is not resumable is three statements,
// three round trips: Insert, Update (running), Update (terminal); no count,
// no read before or after. The hot statements are prepared once per Store
// (modernc's SQLite would otherwise compile each statement on every call;
// pgx caches them per connection anyway); Close releases them. On SQLite
// the writes of one Store take turns through a Go channel rather than
// through SQLite's busy handler, which sleeps; writers in other processes
// still wait through busy_timeout. Claim on SQLite looks for a due record
// with a read first, since an UPDATE takes the write lock even when it
// matches nothing.
//
// # Later, once, first
//
// A record inserted or handed back with a not_before (a task submitted
// WithRunAt, or a retry's backoff) is written with due 0: it waits in the
// scheduled index only, not in the claim indexes, so a million of them
// cost a Claim nothing. Each Claim first promotes (due 1) up to 1,000 of
// the waiting records whose not_before is not after its Now, through the
// scheduled index in order of not_before (one index probe when none is
// due), and then claims among the ready ones; a claim also checks
// not_before against its own Now, so a record promoted by a claimer whose
// clock runs ahead, or one an older version handed back without setting
// due, waits for its time. Priorities order the claim index, so the claim
// reads the records it takes and no more. A scheduled record is pending:
// a cancel before its time is a cancel of a pending record. On SQLite
// Claim's first read looks for a ready record or a due waiting one.
//
// Insert with a unique key is the same one statement with ON CONFLICT
// (unique_key) WHERE <the index's predicate> DO NOTHING: when a record
// holding the key exists, or commits meanwhile in another process, it
// saves nothing, and one lookup in the unique key index returns the
// holder as a *apcore.DuplicateError. A holder that ended (failed,
// cancelled) or was deleted between the two lets one more insert try.
// Failed and cancelled records keep their unique_key but are outside the
// index, so they hold nothing.
//
// Fencing relies on the owner column: every Update names its writer, and
// Recover changes the owner (to no one) or ends the record, so a late
// write matches no row. Renew without create updates only a lease that is
// still there, so a manager learns that Recover took its lease.
//
// # What text columns keep
//
// PostgreSQL's text refuses NUL bytes and invalid UTF-8. Results are kept
// as JSON text (not JSONB), where a NUL in a string is the escape \u0000,
// so any result that encodes reads back equal on both dialects (the
// manager refuses NaN, infinities, channels and the like before the store).
// Module ids, error messages, error codes, progress messages and owners
// are stored escaped: each NUL byte and each invalid UTF-8 sequence becomes
// U+FFFD, on both dialects, so that such a message never leaves a record
// running; the record keeps its state, and only the message's bad bytes
// change. A task id that PostgreSQL cannot hold (NUL or invalid UTF-8) is
// never there: Get says TASK_NOT_FOUND, Delete and Remove do nothing, and
// Save and Insert refuse it with GENERAL_INVALID_INPUT.
//
// Every failure of the database is an error matching
// apcore.ErrStoreUnavailable that wraps the driver's error; a cancelled
// context aborts the query.
//
// Size the pool: database/sql keeps only 2 idle connections by default, so
// a manager with more workers than that opens and closes a connection for
// most calls. Call db.SetMaxIdleConns with at least max_concurrent + 2.
// For an in-memory SQLite database (":memory:") call db.SetMaxOpenConns(1):
// every connection to ":memory:" opens a database of its own.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
)

// Dialect is the SQL dialect of the database.
type Dialect int

// The supported dialects.
const (
	// SQLite, for example through the pure-Go modernc.org/sqlite driver.
	SQLite Dialect = iota + 1
	// PostgreSQL, for example through github.com/jackc/pgx/v5/stdlib.
	PostgreSQL
)

// String returns the dialect's name.
func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "SQLite"
	case PostgreSQL:
		return "PostgreSQL"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// DefaultTable is the table New uses unless WithTable says otherwise.
const DefaultTable = "apcore_tasks"

// Option configures New.
type Option func(*config)

type config struct {
	table     string
	noMigrate bool
}

// WithTable sets the table name (default "apcore_tasks"): letters, digits
// and underscores, not starting with a digit, at most 48 characters (so
// that <table>_schema_version fits PostgreSQL's 63). Its
// indexes, triggers and the leases and count tables are named after it.
func WithTable(name string) Option { return func(c *config) { c.table = name } }

// Store is an apcore.TaskStore in a SQL table. It implements
// apcore.SharedStore, apcore.Counter, apcore.ConditionalSaver,
// apcore.Remover, apcore.JSONStore, apcore.Pager, apcore.Sweeper,
// apcore.TxInserter and apcore.Notifier. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	dialect Dialect
	table   string
	q       queries
	st      stmts
	// wlock, on SQLite, lets one of this Store's writes at a time reach
	// the database: SQLite has one writer, and writers that find it busy
	// sleep in its busy handler (milliseconds at a time) instead of
	// queueing; a Go channel hands the turn on at once.
	wlock chan struct{}
	// updates gathers PostgreSQL's concurrent Updates into batches (see
	// batch.go).
	updates updates
}

// stmts are the hot statements, prepared once.
type stmts struct {
	insert, update, saveIfActive, get, del, countActive, lost, claim, claimAny, renew, renewCreate *sql.Stmt
	insertShared, claimIn, claimAnyIn, promote, holder                                             *sql.Stmt
	pageUp, pageDown, pageStatusUp, pageStatusDown, sweep                                          *sql.Stmt
}

var (
	_ apcore.TaskStore        = (*Store)(nil)
	_ apcore.Counter          = (*Store)(nil)
	_ apcore.ConditionalSaver = (*Store)(nil)
	_ apcore.SharedStore      = (*Store)(nil)
	_ apcore.Remover          = (*Store)(nil)
	_ apcore.JSONStore        = (*Store)(nil)
)

// New returns a store on db, creating or upgrading the table, its indexes
// and triggers and the tables beside it when needed, through Migrate
// (unless WithoutMigrate says not to; see the package doc). It is safe to
// call from several processes at once. A table whose schema is newer than
// this package knows is refused (see Migrate).
func New(ctx context.Context, db *sql.DB, dialect Dialect, opts ...Option) (*Store, error) {
	s, cfg, err := newStore(ctx, db, dialect, "sqlstore.New", opts)
	if err != nil {
		return nil, err
	}
	if cfg.noMigrate {
		err = s.checkVersion(ctx)
	} else {
		err = s.migrateTo(ctx, SchemaVersion)
	}
	if err != nil {
		return nil, err
	}
	s.q = s.buildQueries()
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// newStore checks New's (or Migrate's: fn) arguments and returns a Store
// without its queries and statements.
func newStore(ctx context.Context, db *sql.DB, dialect Dialect, fn string, opts []Option) (*Store, config, error) {
	cfg := config{table: DefaultTable}
	if ctx == nil || db == nil {
		return nil, cfg, invalid(fn + " needs a context and a *sql.DB")
	}
	if dialect != SQLite && dialect != PostgreSQL {
		return nil, cfg, invalid(fmt.Sprintf("%s: unknown dialect %v", fn, dialect))
	}
	for _, o := range opts {
		if o == nil {
			return nil, cfg, invalid(fn + ": nil option")
		}
		o(&cfg)
	}
	if err := checkIdent(cfg.table); err != nil {
		return nil, cfg, err
	}
	s := &Store{db: db, dialect: dialect, table: cfg.table}
	if dialect == SQLite {
		s.wlock = make(chan struct{}, 1)
	}
	return s, cfg, nil
}

// prepare prepares the hot statements.
func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&s.st.insert, s.q.insert}, {&s.st.update, s.q.update},
		{&s.st.saveIfActive, s.q.saveIf + s.phs(len(infoColumns)+1, len(infoColumns)+2) + ")"},
		{&s.st.get, s.q.get}, {&s.st.del, s.q.del}, {&s.st.countActive, s.q.countActive},
		{&s.st.lost, s.q.lost}, {&s.st.claim, s.q.claim}, {&s.st.renew, s.q.renew}, {&s.st.renewCreate, s.q.renewCreate},
		{&s.st.claimAny, s.q.claimAny}, {&s.st.insertShared, s.q.insertShared},
		{&s.st.claimIn, s.q.claimIn}, {&s.st.claimAnyIn, s.q.claimAnyIn},
		{&s.st.promote, s.q.promote}, {&s.st.holder, s.q.holder},
		{&s.st.pageUp, s.q.pageUp}, {&s.st.pageDown, s.q.pageDown},
		{&s.st.pageStatusUp, s.q.pageStatusUp}, {&s.st.pageStatusDown, s.q.pageStatusDown}, {&s.st.sweep, s.q.sweep},
	} {
		if p.query == "" {
			continue
		}
		st, err := s.db.PrepareContext(ctx, p.query)
		if err != nil {
			return unavailable("prepare", err)
		}
		*p.stmt = st
	}
	return nil
}

// Close releases the store's prepared statements. It does not close the
// *sql.DB, which belongs to the caller; a closed Store must not be used.
func (s *Store) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.st.insert, s.st.update, s.st.saveIfActive, s.st.get, s.st.del,
		s.st.countActive, s.st.lost, s.st.claim, s.st.claimAny, s.st.renew, s.st.renewCreate, s.st.insertShared,
		s.st.claimIn, s.st.claimAnyIn, s.st.promote, s.st.holder, s.st.pageUp, s.st.pageDown, s.st.pageStatusUp, s.st.pageStatusDown, s.st.sweep} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// Name returns "SqlTaskStore".
func (s *Store) Name() string { return "SqlTaskStore" }

// Table returns the table's name.
func (s *Store) Table() string { return s.table }

// KeepsJSON reports true: results are kept as JSON and read back
// JSON-decoded (objects as map[string]any, numbers as float64).
func (s *Store) KeepsJSON() bool { return true }

// write takes this Store's turn to write, on SQLite; it returns the
// function that hands the turn on, or ctx's error (as unavailable).
func (s *Store) write(ctx context.Context) (func(), error) {
	if s.wlock == nil {
		return func() {}, nil
	}
	select {
	case s.wlock <- struct{}{}:
		return func() { <-s.wlock }, nil
	case <-ctx.Done():
		return nil, unavailable("wait to write", ctx.Err())
	}
}

func invalid(msg string) error { return &apcore.Error{Code: apcore.CodeInvalidInput, Message: msg} }

func isAPCoreError(err error) bool {
	var e *apcore.Error
	return errors.As(err, &e)
}

// unavailable wraps a database error.
func unavailable(op string, err error) error {
	return &apcore.Error{Code: apcore.CodeTaskStoreUnavailable, Message: "sqlstore: " + op, Cause: err}
}

func notFound(taskID string) error {
	return &apcore.Error{Code: apcore.CodeTaskNotFound, Message: "Task not found: " + taskID}
}

// isDuplicate reports whether err is a unique constraint's violation:
// SQLSTATE 23505 on PostgreSQL, SQLITE_CONSTRAINT_UNIQUE or _PRIMARYKEY on
// SQLite.
// isDeadlock reports a PostgreSQL deadlock, which it breaks by aborting
// one of the statements.
func isDeadlock(err error) bool {
	var pg interface{ SQLState() string }
	return errors.As(err, &pg) && pg.SQLState() == "40P01"
}

func isDuplicate(err error) bool {
	var pg interface{ SQLState() string }
	if errors.As(err, &pg) {
		return pg.SQLState() == "23505"
	}
	var lite interface{ Code() int }
	if errors.As(err, &lite) {
		return lite.Code() == 2067 || lite.Code() == 1555
	}
	return false
}

func checkIdent(name string) error {
	if name == "" || len(name) > 48 || (name[0] >= '0' && name[0] <= '9') {
		return invalid(fmt.Sprintf("sqlstore: table name %q: use 1-48 letters, digits and underscores, not starting with a digit", name))
	}
	for _, c := range name {
		if !(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
			return invalid(fmt.Sprintf("sqlstore: table name %q: only letters, digits and underscores", name))
		}
	}
	return nil
}

// checkRecord refuses what no store keeps: an empty id, an unknown status,
// and on PostgreSQL an id it cannot hold.
func (s *Store) checkRecord(t *apcore.TaskInfo) error {
	if t.TaskID == "" {
		return invalid("sqlstore: record has an empty task id")
	}
	if !t.Status.Valid() {
		return invalid(fmt.Sprintf("sqlstore: record %s has unknown status %q", t.TaskID, t.Status))
	}
	if !s.storableID(t.TaskID) {
		return invalid(fmt.Sprintf("sqlstore: task id %q holds a NUL byte or invalid UTF-8, which PostgreSQL cannot keep", t.TaskID))
	}
	return nil
}

// Save creates or overwrites the record; an overwrite keeps its sequence
// number (its place in List) and what is kept beside it.
func (s *Store) Save(ctx context.Context, task apcore.TaskInfo) error {
	if err := s.checkRecord(&task); err != nil {
		return err
	}
	a, err := infoArgs(&task)
	if err != nil {
		return err
	}
	done, err := s.write(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := s.db.ExecContext(ctx, s.q.upsert, a...); err != nil {
		return unavailable("save "+task.TaskID, err)
	}
	return nil
}

// SaveIf overwrites the record only if its stored status is one of from, in
// one conditional UPDATE; an absent record is not saved.
func (s *Store) SaveIf(ctx context.Context, task apcore.TaskInfo, from ...apcore.TaskStatus) (bool, error) {
	if err := s.checkRecord(&task); err != nil {
		return false, err
	}
	if len(from) == 0 {
		return false, nil
	}
	a, err := infoArgs(&task)
	if err != nil {
		return false, err
	}
	// arguments: the columns after task_id, then task_id, then the states
	a = append(a[1:], a[0])
	for _, st := range from {
		a = append(a, string(st))
	}
	done, err := s.write(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	var res sql.Result
	if len(from) == 2 && from[0] == apcore.StatusPending && from[1] == apcore.StatusRunning {
		res, err = s.st.saveIfActive.ExecContext(ctx, a...)
	} else {
		res, err = s.db.ExecContext(ctx, s.q.saveIf+s.phs(len(infoColumns)+1, len(infoColumns)+len(from))+")", a...)
	}
	return affected(res, err, "save "+task.TaskID)
}

// affected reports whether an Exec changed exactly one row.
func affected(res sql.Result, err error, op string) (bool, error) {
	if err != nil {
		return false, unavailable(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, unavailable(op, err)
	}
	return n == 1, nil
}

// Get returns the record, or an error matching apcore.ErrTaskNotFound.
func (s *Store) Get(ctx context.Context, taskID string) (apcore.TaskInfo, error) {
	if !s.storableID(taskID) {
		return apcore.TaskInfo{}, notFound(taskID)
	}
	t, err := scan(s.st.get.QueryRowContext(ctx, taskID))
	if errors.Is(err, sql.ErrNoRows) {
		return apcore.TaskInfo{}, notFound(taskID)
	}
	if err != nil {
		return apcore.TaskInfo{}, unavailable("get "+taskID, err)
	}
	return t, nil
}

// List returns every record ("" status) or those in one state, in insertion
// order. The state is written into the query as a constant (it is a valid
// state, so nothing else can be): the plan PostgreSQL caches for a
// prepared statement, the state unknown, may read the whole table by the
// primary key (for the order) to list a state with few records, where the
// (status, seq) index reads only those.
func (s *Store) List(ctx context.Context, status apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	if status == "" {
		return s.query(ctx, "list", s.q.list)
	}
	if !status.Valid() {
		return nil, invalid(fmt.Sprintf("sqlstore: unknown status %q", status))
	}
	return s.query(ctx, "list "+string(status), s.q.listStatus+"'"+string(status)+"' ORDER BY seq")
}

// ListExpired returns the terminal records whose CompletedAt is set and
// strictly before before.
func (s *Store) ListExpired(ctx context.Context, before time.Time) ([]apcore.TaskInfo, error) {
	return s.query(ctx, "list expired", s.listExpiredQuery(before.UnixMicro()))
}

func (s *Store) query(ctx context.Context, op, query string, a ...any) ([]apcore.TaskInfo, error) {
	rows, err := s.db.QueryContext(ctx, query, a...)
	if err != nil {
		return nil, unavailable(op, err)
	}
	defer rows.Close()
	out := []apcore.TaskInfo{}
	for rows.Next() {
		t, err := scan(rows)
		if err != nil {
			return nil, unavailable(op, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(op, err)
	}
	return out, nil
}

// Delete removes the record; an absent id is not an error.
func (s *Store) Delete(ctx context.Context, taskID string) error {
	_, err := s.Remove(ctx, taskID)
	return err
}

// Remove deletes the record and reports whether this call deleted it.
func (s *Store) Remove(ctx context.Context, taskID string) (bool, error) {
	if !s.storableID(taskID) {
		return false, nil
	}
	done, err := s.write(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	res, err := s.st.del.ExecContext(ctx, taskID)
	return affected(res, err, "delete "+taskID)
}

// Count returns how many records are in any of statuses (none = all, that
// is every record in one of the five states). The active ones (pending and
// running together), each terminal state's and all of them are read from
// the count rows that the triggers keep, exact in every snapshot and in
// time that does not follow the table's size (16 rows on PostgreSQL, one
// on SQLite); pending alone or running alone, which no count row keeps
// (see tallies), is counted through the (status, seq) index, reading an
// index entry per record counted: few, as active records are. A set with
// both kinds is one statement, one snapshot. The states are written into
// the query as constants (each is a valid state, so nothing else can be):
// the plan PostgreSQL caches for a count of any states, parameters
// unknown, scans the whole table, even for a state with few records.
func (s *Store) Count(ctx context.Context, statuses ...apcore.TaskStatus) (int, error) {
	for _, st := range statuses {
		if !st.Valid() {
			return 0, invalid(fmt.Sprintf("sqlstore: unknown status %q", st))
		}
	}
	var n int
	if len(statuses) == 2 && slices.Contains(statuses, apcore.StatusPending) && slices.Contains(statuses, apcore.StatusRunning) {
		if err := s.st.countActive.QueryRowContext(ctx).Scan(&n); err != nil {
			return 0, unavailable("count", err)
		}
		return n, nil
	}
	if err := s.db.QueryRowContext(ctx, s.countQuery(statuses)).Scan(&n); err != nil {
		return 0, unavailable("count", err)
	}
	return n, nil
}

// countQuery is Count's query for valid statuses: the sum of the count
// rows' columns for the states they keep, plus a count through the index
// of pending or running when only one of the two is asked. The same set
// of states, in any order or repeated, is always the same statement.
func (s *Store) countQuery(statuses []apcore.TaskStatus) string {
	var cols []string
	indexed := ""
	if len(statuses) == 0 {
		cols = append([]string{"active"}, tallies...)
	} else {
		pending, running := slices.Contains(statuses, apcore.StatusPending), slices.Contains(statuses, apcore.StatusRunning)
		switch {
		case pending && running:
			cols = append(cols, "active")
		case pending:
			indexed = string(apcore.StatusPending)
		case running:
			indexed = string(apcore.StatusRunning)
		}
		for _, c := range tallies {
			if slices.Contains(statuses, apcore.TaskStatus(c)) {
				cols = append(cols, c)
			}
		}
	}
	if indexed != "" {
		indexed = fmt.Sprintf("(SELECT count(*) FROM %s WHERE status = '%s')", s.table, indexed)
		if len(cols) == 0 {
			return "SELECT " + indexed
		}
		indexed = " + " + indexed
	}
	counts := s.counter()
	if s.dialect == PostgreSQL {
		counts = s.slots()
	}
	return fmt.Sprintf("SELECT COALESCE(sum(%s), 0)%s FROM %s", strings.Join(cols, " + "), indexed, counts)
}

// lostArg is Lost's ids as its query takes them: a text array on
// PostgreSQL, a JSON array for json_each on SQLite.
func (s *Store) lostArg(ids []string) (any, error) {
	if s.dialect == PostgreSQL {
		keep := make([]string, 0, len(ids))
		for _, id := range ids {
			if s.storableID(id) {
				keep = append(keep, id)
			}
		}
		return keep, nil
	}
	b, err := json.Marshal(ids)
	return string(b), err
}

// modulesArg is Claim's module ids as its query takes them, each escaped
// as the module_id column keeps it (see clean): a text array on
// PostgreSQL, a JSON array for json_each on SQLite.
func (s *Store) modulesArg(modules []string) (any, error) {
	keep := make([]string, len(modules))
	for i, m := range modules {
		keep[i] = clean(m)
	}
	if s.dialect == PostgreSQL {
		return keep, nil
	}
	b, err := json.Marshal(keep)
	return string(b), err
}

// sortBySeq sorts claimed records into Claim's order: higher priority
// first, then insertion order.
func sortBySeq(seqs []int64, ts []apcore.StoredTask) {
	idx := make([]int, len(ts))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		if pa, pb := ts[idx[a]].Info.Priority, ts[idx[b]].Info.Priority; pa != pb {
			return pa > pb
		}
		return seqs[idx[a]] < seqs[idx[b]]
	})
	out := make([]apcore.StoredTask, len(ts))
	for i, j := range idx {
		out[i] = ts[j]
	}
	copy(ts, out)
}

// ExplainMethods are the methods whose queries Explain knows, in the order
// of the store's interfaces: each fixed query the store runs, with
// arguments like those the manager passes. "Count" counts pending and
// failed records (the pending through the index, the failed from the count
// rows); "CountActive" is Count of pending and running, "CountTerminal"
// Count of completed records and "CountAll" Count of every record, which
// read only the count rows the triggers keep; "ListByStatus" lists pending
// records; "ListPage*" are the pages of every record or of one state
// ("Status": pending), in insertion order or newest first ("Newest"),
// after a cursor in the middle; "ListExpired" and "Sweep" take records
// that ended a day ago or earlier; "ClaimModules" is a Claim with Modules;
// "InsertUnique" is an Insert with a unique key, "UniqueHolder" the lookup
// of the record holding a key that follows an insert that saved nothing,
// and "Promote" the statement a Claim runs first, which marks due the
// scheduled records whose time has come.
var ExplainMethods = []string{"Get", "SaveIf", "Remove", "ListByStatus", "ListExpired", "Count", "CountActive",
	"CountTerminal", "CountAll", "Insert", "Update", "Claim", "ClaimModules", "Lost", "Recover", "Orphans",
	"ListPage", "ListPageNewest", "ListPageStatus", "ListPageStatusNewest", "Sweep",
	"InsertUnique", "UniqueHolder", "Promote"}

// explainQuery returns the query a method of ExplainMethods runs and
// arguments for it; on SQLite, "Recover" is its UPDATE (the lapsed leases'
// DELETE is on the leases table).
func (s *Store) explainQuery(method string) (string, []any, error) {
	now := time.Now().UnixMicro()
	dayAgo := now - 24*time.Hour.Microseconds() // ListExpired's and Sweep's: a day's TTL
	info := []any{"id", "m.x", "completed", now, now, now, `{"ok":true}`, nil, 0, 0, nil, 1.0, nil, nil, nil, 0}
	n := len(infoColumns)
	switch method {
	case "Get":
		return s.q.get, []any{"id"}, nil
	case "SaveIf":
		return s.q.saveIf + s.phs(n+1, n+2) + ")", append(append(info[1:], "id"), "pending", "running"), nil
	case "Remove":
		return s.q.del, []any{"id"}, nil
	case "ListByStatus":
		return s.q.listStatus + "'pending' ORDER BY seq", nil, nil
	case "Count":
		return s.countQuery([]apcore.TaskStatus{apcore.StatusPending, apcore.StatusFailed}), nil, nil
	case "CountActive":
		return s.q.countActive, nil, nil
	case "CountTerminal":
		return s.countQuery([]apcore.TaskStatus{apcore.StatusCompleted}), nil, nil
	case "CountAll":
		return s.countQuery(nil), nil, nil
	case "ListExpired":
		return s.listExpiredQuery(dayAgo), nil, nil
	case "Insert", "InsertUnique":
		var key any
		if method == "InsertUnique" {
			key = "key"
		}
		a := []any{"id", "m.x", "pending", now, nil, nil, nil, nil, 0, 0, nil, 0.0, nil, nil, key, 0, "o", 0, nil, nil, nil, 1, 10}
		if s.dialect == PostgreSQL {
			a = append(a, int16(0)) // the slot
		}
		return s.q.insert, a, nil
	case "UniqueHolder":
		return s.q.holder, []any{"key"}, nil
	case "Promote":
		return s.q.promote, []any{now, promoteBatch}, nil
	case "Update":
		return s.q.update, append(append(info[1:], "o", nil, 1), "id", "o"), nil
	case "Lost":
		arg, _ := s.lostArg([]string{"a", "b"})
		return s.q.lost, []any{arg, "o"}, nil
	case "Claim":
		if s.dialect == SQLite {
			return s.q.claim, []any{"o", now, now, "o", now, 5}, nil
		}
		return s.q.claim, []any{"o", now, now, 5}, nil
	case "ClaimModules":
		mods, _ := s.modulesArg([]string{"m.a", "m.b"})
		if s.dialect == SQLite {
			return s.q.claimIn, []any{"o", now, now, mods, "o", now, 5}, nil
		}
		return s.q.claimIn, []any{"o", now, now, 5, mods}, nil
	case "Recover":
		return s.q.recover, []any{now, abandonedMessage, string(apcore.CodeTaskAbandoned)}, nil
	case "Orphans":
		return s.q.orphans, []any{"o", "o", now, now, "o", now}, nil
	case "ListPage":
		return s.q.pageUp, []any{int64(500_000), 101}, nil
	case "ListPageNewest":
		return s.q.pageDown, []any{int64(500_000), 101}, nil
	case "ListPageStatus":
		return s.q.pageStatusUp, []any{"pending", int64(500_000), 101}, nil
	case "ListPageStatusNewest":
		return s.q.pageStatusDown, []any{"pending", int64(500_000), 101}, nil
	case "Sweep":
		return s.q.sweep, []any{dayAgo, 1000}, nil
	}
	return "", nil, invalid(fmt.Sprintf("sqlstore: Explain knows %s; not %q", strings.Join(ExplainMethods, ", "), method))
}

// Explain returns the database's plan for the query a method runs (one of
// ExplainMethods), to check that it uses the store's indexes: EXPLAIN on
// PostgreSQL, EXPLAIN QUERY PLAN on SQLite, one line per row. It runs
// nothing.
func (s *Store) Explain(ctx context.Context, method string) (string, error) {
	query, a, err := s.explainQuery(method)
	if err != nil {
		return "", err
	}
	prefix := "EXPLAIN QUERY PLAN "
	if s.dialect == PostgreSQL {
		prefix = "EXPLAIN "
	}
	rows, err := s.db.QueryContext(ctx, prefix+query, a...)
	if err != nil {
		return "", unavailable("explain", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", unavailable("explain", err)
	}
	var lines []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", unavailable("explain", err)
		}
		lines = append(lines, fmt.Sprint(vals[len(vals)-1]))
	}
	return strings.Join(lines, "\n"), rows.Err()
}
