package main

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/sqlstore"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go
)

// The stores' defaults, for the help text.
const (
	defaultTable  = sqlstore.DefaultTable
	defaultPrefix = redisstore.DefaultPrefix
)

// Kinds of store.
const (
	kindSQLite   = "sqlite"
	kindPostgres = "postgres"
	kindRedis    = "redis"
)

// storeRef is a parsed --store.
type storeRef struct {
	kind   string
	path   string // SQLite: the file
	url    string // PostgreSQL, Redis: the URL as given
	shown  string // the URL with its password hidden, for messages
	table  string // sqlstore's table, "" for the default
	prefix string // redisstore's prefix, "" for the default
}

// parseStore reads a --store URL (and --table, --prefix) without
// connecting. A URL of no known kind is a usage error.
func parseStore(raw, table, prefix string) (storeRef, error) {
	ref := storeRef{table: table, prefix: prefix}
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return ref, usagef("--store %q is not a store URL: use sqlite:PATH, postgres://... or redis://...", raw)
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		ref.kind, ref.path, ref.shown = kindSQLite, rest, raw
		if rest == "" {
			return ref, usagef("--store sqlite: needs the database file's path: sqlite:PATH")
		}
	case "postgres", "postgresql":
		ref.kind = kindPostgres
		u, err := url.Parse(raw)
		if err != nil {
			return ref, usagef("--store: not a PostgreSQL URL: %v", redactErr(err, raw))
		}
		if u.Host == "" && u.Query().Get("host") == "" {
			return ref, usagef("--store %s names no host: postgres://USER@HOST:PORT/DATABASE", u.Redacted())
		}
		ref.url, ref.shown = raw, u.Redacted()
	case "redis", "rediss":
		ref.kind = kindRedis
		u, err := url.Parse(raw)
		if err != nil {
			return ref, usagef("--store: not a Redis URL: %v", redactErr(err, raw))
		}
		if _, err := redis.ParseURL(raw); err != nil {
			return ref, usagef("--store %s: %v", u.Redacted(), err)
		}
		ref.url, ref.shown = raw, u.Redacted()
	default:
		return ref, usagef("--store: unknown kind of store %q: use sqlite:PATH, postgres://... or redis://...", scheme)
	}
	if table != "" && !validTable(table) {
		return ref, usagef("--table %q: use 1-48 letters, digits and underscores, not starting with a digit", table)
	}
	if table != "" && ref.kind == kindRedis {
		return ref, usagef("--table is for SQLite and PostgreSQL stores; a Redis store takes --prefix")
	}
	if prefix != "" && ref.kind != kindRedis {
		return ref, usagef("--prefix is for Redis stores; a SQL store takes --table")
	}
	return ref, nil
}

// validTable reports whether sqlstore takes name as a table name.
func validTable(name string) bool {
	if name == "" || len(name) > 48 || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, c := range name {
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// redactErr is a url.Parse error without the URL, which may hold a
// password.
func redactErr(err error, raw string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return errors.New(strings.ReplaceAll(err.Error(), raw, "URL"))
}

// store is what the commands need of a store; every shipped store has it.
type store interface {
	apcore.TaskStore
	apcore.Pager
	apcore.Counter
	apcore.ConditionalSaver
}

// opened is an open store and what closes it.
type opened struct {
	store   // nil for a SQL database opened to migrate
	ref     storeRef
	db      *sql.DB // SQLite, PostgreSQL
	dialect sqlstore.Dialect
	closers []func() error
}

// close releases the store and its connections.
func (o *opened) close() {
	for i := len(o.closers) - 1; i >= 0; i-- {
		_ = o.closers[i]()
	}
}

// describe names the store for people.
func (o *opened) describe() string {
	if o.ref.kind == kindRedis {
		return fmt.Sprintf("%s (prefix %q)", o.ref.shown, prefixName(o.ref))
	}
	return fmt.Sprintf("%s (table %s)", o.ref.shown, tableName(o.ref))
}

// open connects to the store, within ctx. With migrate (the migrate
// command), a SQLite file need not exist yet, and a SQL database is only
// connected to: o.store is nil. Otherwise a SQLite file must exist, and a
// SQL store is opened without migrating (sqlstore.WithoutMigrate): its
// table must be at sqlstore.SchemaVersion already.
func open(ctx context.Context, ref storeRef, migrate bool) (*opened, error) {
	o := &opened{ref: ref}
	switch ref.kind {
	case kindSQLite:
		if !migrate {
			if _, err := os.Stat(ref.path); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("sqlite: no database file at %s (apcore migrate creates one)", ref.path)
			} else if err != nil {
				return nil, fmt.Errorf("sqlite: %w", err)
			}
		}
		db, err := sql.Open("sqlite", sqliteDSN(ref.path))
		if err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		o.closers = append(o.closers, db.Close)
		return o.sql(ctx, db, sqlstore.SQLite, migrate)
	case kindPostgres:
		db, err := sql.Open("pgx", ref.url)
		if err != nil {
			return nil, fmt.Errorf("postgres: %s: %w", ref.shown, err)
		}
		o.closers = append(o.closers, db.Close)
		return o.sql(ctx, db, sqlstore.PostgreSQL, migrate)
	default:
		opts, err := redis.ParseURL(ref.url)
		if err != nil {
			return nil, fmt.Errorf("redis: %s: %w", ref.shown, err)
		}
		// go-redis's own timeouts (5 s to dial, 3 s to read) would keep a
		// server that never answers, and Close, past --timeout.
		if d, ok := ctx.Deadline(); ok {
			left := max(time.Until(d), time.Millisecond)
			opts.DialTimeout = min(cmp.Or(opts.DialTimeout, 5*time.Second), left)
			opts.ReadTimeout = min(cmp.Or(opts.ReadTimeout, 3*time.Second), left)
			opts.WriteTimeout = min(cmp.Or(opts.WriteTimeout, 3*time.Second), left)
		}
		redis.SetLogger(quiet{})
		client := redis.NewClient(opts)
		o.closers = append(o.closers, client.Close)
		// redisstore.New pings within its own 5 s; this ping is bounded by
		// --timeout, so that an unreachable server fails in that time.
		if err := client.Ping(ctx).Err(); err != nil {
			o.close()
			return nil, fmt.Errorf("redis at %s does not answer: %w", ref.shown, err)
		}
		var ropts []redisstore.Option
		if ref.prefix != "" {
			ropts = append(ropts, redisstore.WithPrefix(ref.prefix))
		}
		s, err := redisstore.New(client, ropts...)
		if err != nil {
			o.close()
			return nil, err
		}
		o.store = s
		return o, nil
	}
}

// quiet is go-redis's logger here: it would print each failed dial to
// stderr, while the command reports the failure once, on one line.
type quiet struct{}

// Printf drops the message.
func (quiet) Printf(context.Context, string, ...any) {}

// sql opens a sqlstore on db after a ping bounded by ctx; with
// connectOnly, only the ping.
func (o *opened) sql(ctx context.Context, db *sql.DB, d sqlstore.Dialect, connectOnly bool) (*opened, error) {
	o.db, o.dialect = db, d
	if err := db.PingContext(ctx); err != nil {
		o.close()
		return nil, fmt.Errorf("%s at %s does not answer: %w", d, o.ref.shown, err)
	}
	if connectOnly {
		return o, nil
	}
	// The commands other than migrate change no schema: they need the
	// table at the version this package knows, and say how to get there.
	s, err := sqlstore.New(ctx, db, d, append(o.sqlOptions(), sqlstore.WithoutMigrate())...)
	if err != nil {
		o.close()
		var newer *sqlstore.SchemaError
		if errors.Is(err, apcore.ErrInvalidInput) && !errors.As(err, &newer) && strings.Contains(err.Error(), "schema version") {
			return nil, fmt.Errorf("%s needs apcore migrate first: %w", o.describe(), err)
		}
		return nil, err
	}
	o.closers = append(o.closers, s.Close)
	o.store = s
	return o, nil
}

// sqlOptions are sqlstore's options for --table.
func (o *opened) sqlOptions() []sqlstore.Option {
	if o.ref.table == "" {
		return nil
	}
	return []sqlstore.Option{sqlstore.WithTable(o.ref.table)}
}

// sqliteDSN is modernc's DSN for a database file: a "file:" URI (the path's
// '%', '?' and '#' escaped, so that any file name works) that waits up to
// 5 s for the write lock that other processes hold. It sets no journal
// mode: that is the database's own, set by the service that made it.
func sqliteDSN(path string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?_pragma=busy_timeout(5000)"
}
