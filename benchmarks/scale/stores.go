package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite" // the "sqlite" driver
)

// backend is a kind of store that the benchmark fills and measures: open
// makes a fresh, empty store for n records, beside those it made for other
// sizes (a schema, a file or a key prefix of its own), fill writes n
// records into it as record describes (in the store's own layout), and
// close drops every store open made.
type backend interface {
	name() string
	open(ctx context.Context, n int) (apcore.TaskStore, error)
	fill(ctx context.Context, s apcore.TaskStore, n int, now time.Time) error
	close(ctx context.Context) error
}

// slowLogger is a backend whose server logs its slow commands (Redis's
// SLOWLOG); prefix is what the keys of the store for n records start
// with, so that a command can be told to be about that store.
type slowLogger interface {
	resetSlowlog(ctx context.Context) error
	slowlog(ctx context.Context) ([]slowEntry, error)
	prefix(n int) string
}

// slowEntry is a command in the slow log.
type slowEntry struct {
	took time.Duration
	args []string
}

// what is the command and its first arguments, on one line (an EVAL's
// first argument is the script), cut at 100 characters.
func (e slowEntry) what() string {
	w := strings.Join(strings.Fields(strings.Join(e.args[:min(len(e.args), 5)], " ")), " ")
	if r := []rune(w); len(r) > 100 {
		w = string(r[:100]) + "…"
	}
	return w
}

// about reports whether the command names a key under prefix, or names no
// key of any store of the benchmark (then it may be about any).
func (e slowEntry) about(prefix, common string) bool {
	ours := false
	for _, a := range e.args {
		if strings.HasPrefix(a, prefix) {
			return true
		}
		ours = ours || strings.HasPrefix(a, common)
	}
	return !ours
}

// longest is the longest of the entries about prefix (all of them when
// prefix is ""), and what it was.
func longest(entries []slowEntry, prefix, common string) (time.Duration, string) {
	var d time.Duration
	var what string
	for _, e := range entries {
		if e.took > d && (prefix == "" || e.about(prefix, common)) {
			d, what = e.took, e.what()
		}
	}
	return d, what
}

// fillBySave writes records 0..n-1 with the store's own Save: the finished
// ones from workers goroutines at once, then the pending ones, one after
// the other, so that they come last in the insertion order.
func fillBySave(ctx context.Context, s apcore.TaskStore, n int, now time.Time, workers int) error {
	pend := n - pendingCount(n)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		first  error
		chunk  = 1000
		next   = 0
		nextMu sync.Mutex
	)
	for range workers {
		wg.Go(func() {
			for {
				nextMu.Lock()
				lo := next
				next += chunk
				nextMu.Unlock()
				if lo >= pend {
					return
				}
				for i := lo; i < min(lo+chunk, pend); i++ {
					if err := s.Save(ctx, record(i, n, now)); err != nil {
						mu.Lock()
						if first == nil {
							first = err
						}
						mu.Unlock()
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	for i := pend; i < n; i++ {
		if err := s.Save(ctx, record(i, n, now)); err != nil {
			return err
		}
	}
	return nil
}

// ---- the memory store ---------------------------------------------------

type memoryBackend struct{}

func (memoryBackend) name() string { return "memory" }

func (memoryBackend) open(context.Context, int) (apcore.TaskStore, error) {
	return apcore.NewMemoryStore(), nil
}

func (memoryBackend) fill(ctx context.Context, s apcore.TaskStore, n int, now time.Time) error {
	return fillBySave(ctx, s, n, now, 2)
}

func (memoryBackend) close(context.Context) error { return nil }

// ---- sqlstore: PostgreSQL and SQLite ---------------------------------------

// sqlBackend is sqlstore on PostgreSQL (a schema of its own, dropped and
// made again for each store) or SQLite (a file in a temporary folder).
type sqlBackend struct {
	dialect sqlstore.Dialect
	dsn     string // PostgreSQL
	dir     string // SQLite: where the files go

	admin *sql.DB         // PostgreSQL: the harness's own connections
	dbs   map[int]*sql.DB // the stores', by size
	files []string        // SQLite: the files
}

// pgSchema is the schema the PostgreSQL store of n records lives in.
func pgSchema(n int) string { return fmt.Sprintf("apcore_scale_%d", n) }

func (b *sqlBackend) name() string {
	if b.dialect == sqlstore.PostgreSQL {
		return "postgres"
	}
	return "sqlite"
}

func (b *sqlBackend) open(ctx context.Context, n int) (apcore.TaskStore, error) {
	var (
		db  *sql.DB
		err error
	)
	if b.dbs == nil {
		b.dbs = map[int]*sql.DB{}
	}
	if b.dialect == sqlstore.PostgreSQL {
		if b.admin == nil {
			if b.admin, err = sql.Open("pgx", b.dsn); err != nil {
				return nil, err
			}
		}
		if _, err := b.admin.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+pgSchema(n)+" CASCADE"); err != nil {
			return nil, fmt.Errorf("drop schema: %w", err)
		}
		if _, err := b.admin.ExecContext(ctx, "CREATE SCHEMA "+pgSchema(n)); err != nil {
			return nil, fmt.Errorf("create schema: %w", err)
		}
		cfg, err := pgx.ParseConfig(b.dsn)
		if err != nil {
			return nil, err
		}
		cfg.RuntimeParams["search_path"] = pgSchema(n)
		db = stdlib.OpenDB(*cfg)
	} else {
		file := filepath.Join(b.dir, fmt.Sprintf("scale-%d.db", n))
		b.files = append(b.files, file)
		if db, err = sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"); err != nil {
			return nil, err
		}
	}
	b.dbs[n] = db
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	return sqlstore.New(ctx, db, b.dialect)
}

// fill inserts the records with one INSERT ... SELECT into the store's
// table, in the columns record sets (the others take their defaults), then
// on PostgreSQL VACUUM ANALYZE, as autovacuum would have done for a table
// that grew over time. The triggers the store made keep its count of
// active records.
func (b *sqlBackend) fill(ctx context.Context, s apcore.TaskStore, n int, now time.Time) error {
	table := s.(*sqlstore.Store).Table()
	pend := n - pendingCount(n)
	var mod strings.Builder
	fmt.Fprintf(&mod, "CASE i %% %d", len(modules))
	for k, m := range modules {
		fmt.Fprintf(&mod, " WHEN %d THEN '%s'", k, m)
	}
	mod.WriteString(" END")
	nowµ := now.UnixMicro()
	beginµ := now.Add(-spread - time.Hour).UnixMicro()
	stepµ := spread.Microseconds() / int64(n)
	status := fmt.Sprintf(`CASE WHEN i >= %d THEN 'pending' WHEN i %% %d = %d THEN 'failed' WHEN i %% %d = %d THEN 'cancelled' ELSE 'completed' END`,
		pend, failedEvery, failedAt, failedEvery, cancelledAt)
	sub := fmt.Sprintf(`CASE WHEN i >= %d THEN %d - (%d - i) * 1000 ELSE %d + %d * i END`, pend, nowµ, n, beginµ, stepµ)
	// The columns are computed from i, status and sub(mitted_at) of an
	// inner query; {id} is the dialect's new task id.
	cols := fmt.Sprintf(`{id}, %s AS module_id, status, sub,
		CASE WHEN status = 'pending' THEN NULL ELSE sub + 5000 END,
		CASE WHEN status = 'pending' THEN NULL ELSE sub + 5000 + (20 + i %% 80) * 1000 END,
		CASE WHEN status = 'completed' THEN '{"ok":true,"rows":' || (i %% 1000) || '}' END,
		CASE WHEN status = 'failed' THEN 'upstream answered 503' END,
		CASE WHEN status = 'failed' THEN 2 ELSE 0 END,
		CASE WHEN status = 'failed' THEN 2 ELSE 0 END,
		CASE WHEN status = 'failed' THEN 'MODULE_EXECUTE_ERROR' END`, mod.String())
	insert := "INSERT INTO " + table + ` (task_id, module_id, status, submitted_at, started_at, completed_at,
		result, error, retry_count, max_retries, error_code) `
	var query string
	if b.dialect == sqlstore.PostgreSQL {
		query = insert + "SELECT " + strings.Replace(cols, "{id}", "gen_random_uuid()::text", 1) +
			fmt.Sprintf(" FROM (SELECT i, %s AS status, %s AS sub FROM generate_series(0::bigint, %d) AS g(i)) AS r ORDER BY i", status, sub, n-1)
	} else {
		// A UUID v4 in text from 16 random bytes.
		uuid := `lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(h, 18, 3) || '-' || substr(h, 21, 12))`
		query = "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < " + fmt.Sprint(n-1) + ") " +
			insert + "SELECT " + strings.Replace(cols, "{id}", uuid, 1) +
			fmt.Sprintf(" FROM (SELECT i, %s AS status, %s AS sub, hex(randomblob(16)) AS h FROM g) AS r ORDER BY i", status, sub)
	}
	db := b.dbs[n]
	if _, err := db.ExecContext(ctx, query); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	analyze := "ANALYZE"
	if b.dialect == sqlstore.PostgreSQL {
		analyze = "VACUUM ANALYZE " + table
	}
	if _, err := db.ExecContext(ctx, analyze); err != nil {
		return fmt.Errorf("%s: %w", analyze, err)
	}
	return nil
}

func (b *sqlBackend) close(ctx context.Context) error {
	var errs []error
	for n, db := range b.dbs {
		errs = append(errs, db.Close())
		if b.dialect == sqlstore.PostgreSQL && b.admin != nil {
			_, err := b.admin.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+pgSchema(n)+" CASCADE")
			errs = append(errs, err)
		}
	}
	b.dbs = nil
	for _, file := range b.files {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(file + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	b.files = nil
	return errors.Join(errs...)
}

// shutdown closes the harness's own connections.
func (b *sqlBackend) shutdown() {
	if b.admin != nil {
		_ = b.admin.Close()
	}
}

// ---- redisstore -------------------------------------------------------------

// redisBackend is redisstore on a Redis database that it empties
// (FLUSHDB) before the first store and after the last: each store has a
// key prefix of its own (see prefix).
type redisBackend struct {
	url     string
	admin   *redis.Client   // the harness's: FLUSHDB, SLOWLOG, CONFIG
	clients []*redis.Client // the stores'
}

func (b *redisBackend) name() string { return "redis" }

// commonPrefix starts the keys of every store of the benchmark.
const commonPrefix = "apcore:scale:"

func (b *redisBackend) prefix(n int) string { return fmt.Sprintf("%s%d:", commonPrefix, n) }

func (b *redisBackend) open(ctx context.Context, n int) (apcore.TaskStore, error) {
	opts, err := redis.ParseURL(b.url)
	if err != nil {
		return nil, err
	}
	if b.admin == nil {
		ao := *opts
		ao.PoolSize = 2
		b.admin = redis.NewClient(&ao)
		if err := b.admin.FlushDB(ctx).Err(); err != nil {
			return nil, fmt.Errorf("flushdb: %w", err)
		}
	}
	opts.PoolSize = 32
	client := redis.NewClient(opts)
	b.clients = append(b.clients, client)
	return redisstore.New(client, redisstore.WithPrefix(b.prefix(n)))
}

// fill saves the records through the store's Save, from 64 goroutines at
// once, over a client that sends the scripts that goroutines run at the
// same time in one pipeline (pipeClient): a second Store on the same keys,
// used for the fill only.
func (b *redisBackend) fill(ctx context.Context, _ apcore.TaskStore, n int, now time.Time) error {
	opts, err := redis.ParseURL(b.url)
	if err != nil {
		return err
	}
	opts.PoolSize = 4
	pc := &pipeClient{Client: redis.NewClient(opts)}
	defer pc.Close()
	s, err := redisstore.New(pc, redisstore.WithPrefix(b.prefix(n)))
	if err != nil {
		return err
	}
	return fillBySave(ctx, s, n, now, 64)
}

// pipeClient is a Redis client whose EvalSha calls made at the same time go
// to Redis together, in one pipeline: while one pipeline is on its way, the
// calls that come queue, and the goroutine that sent it sends the queue
// next. (Script.Run calls EvalSha first, and Eval only when Redis does not
// know the script yet.)
type pipeClient struct {
	*redis.Client
	mu      sync.Mutex
	sending bool
	queue   []*evalCall
}

// evalCall is one queued EvalSha.
type evalCall struct {
	sha  string
	keys []string
	args []any
	cmd  *redis.Cmd
	done chan struct{}
}

// EvalSha queues the call, sends the queue unless a pipeline is on its
// way, and returns the call's result.
func (p *pipeClient) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	c := &evalCall{sha: sha, keys: keys, args: args, done: make(chan struct{})}
	p.mu.Lock()
	p.queue = append(p.queue, c)
	if p.sending {
		p.mu.Unlock()
		<-c.done
		return c.cmd
	}
	p.sending = true
	for len(p.queue) > 0 {
		batch := p.queue
		p.queue = nil
		p.mu.Unlock()
		pipe := p.Pipeline()
		for _, q := range batch {
			q.cmd = pipe.EvalSha(ctx, q.sha, q.keys, q.args...)
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
		for _, q := range batch {
			close(q.done)
		}
		p.mu.Lock()
	}
	p.sending = false
	p.mu.Unlock()
	return c.cmd
}

func (b *redisBackend) close(ctx context.Context) error {
	var errs []error
	for _, c := range b.clients {
		errs = append(errs, c.Close())
	}
	b.clients = nil
	if b.admin != nil {
		errs = append(errs, b.admin.FlushDBAsync(ctx).Err())
	}
	return errors.Join(errs...)
}

// resetSlowlog has Redis log every command slower than 1 ms, and forgets
// what it logged before.
func (b *redisBackend) resetSlowlog(ctx context.Context) error {
	if err := b.admin.ConfigSet(ctx, "slowlog-log-slower-than", "1000").Err(); err != nil {
		return err
	}
	if err := b.admin.ConfigSet(ctx, "slowlog-max-len", "1024").Err(); err != nil {
		return err
	}
	return b.admin.SlowLogReset(ctx).Err()
}

// slowlog returns the slow log's entries.
func (b *redisBackend) slowlog(ctx context.Context) ([]slowEntry, error) {
	entries, err := b.admin.SlowLogGet(ctx, 1024).Result()
	if err != nil {
		return nil, err
	}
	out := make([]slowEntry, len(entries))
	for i, e := range entries {
		out[i] = slowEntry{took: e.Duration, args: e.Args}
	}
	return out, nil
}

// shutdown closes the harness's own client.
func (b *redisBackend) shutdown() {
	if b.admin != nil {
		_ = b.admin.Close()
	}
}
