// Package sqlstore is an apcore.TaskStore on database/sql, for SQLite and
// PostgreSQL: task records that survive restarts and that several managers
// (several replicas of a service) can share.
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
// New creates the table and its indexes when they are missing. Insertion
// order comes from a sequence column; an index on (status, seq) serves List
// by state and Count, and a partial index on completed_at over terminal
// records serves ListExpired. SaveIf is one conditional UPDATE, so a cancel
// written by one replica is never overwritten by another's late result.
// Times are stored as Unix microseconds, results as JSON.
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
	"hash/fnv"
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
	table string
}

// WithTable sets the table name (default "apcore_tasks"): letters, digits
// and underscores, not starting with a digit, at most 48 characters. Its
// indexes are named after it.
func WithTable(name string) Option { return func(c *config) { c.table = name } }

// Store is an apcore.TaskStore in a SQL table. It implements apcore.Counter
// and apcore.ConditionalSaver. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	dialect Dialect
	table   string
	q       queries
}

var (
	_ apcore.TaskStore        = (*Store)(nil)
	_ apcore.Counter          = (*Store)(nil)
	_ apcore.ConditionalSaver = (*Store)(nil)
)

// columns in the order every query reads and writes them.
const columns = "task_id, module_id, status, submitted_at, started_at, completed_at, result, error, retry_count, max_retries"

// queries are the statements, built once for a table and a dialect.
type queries struct {
	upsert, update, get, list, listStatus, listExpired, del, count string
}

// New returns a store on db, creating the table and its indexes when they
// are missing. It is safe to call from several processes at once.
func New(ctx context.Context, db *sql.DB, dialect Dialect, opts ...Option) (*Store, error) {
	if ctx == nil || db == nil {
		return nil, invalid("sqlstore.New needs a context and a *sql.DB")
	}
	if dialect != SQLite && dialect != PostgreSQL {
		return nil, invalid(fmt.Sprintf("sqlstore.New: unknown dialect %v", dialect))
	}
	cfg := config{table: DefaultTable}
	for _, o := range opts {
		if o == nil {
			return nil, invalid("sqlstore.New: nil option")
		}
		o(&cfg)
	}
	if err := checkIdent(cfg.table); err != nil {
		return nil, err
	}
	s := &Store{db: db, dialect: dialect, table: cfg.table}
	s.q = s.buildQueries()
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Name returns "SqlTaskStore".
func (s *Store) Name() string { return "SqlTaskStore" }

// Table returns the table's name.
func (s *Store) Table() string { return s.table }

func invalid(msg string) error { return &apcore.Error{Code: apcore.CodeInvalidInput, Message: msg} }

// unavailable wraps a database error.
func unavailable(op string, err error) error {
	return &apcore.Error{Code: apcore.CodeTaskStoreUnavailable, Message: "sqlstore: " + op, Cause: err}
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

// ph returns the dialect's placeholder for the n-th (1-based) argument.
func (s *Store) ph(n int) string {
	if s.dialect == PostgreSQL {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// phs returns placeholders from..to, comma-separated.
func (s *Store) phs(from, to int) string {
	p := make([]string, 0, to-from+1)
	for i := from; i <= to; i++ {
		p = append(p, s.ph(i))
	}
	return strings.Join(p, ", ")
}

const terminalIn = "status IN ('completed', 'failed', 'cancelled')"

func (s *Store) buildQueries() queries {
	t := s.table
	sets := []string{}
	for i, c := range strings.Split(columns, ", ")[1:] {
		sets = append(sets, fmt.Sprintf("%s = %s", c, s.ph(i+1)))
	}
	return queries{
		upsert: fmt.Sprintf(`INSERT INTO %s (%s) VALUES (%s)
ON CONFLICT (task_id) DO UPDATE SET module_id = excluded.module_id, status = excluded.status,
submitted_at = excluded.submitted_at, started_at = excluded.started_at, completed_at = excluded.completed_at,
result = excluded.result, error = excluded.error, retry_count = excluded.retry_count, max_retries = excluded.max_retries`,
			t, columns, s.phs(1, 10)),
		// the from states follow as arguments 11 and on (see SaveIf)
		update:      fmt.Sprintf("UPDATE %s SET %s WHERE task_id = %s AND status IN (", t, strings.Join(sets, ", "), s.ph(10)),
		get:         fmt.Sprintf("SELECT %s FROM %s WHERE task_id = %s", columns, t, s.ph(1)),
		list:        fmt.Sprintf("SELECT %s FROM %s ORDER BY seq", columns, t),
		listStatus:  fmt.Sprintf("SELECT %s FROM %s WHERE status = %s ORDER BY seq", columns, t, s.ph(1)),
		listExpired: fmt.Sprintf("SELECT %s FROM %s WHERE %s AND completed_at IS NOT NULL AND completed_at < %s ORDER BY seq", columns, t, terminalIn, s.ph(1)),
		del:         fmt.Sprintf("DELETE FROM %s WHERE task_id = %s", t, s.ph(1)),
		count:       fmt.Sprintf("SELECT count(*) FROM %s", t),
	}
}

// schema returns the statements that create the table and its indexes.
func (s *Store) schema() []string {
	t := s.table
	seq, result := "seq INTEGER PRIMARY KEY AUTOINCREMENT", "result TEXT"
	if s.dialect == PostgreSQL {
		seq, result = "seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "result JSONB"
	}
	return []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	%s,
	task_id TEXT NOT NULL UNIQUE,
	module_id TEXT NOT NULL,
	status TEXT NOT NULL,
	submitted_at BIGINT,
	started_at BIGINT,
	completed_at BIGINT,
	%s,
	error TEXT,
	retry_count INTEGER NOT NULL DEFAULT 0,
	max_retries INTEGER NOT NULL DEFAULT 0
)`, t, seq, result),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_status_seq ON %s (status, seq)", t, t),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_expiry ON %s (completed_at) WHERE %s AND completed_at IS NOT NULL", t, t, terminalIn),
	}
}

// migrate creates what is missing. On PostgreSQL a transaction-scoped
// advisory lock keyed by the table name serialises processes that start at
// once (CREATE ... IF NOT EXISTS alone can fail when two run together); on
// SQLite the database's write lock does.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return unavailable("begin migration", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if s.dialect == PostgreSQL {
		h := fnv.New64a()
		h.Write([]byte("apcore.sqlstore." + s.table))
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
			return unavailable("lock for migration", err)
		}
	}
	for _, stmt := range s.schema() {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return unavailable("create table "+s.table, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return unavailable("commit migration", err)
	}
	return nil
}

// micros is t as Unix microseconds, or NULL for the zero time.
func micros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

// args are the ten column values of a record, in column order.
func args(t *apcore.TaskInfo) ([]any, error) {
	var result, errText sql.NullString
	if t.Result != nil {
		b, err := json.Marshal(t.Result)
		if err != nil {
			return nil, invalid(fmt.Sprintf("sqlstore: task %s: the result is not JSON: %v", t.TaskID, err))
		}
		result = sql.NullString{String: string(b), Valid: true}
	}
	if t.Error != "" {
		errText = sql.NullString{String: t.Error, Valid: true}
	}
	return []any{t.TaskID, t.ModuleID, string(t.Status), micros(t.SubmittedAt), micros(t.StartedAt), micros(t.CompletedAt),
		result, errText, t.RetryCount, t.MaxRetries}, nil
}

func checkRecord(t *apcore.TaskInfo) error {
	if t.TaskID == "" {
		return invalid("sqlstore: record has an empty task id")
	}
	if !known(t.Status) {
		return invalid(fmt.Sprintf("sqlstore: record %s has unknown status %q", t.TaskID, t.Status))
	}
	return nil
}

// known reports whether s is one of the five states.
func known(s apcore.TaskStatus) bool { return s.IsActive() || s.IsTerminal() }

type scanner interface{ Scan(dest ...any) error }

func scan(row scanner) (apcore.TaskInfo, error) {
	var (
		t                   apcore.TaskInfo
		status              string
		sub, start, done    sql.NullInt64
		result, errText     sql.NullString
		retryCount, maxRetr int64
	)
	if err := row.Scan(&t.TaskID, &t.ModuleID, &status, &sub, &start, &done, &result, &errText, &retryCount, &maxRetr); err != nil {
		return t, err
	}
	t.Status = apcore.TaskStatus(status)
	t.SubmittedAt, t.StartedAt, t.CompletedAt = fromMicros(sub), fromMicros(start), fromMicros(done)
	if result.Valid {
		if err := json.Unmarshal([]byte(result.String), &t.Result); err != nil {
			return t, fmt.Errorf("task %s: stored result is not JSON: %w", t.TaskID, err)
		}
	}
	t.Error, t.RetryCount, t.MaxRetries = errText.String, int(retryCount), int(maxRetr)
	return t, nil
}

// Save creates or overwrites the record; an overwrite keeps its sequence
// number, so its place in List.
func (s *Store) Save(ctx context.Context, task apcore.TaskInfo) error {
	if err := checkRecord(&task); err != nil {
		return err
	}
	a, err := args(&task)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, s.q.upsert, a...); err != nil {
		return unavailable("save "+task.TaskID, err)
	}
	return nil
}

// SaveIf overwrites the record only if its stored status is one of from, in
// one conditional UPDATE; an absent record is not saved.
func (s *Store) SaveIf(ctx context.Context, task apcore.TaskInfo, from ...apcore.TaskStatus) (bool, error) {
	if err := checkRecord(&task); err != nil {
		return false, err
	}
	if len(from) == 0 {
		return false, nil
	}
	a, err := args(&task)
	if err != nil {
		return false, err
	}
	// arguments: nine columns after task_id, then task_id, then the states
	a = append(a[1:], a[0])
	for _, st := range from {
		a = append(a, string(st))
	}
	query := s.q.update + s.phs(11, 10+len(from)) + ")"
	res, err := s.db.ExecContext(ctx, query, a...)
	if err != nil {
		return false, unavailable("save "+task.TaskID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, unavailable("save "+task.TaskID, err)
	}
	return n == 1, nil
}

// Get returns the record, or an error matching apcore.ErrTaskNotFound.
func (s *Store) Get(ctx context.Context, taskID string) (apcore.TaskInfo, error) {
	t, err := scan(s.db.QueryRowContext(ctx, s.q.get, taskID))
	if errors.Is(err, sql.ErrNoRows) {
		return apcore.TaskInfo{}, &apcore.Error{Code: apcore.CodeTaskNotFound, Message: "Task not found: " + taskID}
	}
	if err != nil {
		return apcore.TaskInfo{}, unavailable("get "+taskID, err)
	}
	return t, nil
}

// List returns every record ("" status) or those in one state, in insertion
// order.
func (s *Store) List(ctx context.Context, status apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	if status == "" {
		return s.query(ctx, "list", s.q.list)
	}
	if !known(status) {
		return nil, invalid(fmt.Sprintf("sqlstore: unknown status %q", status))
	}
	return s.query(ctx, "list "+string(status), s.q.listStatus, string(status))
}

// ListExpired returns the terminal records whose CompletedAt is set and
// strictly before before.
func (s *Store) ListExpired(ctx context.Context, before time.Time) ([]apcore.TaskInfo, error) {
	return s.query(ctx, "list expired", s.q.listExpired, before.UnixMicro())
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
	if _, err := s.db.ExecContext(ctx, s.q.del, taskID); err != nil {
		return unavailable("delete "+taskID, err)
	}
	return nil
}

// Count returns how many records are in any of statuses (none = all), with
// one query that the (status, seq) index answers.
func (s *Store) Count(ctx context.Context, statuses ...apcore.TaskStatus) (int, error) {
	query, a := s.q.count, []any{}
	if len(statuses) > 0 {
		for _, st := range statuses {
			if !known(st) {
				return 0, invalid(fmt.Sprintf("sqlstore: unknown status %q", st))
			}
			a = append(a, string(st))
		}
		query += " WHERE status IN (" + s.phs(1, len(a)) + ")"
	}
	var n int
	if err := s.db.QueryRowContext(ctx, query, a...).Scan(&n); err != nil {
		return 0, unavailable("count", err)
	}
	return n, nil
}

// Explain returns the database's plan for the query a method runs ("List",
// "ListByStatus", "Count", "ListExpired"), to check that it uses the
// store's indexes.
func (s *Store) Explain(ctx context.Context, method string) (string, error) {
	var query string
	var a []any
	switch method {
	case "ListByStatus":
		query, a = s.q.listStatus, []any{"pending"}
	case "Count":
		query, a = s.q.count+" WHERE status IN ("+s.phs(1, 2)+")", []any{"pending", "running"}
	case "ListExpired":
		query, a = s.q.listExpired, []any{time.Now().UnixMicro()}
	default:
		return "", invalid("sqlstore: Explain knows ListByStatus, Count and ListExpired")
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
