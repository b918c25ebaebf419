package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
)

// errUnsupported marks a system that cannot run a workload (apcore's
// resumable tasks on a store that is not an apcore.SharedStore).
var errUnsupported = errors.New("not supported")

// env is what every run shares: the servers, the harness's own connections
// to them (not counted), and the counters of the system under test.
type env struct {
	pgDSN    string
	redisURL string
	n        int
	workers  int
	timeout  time.Duration
	verbose  bool

	// pool is the size of every connection pool a system gets (-pool):
	// river's pgxpool MaxConns, apcore's sql.DB MaxOpenConns and
	// MaxIdleConns, go-redis's PoolSize for apcore and asynq. 0 leaves each
	// library's own default.
	pool int
	// backlog is how many tasks the backlog rows insert before any worker
	// runs (-backlog).
	backlog int

	// cpuProfile, when set, is where each measured run of profSystem
	// writes a CPU profile of this process: cpuProfile-<row>-<run>.pprof.
	cpuProfile string
	profSystem string
	profRuns   map[string]int

	riverFetchCooldown time.Duration
	riverFetchPoll     time.Duration
	asynqCheck         time.Duration
	asynqPoll          time.Duration

	calls calls
	log   *slog.Logger

	pgAdmin    *pgx.Conn     // the harness's connection: resets, statistics, checks
	pgss       bool          // pg_stat_statements can be read
	postmaster int           // the postmaster's pid, 0 when not on this machine
	redisAdmin *redis.Client // the harness's client: FLUSHDB, INFO, asynq's completion poll
	redisPID   int           // redis-server's pid, 0 when not on this machine
}

// connect opens the harness's own connections to the servers that rows
// need, and finds their processes.
func (e *env) connect(ctx context.Context, pg, rds bool) error {
	if pg {
		if e.pgDSN == "" {
			return errors.New("no PostgreSQL: set -pg or APCORE_TEST_POSTGRES (scripts/bench-durable.sh does)")
		}
		cfg, err := pgx.ParseConfig(e.pgDSN)
		if err != nil {
			return fmt.Errorf("-pg: %w", err)
		}
		if e.pgAdmin, err = pgx.ConnectConfig(ctx, cfg); err != nil {
			return fmt.Errorf("connect to PostgreSQL: %w", err)
		}
		if isLoopback(cfg.Host) {
			var pid int
			if err := e.pgAdmin.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err == nil {
				if st, err := readProcStat(pid); err == nil && st.ppid > 1 {
					e.postmaster = st.ppid
				}
			}
		}
		e.pgss = e.probePGSS(ctx)
	}
	if rds {
		if e.redisURL == "" {
			return errors.New("no Redis: set -redis or APCORE_TEST_REDIS (scripts/bench-durable.sh does)")
		}
		opts, err := redis.ParseURL(e.redisURL)
		if err != nil {
			return fmt.Errorf("-redis: %w", err)
		}
		opts.PoolSize = 4
		e.redisAdmin = redis.NewClient(opts)
		info, err := redisInfo(ctx, e.redisAdmin, "server")
		if err != nil {
			return fmt.Errorf("connect to Redis: %w", err)
		}
		host, _, _ := strings.Cut(opts.Addr, ":")
		if pid, err := strconv.Atoi(info["process_id"]); err == nil && isLoopback(host) {
			if _, err := readProcStat(pid); err == nil {
				e.redisPID = pid
			}
		}
	}
	return nil
}

// close closes the harness's connections.
func (e *env) close() {
	if e.pgAdmin != nil {
		_ = e.pgAdmin.Close(context.Background())
	}
	if e.redisAdmin != nil {
		_ = e.redisAdmin.Close()
	}
}

// probePGSS reports whether pg_stat_statements can be read, creating the
// extension when the server has the library loaded.
func (e *env) probePGSS(ctx context.Context) bool {
	read := func() bool {
		_, err := e.pgAdmin.Exec(ctx, "SELECT calls FROM pg_stat_statements LIMIT 1")
		return err == nil
	}
	if read() {
		return true
	}
	if _, err := e.pgAdmin.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return false
	}
	return read()
}

// resetSchema drops and creates schema, so that every run starts on empty
// tables.
func (e *env) resetSchema(ctx context.Context, schema string) error {
	_, err := e.pgAdmin.Exec(ctx, fmt.Sprintf("DROP SCHEMA IF EXISTS %s CASCADE", schema))
	if err == nil {
		_, err = e.pgAdmin.Exec(ctx, fmt.Sprintf("CREATE SCHEMA %s", schema))
	}
	return err
}

// pgConnConfig returns a counted connection config whose search_path is
// schema.
func (e *env) pgConnConfig(schema string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(e.pgDSN)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["search_path"] = schema
	cfg.Tracer = pgTracer{&e.calls}
	return cfg, nil
}

// pgPool opens a counted pgx pool on schema of -pool connections (MaxConns;
// pgxpool's default, the larger of 4 and the CPUs, with -pool 0), with
// every connection open.
func (e *env) pgPool(ctx context.Context, schema string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(e.pgDSN)
	if err != nil {
		return nil, err
	}
	pc.ConnConfig.RuntimeParams["search_path"] = schema
	pc.ConnConfig.Tracer = pgTracer{&e.calls}
	if e.pool > 0 {
		pc.MaxConns = int32(e.pool)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	// Open every connection now, not in the measured window.
	size := int(pool.Config().MaxConns)
	conns := make([]*pgxpool.Conn, 0, size)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range size {
		wg.Go(func() {
			c, err := pool.Acquire(ctx)
			if err != nil {
				failed.Store(&err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, c := range conns {
		c.Release()
	}
	if err := failed.Load(); err != nil {
		pool.Close()
		return nil, *err
	}
	return pool, nil
}

// sqlDB opens a counted database/sql pool (pgx's stdlib driver) on schema,
// of -pool connections (MaxOpenConns and MaxIdleConns), with every
// connection open; with -pool 0, database/sql's defaults (no bound on open
// connections, 2 idle), with 2 open.
func (e *env) sqlDB(ctx context.Context, schema string) (*sql.DB, error) {
	cfg, err := e.pgConnConfig(schema)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	size := 2 // database/sql's default MaxIdleConns
	if e.pool > 0 {
		size = e.pool
		db.SetMaxOpenConns(size)
		db.SetMaxIdleConns(size)
	}
	conns := make([]*sql.Conn, size)
	for i := range conns {
		if conns[i], err = db.Conn(ctx); err != nil {
			break
		}
	}
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// redisClient opens a counted Redis client of -pool connections (PoolSize;
// go-redis's default with -pool 0), with every connection open.
func (e *env) redisClient(ctx context.Context) (*redis.Client, error) {
	opts, err := redis.ParseURL(e.redisURL)
	if err != nil {
		return nil, err
	}
	if e.pool > 0 {
		opts.PoolSize = e.pool
	}
	c := redis.NewClient(opts)
	c.AddHook(redisHook{&e.calls})
	size := c.Options().PoolSize // go-redis's default: 10 per GOMAXPROCS
	conns := make([]*redis.Conn, 0, size)
	for range size {
		conn := c.Conn()
		conns = append(conns, conn)
		if err = conn.Ping(ctx).Err(); err != nil {
			break
		}
	}
	for _, conn := range conns {
		_ = conn.Close()
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// quietLogger logs warnings and errors to stderr: a store that fails shows.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
