package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/apcore-go/apcore"
)

// SchemaVersion is the version of the schema this package's migrations
// bring a table to, and the only one its Store runs on: the number of the
// last migration (see the package doc's Schema).
const SchemaVersion = 5

// migration is one numbered step of the schema: up brings a table at the
// version before to this one; down, where it is safe, undoes it.
type migration struct {
	version     int
	description string
	up, down    func(s *Store, ctx context.Context, tx execer) error
}

// migrations are the numbered steps, in order. 1 to 3 are the schema that
// versions before numbered migrations made and upgraded by looking at what
// a table had: each changes only what differs, so they bring any layout
// those versions left to version 3 in place. 4 and 5 are issue #19's.
var migrations = []migration{
	{1, "tasks, leases and count tables; columns an older table lacks; a JSONB result turned into TEXT", (*Store).upTables, nil},
	{2, "indexes: (status, seq), sweep, claim, claim by module; statistics on the sweep's reference time", (*Store).upIndexes, nil},
	{3, "triggers that keep the count rows, and the counts of the records there", (*Store).ensureTriggers, nil},
	{4, "run_at, unique_key, priority and due; the unique key index; claims by priority from ready records; the scheduled index", (*Store).upLater, (*Store).downLater},
	{5, "the held index: the active records an owner holds, by owner, which recovery reads", (*Store).upHeld, (*Store).downHeld},
}

// SchemaError is the cause of the error New and Migrate return, with code
// GENERAL_INVALID_INPUT (the table given is not one this package can use;
// trying again will not change that), for a table whose schema is newer
// than this package knows: a newer version of the package migrated it.
// Nothing was changed.
type SchemaError struct {
	// Table is the tasks table.
	Table string
	// Found is the table's schema version; Known is SchemaVersion.
	Found, Known int
}

// Error names both versions.
func (e *SchemaError) Error() string {
	return fmt.Sprintf("sqlstore: table %s has schema version %d, newer than version %d that this version of github.com/apcore-go/apcore/sqlstore knows; "+
		"run a version of the package that knows schema %d (see the README's Upgrading)", e.Table, e.Found, e.Known, e.Found)
}

func tooNew(table string, found int) error {
	e := &SchemaError{Table: table, Found: found, Known: SchemaVersion}
	return &apcore.Error{Code: apcore.CodeInvalidInput, Message: e.Error(), Cause: e}
}

// WithoutMigrate makes New leave the schema as it is: New then only checks
// that the table is at SchemaVersion (GENERAL_INVALID_INPUT otherwise),
// for a deployment that runs Migrate ahead of its replicas (see the
// README's Upgrading). Migrate ignores it.
func WithoutMigrate() Option { return func(c *config) { c.noMigrate = true } }

// Migrate brings the table's schema to this package's version through
// numbered migrations recorded in a version table; New calls it unless told
// not to. A schema newer than this package knows is refused with a clear
// error; the README states which versions may share a table during a
// rolling upgrade.
//
// The version table is <table>_schema_version, a row per migration made
// (version, description, applied_at in Unix microseconds). A table made
// before numbered migrations has none: Migrate runs every migration on it,
// and migrations 1 to 3 bring what it has up to version 3 in place. All of
// them run in one transaction under a lock, a transaction-scoped advisory
// lock keyed by the table's name on PostgreSQL and the write lock (BEGIN
// IMMEDIATE) on SQLite, so that processes may call Migrate or New at once:
// the first migrates, the others find the version it recorded. A table at
// this version is checked with one read and no lock. A newer schema is an
// error with code GENERAL_INVALID_INPUT whose cause is a *SchemaError, and
// changes nothing; a failure of the database is TASK_STORE_UNAVAILABLE.
//
// The migrations are this package's own small runner rather than a
// migration library's (pressly/goose, golang-migrate): their SQL is built
// for the table's name (WithTable) and dialect, and migrations 1 to 3 must
// look at what an unversioned table has, which plain SQL files do not do;
// and every step must run in the one transaction that holds the lock
// (BEGIN IMMEDIATE on SQLite, where neither library locks), with the check
// of a newer version inside it.
func Migrate(ctx context.Context, db *sql.DB, d Dialect, opts ...Option) error {
	s, _, err := newStore(ctx, db, d, "sqlstore.Migrate", opts)
	if err != nil {
		return err
	}
	return s.migrateTo(ctx, SchemaVersion)
}

// MigrateTo is Migrate to a given version: up to it, or down to it through
// the migrations that can be undone (5: down to 4 drops the held index;
// 4: down to 3 drops the columns run_at, unique_key, priority and due
// with their indexes and makes the claim indexes of version 3 again; the
// records' run times, keys and priorities are lost, while their
// not_before keeps a scheduled record waiting). Going down below 3 is
// refused. Run it only when no replica of
// a later version uses the table.
func MigrateTo(ctx context.Context, db *sql.DB, d Dialect, version int, opts ...Option) error {
	s, _, err := newStore(ctx, db, d, "sqlstore.MigrateTo", opts)
	if err != nil {
		return err
	}
	if version < 1 || version > SchemaVersion {
		return invalid(fmt.Sprintf("sqlstore.MigrateTo: version %d: this package knows versions 1 to %d", version, SchemaVersion))
	}
	return s.migrateTo(ctx, version)
}

// versions returns the version table's name.
func (s *Store) versions() string { return s.table + "_schema_version" }

// readVersion returns the table's schema version: the highest recorded, 0
// when there is no version table (none, or one made before numbered
// migrations).
func (s *Store) readVersion(ctx context.Context, q execer) (int, error) {
	var exists bool
	query := "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE"
	if s.dialect == PostgreSQL {
		query = "SELECT to_regclass($1) IS NOT NULL"
	}
	if err := q.QueryRowContext(ctx, query, s.versions()).Scan(&exists); err != nil {
		return 0, err
	}
	if !exists {
		return 0, nil
	}
	var v int
	err := q.QueryRowContext(ctx, fmt.Sprintf("SELECT COALESCE(max(version), 0) FROM %s", s.versions())).Scan(&v)
	return v, err
}

// checkVersion is New's check under WithoutMigrate: the table is at
// SchemaVersion.
func (s *Store) checkVersion(ctx context.Context) error {
	v, err := s.readVersion(ctx, s.db)
	switch {
	case err != nil:
		return unavailable("read the schema version of "+s.table, err)
	case v > SchemaVersion:
		return tooNew(s.table, v)
	case v < SchemaVersion:
		return invalid(fmt.Sprintf("sqlstore.New: table %s has schema version %d and this package needs %d; run sqlstore.Migrate, or New without WithoutMigrate", s.table, v, SchemaVersion))
	}
	return nil
}

// migrateTo runs the migrations between the table's version and target,
// up or down, in one transaction under the migration lock.
func (s *Store) migrateTo(ctx context.Context, target int) error {
	v, err := s.readVersion(ctx, s.db)
	// A SQLite file that processes open at once, new: a connection that
	// switches it to WAL while another does may be told SQLITE_BUSY
	// without waiting for the busy timeout. Read again, for a while.
	for try := 0; err != nil && isBusy(err) && try < 50 && ctx.Err() == nil; try++ {
		time.Sleep(20 * time.Millisecond)
		v, err = s.readVersion(ctx, s.db)
	}
	if err != nil {
		return unavailable("read the schema version of "+s.table, err)
	}
	if v > SchemaVersion {
		return tooNew(s.table, v)
	}
	if v == target {
		return nil
	}
	return s.inTx(ctx, "migrate "+s.table, func(tx execer) error {
		if s.dialect == PostgreSQL {
			h := fnv.New64a()
			h.Write([]byte("apcore.sqlstore." + s.table))
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
				return err
			}
		}
		// Again, under the lock, from the table itself: on PostgreSQL a
		// lookup by name (to_regclass) may answer from a catalog snapshot
		// taken before the lock was granted. A table that exists is left
		// as it is, so a newer version's changes nothing.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)", s.versions())); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRowContext(ctx, fmt.Sprintf("SELECT COALESCE(max(version), 0) FROM %s", s.versions())).Scan(&v); err != nil {
			return err
		}
		if v > SchemaVersion {
			return tooNew(s.table, v)
		}
		for _, m := range migrations {
			if m.version <= v || m.version > target {
				continue
			}
			if err := m.up(s, ctx, tx); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.description, err)
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (version, description, applied_at) VALUES (%s)", s.versions(), s.phs(1, 3)),
				m.version, m.description, time.Now().UnixMicro()); err != nil {
				return err
			}
		}
		for i := len(migrations) - 1; i >= 0; i-- {
			m := migrations[i]
			if m.version > v || m.version <= target {
				continue
			}
			if m.down == nil {
				return invalid(fmt.Sprintf("sqlstore: migration %d (%s) cannot be undone", m.version, m.description))
			}
			if err := m.down(s, ctx, tx); err != nil {
				return fmt.Errorf("undo migration %d (%s): %w", m.version, m.description, err)
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s WHERE version = %s", s.versions(), s.ph(1)), m.version); err != nil {
				return err
			}
		}
		return nil
	})
}

// laterColumnDefs are migration 4's columns.
var laterColumnDefs = [][2]string{
	{"run_at", "BIGINT"},
	{"unique_key", "TEXT"},
	{"priority", "INTEGER NOT NULL DEFAULT 0"},
	{"due", "INTEGER NOT NULL DEFAULT 1"},
}

// upLater is migration 4 (issue #19): the columns of RunAt, UniqueKey and
// Priority, and due (see dueOf); the unique key index, partial over the
// records that hold their key; the claim indexes made anew under their
// names, on (priority DESC, seq) and (module_id, priority DESC, seq) over
// the ready records only; and the scheduled index, on not_before over the
// waiting ones, which the promote walks. The pending records handed back
// with a not_before wait in the scheduled index from the start. The new
// columns have constant defaults: on PostgreSQL 11 and later adding them
// rewrites nothing; the indexes are partial, over few records.
func (s *Store) upLater(ctx context.Context, tx execer) error {
	t := s.table
	have, err := s.existingColumns(ctx, tx, t)
	if err != nil {
		return err
	}
	var stmts []string
	for _, c := range laterColumnDefs {
		if _, ok := have[c[0]]; !ok {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", t, c[0], c[1]))
		}
	}
	stmts = append(stmts,
		fmt.Sprintf("UPDATE %s SET due = 0 WHERE %s AND not_before IS NOT NULL AND due = 1", t, claimable),
		fmt.Sprintf("DROP INDEX IF EXISTS %s_claim", t),
		fmt.Sprintf("DROP INDEX IF EXISTS %s_claim_module", t),
		fmt.Sprintf("CREATE INDEX %s_claim ON %s (priority DESC, seq) WHERE %s", t, t, ready),
		fmt.Sprintf("CREATE INDEX %s_claim_module ON %s (module_id, priority DESC, seq) WHERE %s", t, t, ready),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_scheduled ON %s (not_before) WHERE %s", t, t, waiting),
		fmt.Sprintf("CREATE UNIQUE INDEX IF NOT EXISTS %s_unique_key ON %s (unique_key) WHERE %s", t, t, keyHeld),
	)
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

// downLater undoes migration 4: its indexes and columns go, and the claim
// indexes of version 3 come back.
func (s *Store) downLater(ctx context.Context, tx execer) error {
	t := s.table
	stmts := []string{}
	for _, name := range []string{"unique_key", "scheduled", "claim", "claim_module"} {
		stmts = append(stmts, fmt.Sprintf("DROP INDEX IF EXISTS %s_%s", t, name))
	}
	stmts = append(stmts,
		fmt.Sprintf("CREATE INDEX %s_claim ON %s (seq) WHERE %s", t, t, claimable),
		fmt.Sprintf("CREATE INDEX %s_claim_module ON %s (module_id, seq) WHERE %s", t, t, claimable))
	for _, c := range laterColumnDefs {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s", t, c[0]))
	}
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

// upHeld is migration 5 (issue #19): the held index, on owner over the
// active records that an owner holds (see held), through which Recover
// and Orphans find what dead managers held without reading the records
// that wait, held by no one. Like migration 4's indexes it is built in the
// migration's transaction (CREATE INDEX CONCURRENTLY cannot run in one),
// which holds the table's writes for one scan of it; the index holds the
// running records, few.
func (s *Store) upHeld(ctx context.Context, tx execer) error {
	t := s.table
	_, err := tx.ExecContext(ctx, fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s_held ON %s (owner) WHERE %s", t, t, held))
	return err
}

// downHeld undoes migration 5: the held index goes (version 4's queries
// do not name it).
func (s *Store) downHeld(ctx context.Context, tx execer) error {
	_, err := tx.ExecContext(ctx, fmt.Sprintf("DROP INDEX IF EXISTS %s_held", s.table))
	return err
}

// isBusy reports SQLite's SQLITE_BUSY (5), any extended code of it.
func isBusy(err error) bool {
	var lite interface{ Code() int }
	return errors.As(err, &lite) && lite.Code()&0xff == 5
}
