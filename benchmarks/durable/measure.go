package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// calls counts what the clients of the system under test send: round trips
// (a request the client waits for) and statements or commands (a pipeline or
// a batch is one round trip of several). Every client that a system opens
// counts here; the harness's own connections (schema resets, statistics,
// the completion poll of asynq) do not.
type calls struct {
	roundTrips atomic.Int64
	statements atomic.Int64
}

// pgTracer counts pgx's round trips and statements into calls.
type pgTracer struct{ c *calls }

// TraceQueryStart counts one query: one round trip.
func (t pgTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	t.c.roundTrips.Add(1)
	t.c.statements.Add(1)
	return ctx
}

// TraceQueryEnd does nothing.
func (pgTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart counts one batch: one round trip.
func (t pgTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	t.c.roundTrips.Add(1)
	return ctx
}

// TraceBatchQuery counts a statement of a batch.
func (t pgTracer) TraceBatchQuery(_ context.Context, _ *pgx.Conn, _ pgx.TraceBatchQueryData) {
	t.c.statements.Add(1)
}

// TraceBatchEnd does nothing.
func (pgTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TracePrepareStart counts a prepare (pgx prepares each statement once per
// connection): one round trip.
func (t pgTracer) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	t.c.roundTrips.Add(1)
	return ctx
}

// TracePrepareEnd does nothing.
func (pgTracer) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

// TraceCopyFromStart counts a COPY: one statement, counted as one round trip.
func (t pgTracer) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromStartData) context.Context {
	t.c.roundTrips.Add(1)
	t.c.statements.Add(1)
	return ctx
}

// TraceCopyFromEnd does nothing.
func (pgTracer) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

// redisHook counts go-redis round trips (a command, or a pipeline or
// transaction of several) and commands into calls.
type redisHook struct{ c *calls }

// DialHook passes through.
func (redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook counts one command, one round trip.
func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.c.roundTrips.Add(1)
		h.c.statements.Add(1)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook counts one round trip of len(cmds) commands.
func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.c.roundTrips.Add(1)
		h.c.statements.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// clientCPU is this process's user + system CPU time so far.
func clientCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// procStat is what the harness reads from /proc/<pid>/stat.
type procStat struct {
	ppid           int
	utime, stime   int64 // this process (all its threads), in ticks
	cutime, cstime int64 // its children that it has waited for, in ticks
}

// readProcStat reads /proc/<pid>/stat.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	// The command name, in parentheses, may hold spaces: fields start after
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15, cutime
	// 16, cstime 17.
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	return procStat{ppid: int(num(4)), utime: num(14), stime: num(15), cutime: num(16), cstime: num(17)}, nil
}

// processCPU returns the CPU time of pid. With children, it adds the CPU
// time of every live child and of the children pid has reaped, so that the
// sum over a window counts the backends that exited in it (postgres forks
// a backend per connection, and the postmaster reaps them).
func processCPU(pid int, children bool) (time.Duration, error) {
	root, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	ticks := root.utime + root.stime
	if children {
		ticks += root.cutime + root.cstime
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return 0, err
		}
		for _, e := range entries {
			child, err := strconv.Atoi(e.Name())
			if err != nil || child == pid {
				continue
			}
			st, err := readProcStat(child)
			if err != nil || st.ppid != pid {
				continue // gone, or not a child
			}
			ticks += st.utime + st.stime
		}
	}
	return time.Duration(ticks) * clockTick, nil
}

// isLoopback reports whether host names this machine, so that the server's
// processes can be read in /proc.
func isLoopback(host string) bool {
	if host == "localhost" || host == "" || strings.HasPrefix(host, "/") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redisInfo returns the "key:value" lines of INFO section.
func redisInfo(ctx context.Context, c *redis.Client, section string) (map[string]string, error) {
	s, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if ok {
			m[k] = v
		}
	}
	return m, nil
}

// redisCommands returns the calls of each command that Redis has run since
// its start (INFO commandstats), commands run by scripts included, without
// INFO itself.
func redisCommands(ctx context.Context, c *redis.Client) (map[string]int64, int64, error) {
	m, err := redisInfo(ctx, c, "commandstats")
	if err != nil {
		return nil, 0, err
	}
	per := map[string]int64{}
	var total int64
	for k, v := range m {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok || name == "info" {
			continue
		}
		for _, kv := range strings.Split(v, ",") {
			if n, ok := strings.CutPrefix(kv, "calls="); ok {
				calls, _ := strconv.ParseInt(n, 10, 64)
				per[name] = calls
				total += calls
			}
		}
	}
	return per, total, nil
}

// waits counts a system's waits for a pool connection: how many acquires
// found the pool empty and waited, and for how long in all.
type waits struct {
	count int64
	dur   time.Duration
}

// plus adds b's waits to a's.
func (a waits) plus(b waits) waits { return waits{a.count + b.count, a.dur + b.dur} }

// sqlWaits reads database/sql's counts (DBStats WaitCount, WaitDuration).
func sqlWaits(db *sql.DB) waits {
	st := db.Stats()
	return waits{st.WaitCount, st.WaitDuration}
}

// pgxWaits reads pgxpool's counts (EmptyAcquireCount,
// EmptyAcquireWaitTime).
func pgxWaits(p *pgxpool.Pool) waits {
	st := p.Stat()
	return waits{st.EmptyAcquireCount(), st.EmptyAcquireWaitTime()}
}

// redisWaits reads go-redis's counts (PoolStats WaitCount, WaitDurationNs).
func redisWaits(c *redis.Client) waits {
	st := c.PoolStats()
	return waits{int64(st.WaitCount), time.Duration(st.WaitDurationNs)}
}
