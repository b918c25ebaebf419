package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// workload is one row of the table: a backend, how many goroutines submit,
// and whether tasks are resumable (inputs kept, any worker runs them).
type workload struct {
	name       string
	backend    string // "pg" or "redis"
	submitters int
	resumable  bool
	// managers, for a backlog row, is how many managers (river: clients,
	// asynq: servers) drain the backlog, each with its own pool and
	// workers; 0 for a submit row.
	managers int
}

// peer is the other queue measured on w's backend.
func (w workload) peer() string {
	if w.backend == "pg" {
		return "river"
	}
	return "asynq"
}

// describe says what the row is, for the table's legend.
func (w workload) describe() string {
	be := map[string]string{"pg": "PostgreSQL", "redis": "Redis"}[w.backend]
	if w.managers > 0 {
		s := fmt.Sprintf("backlog drained by %d manager", w.managers)
		if w.managers != 1 {
			s += "s"
		}
		return s + ", " + be
	}
	s := fmt.Sprintf("%d submitter", w.submitters)
	if w.submitters != 1 {
		s += "s"
	}
	if w.resumable {
		s += ", resumable"
	}
	return s + ", " + be
}

// allWorkloads are the rows -rows picks from.
var allWorkloads = []workload{
	{name: "pg1", backend: "pg", submitters: 1},
	{name: "redis1", backend: "redis", submitters: 1},
	{name: "pg16", backend: "pg", submitters: 16},
	{name: "redis16", backend: "redis", submitters: 16},
	{name: "pg1-resumable", backend: "pg", submitters: 1, resumable: true},
	{name: "redis1-resumable", backend: "redis", submitters: 1, resumable: true},
	{name: "pg16-resumable", backend: "pg", submitters: 16, resumable: true},
	{name: "redis16-resumable", backend: "redis", submitters: 16, resumable: true},
	{name: "pg-backlog1", backend: "pg", resumable: true, managers: 1},
	{name: "pg-backlog3", backend: "pg", resumable: true, managers: 3},
	{name: "redis-backlog1", backend: "redis", resumable: true, managers: 1},
	{name: "redis-backlog3", backend: "redis", resumable: true, managers: 3},
}

// tasks is how many tasks a run of w measures: -backlog for a backlog
// row, -n otherwise.
func (e *env) tasks(w workload) int {
	if w.managers > 0 {
		return e.backlog
	}
	return e.n
}

// systems are the systems a row measures, in the order they alternate:
// the floor has no backlog form.
func (w workload) systems() []string {
	if w.managers > 0 {
		return []string{"apcore", w.peer()}
	}
	return []string{"floor", "apcore", w.peer()}
}

// instance is a system set up for one run, its workers started; for a
// backlog row, its backlog inserted and its workers not yet started.
type instance struct {
	// submit submits task i (one call, one task); nil for a backlog row.
	submit func(ctx context.Context, i int) error
	// begin, for a backlog row, starts the managers that drain the
	// backlog; the clock runs from its call.
	begin func(ctx context.Context) error
	// waits counts the system's waits for a pool connection so far.
	waits func() waits
	// done is closed once the store records every task as ended.
	done <-chan struct{}
	// notCompleted counts the tasks that ended otherwise than completed.
	notCompleted func() int64
	// pollCommands counts the Redis commands the harness's completion poll
	// sent (asynq), taken off the server's count.
	pollCommands func() int64
	// completed counts the completed records in the store; the harness
	// checks it after the clock stops.
	completed func(ctx context.Context) (int, error)
	// close stops the workers and closes the connections.
	close func(ctx context.Context) error
}

// tracker closes done when n tasks have ended.
type tracker struct {
	n     int64
	ended atomic.Int64
	bad   atomic.Int64
	done  chan struct{}
}

func newTracker(n int) *tracker { return &tracker{n: int64(n), done: make(chan struct{})} }

// end records a task whose end the store has recorded.
func (t *tracker) end(completed bool) {
	if !completed {
		t.bad.Add(1)
	}
	if t.ended.Add(1) == t.n {
		close(t.done)
	}
}

// sample is what one run of one system measured.
type sample struct {
	elapsed     time.Duration
	roundTrips  int64
	statements  int64
	clientCPU   time.Duration
	serverCPU   time.Duration // -1 when the server's processes cannot be read
	serverCalls int64         // statements (pg_stat_statements) or commands (INFO commandstats); -1 when unknown
	waits       waits         // waits for a pool connection
	detail      string        // per statement or command, for -v
}

// snapshot is the state of the counters at one instant.
type snapshot struct {
	roundTrips, statements int64
	clientCPU, serverCPU   time.Duration
	serverCalls            int64
	redisPer               map[string]int64
}

// take reads the counters. For PostgreSQL with pg_stat_statements, begin
// resets its counts and the end reads them.
func (e *env) take(ctx context.Context, backend string, begin bool) (snapshot, error) {
	s := snapshot{serverCPU: -1, serverCalls: -1}
	switch backend {
	case "pg":
		if e.pgss {
			if begin {
				if _, err := e.pgAdmin.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
					return s, err
				}
				s.serverCalls = 0
			} else if err := e.pgAdmin.QueryRow(ctx,
				"SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'").Scan(&s.serverCalls); err != nil {
				return s, err
			}
		}
		if e.postmaster != 0 {
			if cpu, err := processCPU(e.postmaster, true); err == nil {
				s.serverCPU = cpu
			}
		}
	case "redis":
		per, total, err := redisCommands(ctx, e.redisAdmin)
		if err != nil {
			return s, err
		}
		s.serverCalls, s.redisPer = total, per
		if e.redisPID != 0 {
			if cpu, err := processCPU(e.redisPID, false); err == nil {
				s.serverCPU = cpu
			}
		}
	}
	s.roundTrips, s.statements = e.calls.roundTrips.Load(), e.calls.statements.Load()
	s.clientCPU = clientCPU()
	return s, nil
}

// runOnce sets system sys up for w on empty tables or an empty database,
// then measures: every submitter submits its share of the n tasks, one call
// each, while the workers run, and the clock stops when the store records
// the last one completed. For a backlog row, the system inserts its
// backlog while no worker runs (not measured), and the clock runs from the
// start of its managers until the store records the last task completed.
// It then checks that the store holds n completed records.
func (e *env) runOnce(ctx context.Context, w workload, sys string) (sample, error) {
	n := e.tasks(w)
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	var start func(context.Context, workload) (*instance, error)
	switch sys {
	case "floor":
		start = e.startFloor
	case "apcore":
		start = e.startApcore
	case "river":
		start = e.startRiver
	case "asynq":
		start = e.startAsynq
	}
	switch w.backend {
	case "pg":
		if err := e.resetSchema(ctx, "bench_"+sys); err != nil {
			return sample{}, fmt.Errorf("reset schema: %w", err)
		}
	case "redis":
		if err := e.redisAdmin.FlushDB(ctx).Err(); err != nil {
			return sample{}, fmt.Errorf("flushdb: %w", err)
		}
	}
	inst, err := start(ctx, w)
	if err != nil {
		return sample{}, err
	}
	closed := false
	defer func() {
		if !closed {
			_ = inst.close(context.Background())
		}
	}()
	if w.backend == "pg" && w.managers > 0 {
		// A backlog waits in vacuumed, analyzed tables (as autovacuum
		// leaves them), for every system alike.
		if err := e.vacuum(ctx, "bench_"+sys); err != nil {
			return sample{}, fmt.Errorf("vacuum: %w", err)
		}
	}
	if w.backend == "pg" {
		// Write out what setup dirtied, so no run pays for another's.
		if _, err := e.pgAdmin.Exec(ctx, "CHECKPOINT"); err != nil {
			return sample{}, err
		}
	}

	runtime.GC() // the garbage of setup and of earlier runs is not this run's

	before, err := e.take(ctx, w.backend, true)
	if err != nil {
		return sample{}, fmt.Errorf("statistics: %w", err)
	}
	stopProfile := func() {}
	if e.cpuProfile != "" && sys == e.profSystem {
		if e.profRuns == nil {
			e.profRuns = map[string]int{}
		}
		e.profRuns[w.name]++
		f, err := os.Create(fmt.Sprintf("%s-%s-%d.pprof", e.cpuProfile, w.name, e.profRuns[w.name]))
		if err != nil {
			return sample{}, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return sample{}, err
		}
		stopProfile = func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}
		defer func() { stopProfile() }() // on an early return
	}
	waitsBefore := inst.waits()
	t0 := time.Now()
	if inst.begin != nil {
		if err := inst.begin(ctx); err != nil {
			return sample{}, fmt.Errorf("start the managers: %w", err)
		}
	}
	errc := make(chan error, w.submitters)
	var wg sync.WaitGroup
	for k := range w.submitters {
		wg.Go(func() {
			for i := k; i < n; i += w.submitters {
				if err := inst.submit(ctx, i); err != nil {
					errc <- fmt.Errorf("submit %d: %w", i, err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(errc) }()
	var failed error
	for err := range errc {
		if failed == nil {
			failed = err
			cancel() // the other submitters stop too
		}
	}
	if failed != nil {
		return sample{}, failed
	}
	select {
	case <-inst.done:
	case <-ctx.Done():
		return sample{}, fmt.Errorf("not all tasks completed within %v", e.timeout)
	}
	elapsed := time.Since(t0)
	waitsAfter := inst.waits()
	stopProfile()
	stopProfile = func() {}
	after, err := e.take(ctx, w.backend, false)
	if err != nil {
		return sample{}, fmt.Errorf("statistics: %w", err)
	}

	s := sample{
		elapsed:     elapsed,
		roundTrips:  after.roundTrips - before.roundTrips,
		statements:  after.statements - before.statements,
		clientCPU:   after.clientCPU - before.clientCPU,
		serverCPU:   -1,
		serverCalls: -1,
		waits:       waits{waitsAfter.count - waitsBefore.count, waitsAfter.dur - waitsBefore.dur},
	}
	if before.serverCPU >= 0 && after.serverCPU >= 0 {
		s.serverCPU = after.serverCPU - before.serverCPU
	}
	if before.serverCalls >= 0 && after.serverCalls >= 0 {
		s.serverCalls = after.serverCalls - before.serverCalls
		if w.backend == "redis" {
			s.serverCalls -= inst.pollCommands()
		}
	}
	if polls := inst.pollCommands(); polls > 0 && after.redisPer != nil {
		after.redisPer["zcard"] -= polls // the harness's, not the system's
	}
	if e.verbose {
		s.detail = e.detail(ctx, w.backend, n, before, after)
	}

	if bad := inst.notCompleted(); bad > 0 {
		return s, fmt.Errorf("%d tasks ended otherwise than completed", bad)
	}
	got, err := inst.completed(ctx)
	if err != nil {
		return s, fmt.Errorf("count completed records: %w", err)
	}
	if got != n {
		return s, fmt.Errorf("the store holds %d completed records, want %d", got, n)
	}
	closed = true
	if err := inst.close(ctx); err != nil {
		return s, fmt.Errorf("close: %w", err)
	}
	// Leave nothing behind for the server to clean up (autovacuum, say)
	// while the next system is measured.
	switch w.backend {
	case "pg":
		_, err = e.pgAdmin.Exec(ctx, "DROP SCHEMA bench_"+sys+" CASCADE")
	case "redis":
		err = e.redisAdmin.FlushDB(ctx).Err()
	}
	return s, err
}

// vacuum runs VACUUM ANALYZE on every table of schema.
func (e *env) vacuum(ctx context.Context, schema string) error {
	rows, err := e.pgAdmin.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
	if err != nil {
		return err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range tables {
		if _, err := e.pgAdmin.Exec(ctx, fmt.Sprintf("VACUUM ANALYZE %s.%s", schema, t)); err != nil {
			return err
		}
	}
	return nil
}

// detail lists the statements (pg_stat_statements; those the server spent
// most time in first, with that time per task) or commands (INFO
// commandstats; most called first) of the run with their calls per task.
func (e *env) detail(ctx context.Context, backend string, n int, before, after snapshot) string {
	type line struct {
		calls int64
		ms    float64 // the server's time running it (pg_stat_statements), -1: unknown
		what  string
	}
	var lines []line
	switch backend {
	case "pg":
		if !e.pgss {
			return ""
		}
		rows, err := e.pgAdmin.Query(ctx,
			"SELECT calls, total_exec_time, query FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 15")
		if err != nil {
			return err.Error()
		}
		for rows.Next() {
			var l line
			if err := rows.Scan(&l.calls, &l.ms, &l.what); err == nil {
				lines = append(lines, l)
			}
		}
		rows.Close()
	case "redis":
		for k, v := range after.redisPer {
			if d := v - before.redisPer[k]; d > 0 {
				lines = append(lines, line{d, -1, k})
			}
		}
		sort.Slice(lines, func(i, j int) bool { return lines[i].calls > lines[j].calls })
	}
	out := ""
	for _, l := range lines {
		what := []rune(l.what)
		if len(what) > 140 {
			what = append(what[:140], '…')
		}
		at := ""
		if l.ms >= 0 {
			at = fmt.Sprintf("%7.1f µs/task  ", l.ms*1e3/float64(n))
		}
		out += fmt.Sprintf("      %8.3f/task  %s%s\n", float64(l.calls)/float64(n), at, string(what))
	}
	return out
}

// logf prints progress to stderr.
func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, format, a...) }

// isUnsupported reports whether err says the system cannot run the row.
func isUnsupported(err error) bool { return errors.Is(err, errUnsupported) }
