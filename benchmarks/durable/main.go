// Command durable measures apcore over its durable stores against a peer
// queue on the same server and against the floor, side by side on one
// machine: apcore over sqlstore against river on PostgreSQL, apcore over
// redisstore against asynq on Redis.
//
// The workload: n no-op tasks (10,000 by default) submitted one call at a
// time by 1 or 16 submitter goroutines while the workers run, 100 workers
// (max_concurrent, MaxWorkers, Concurrency); the clock runs from the first
// submit until the store records the last task completed. The systems
// alternate (floor, apcore, peer, floor, ...), each on empty tables (a
// fresh schema) or an empty Redis database, and the median of the runs is
// reported.
//
// The backlog rows (pg-backlog1, pg-backlog3, redis-backlog1,
// redis-backlog3) measure the drain of a queue: -backlog resumable tasks
// (100,000 by default; river jobs, asynq tasks) inserted while no worker
// runs, then worked off by 1 or 3 managers (river clients, asynq servers),
// each with -workers workers and a pool of its own; the clock runs from
// their start until the store records the last task completed. The three
// managers run in this process: the machine's cores are shared either way,
// and one process counts every system's round trips, CPU and connection
// waits with the same tracer; each manager has its own pool, lease and
// workers, as it would in a process of its own. The floor has no backlog
// form.
//
// Every system gets the same connection pools (-pool, 20 by default):
// river's pgxpool MaxConns, apcore's sql.DB MaxOpenConns and MaxIdleConns,
// go-redis's PoolSize for apcore and asynq; -pool 0 leaves each library's
// default. The waits for a connection are counted (database/sql's
// WaitCount and WaitDuration, pgxpool's EmptyAcquireCount and
// EmptyAcquireWaitTime, go-redis's WaitCount and WaitDurationNs).
//
// The floor is the least a durable task can cost on the same server: three
// single-row writes per task, each its own round trip, none batched (insert
// at submit, conditional update to running, conditional update to
// completed; on Redis one small script per step), by the same shape of
// submitters and workers.
//
// For each system it prints tasks/s; round trips per task and statements
// or commands per task as the client sent them (a pgx tracer, a go-redis
// hook); statements (pg_stat_statements, when the server loads it) or
// commands (INFO commandstats, commands run by scripts included) per task as
// the server counted them; and the CPU per task of this process (getrusage)
// and of the server's processes (/proc). Then the ratios apcore/peer,
// apcore/floor and peer/floor of the rates, and the same table in markdown.
//
// The peers poll for work: river fetches at most every FetchCooldown (100 ms
// by default, which with 100 workers caps it at about 1,000 jobs/s) and
// asynq's processor sleeps about TaskCheckInterval (1 s by default) each
// time it finds its queue empty. apcore hands a task to a worker in
// process, without polling. So that the table compares the systems' work
// rather than their idle sleeps, the peers run as river's own benchmark
// configures river: FetchCooldown 2 ms, FetchPollInterval 20 ms, and asynq
// with TaskCheckInterval 2 ms; -peer-defaults runs them as shipped.
//
// Start the servers and run it with scripts/bench-durable.sh, or:
//
//	cd benchmarks && go run ./durable -pg postgres://... -redis redis://...
//	go run ./durable -n 1000 -runs 1 -rows pg1,redis1   # a quick look
//	go run ./durable -rows pg-backlog1,pg-backlog3 -backlog 20000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

func main() {
	e := &env{log: quietLogger()}
	flag.IntVar(&e.n, "n", 10_000, "tasks per run")
	runs := flag.Int("runs", 3, "runs of each system per row; the median is reported")
	rows := flag.String("rows", "pg1,redis1,pg16,redis16,pg1-resumable,pg-backlog1,pg-backlog3,redis-backlog1,redis-backlog3", "rows to measure, from: "+workloadNames())
	flag.StringVar(&e.pgDSN, "pg", os.Getenv("APCORE_TEST_POSTGRES"), "PostgreSQL URL (default $APCORE_TEST_POSTGRES)")
	flag.StringVar(&e.redisURL, "redis", os.Getenv("APCORE_TEST_REDIS"), "Redis URL (default $APCORE_TEST_REDIS)")
	flag.IntVar(&e.workers, "workers", 100, "tasks run at once by each system (by each manager, in a backlog row)")
	flag.IntVar(&e.pool, "pool", 20, "connections in every pool of every system (river's pgxpool MaxConns, apcore's sql.DB MaxOpenConns and MaxIdleConns, go-redis PoolSize); 0: each library's default")
	flag.IntVar(&e.backlog, "backlog", 100_000, "tasks a backlog row inserts before its managers start")
	flag.DurationVar(&e.timeout, "timeout", 3*time.Minute, "bound on one run")
	flag.BoolVar(&e.verbose, "v", false, "after each run, list the statements or commands the server ran, per task")
	flag.DurationVar(&e.riverFetchCooldown, "river-fetch-cooldown", 2*time.Millisecond, "river's FetchCooldown (0: river's default, 100ms)")
	flag.DurationVar(&e.riverFetchPoll, "river-fetch-poll", 20*time.Millisecond, "river's FetchPollInterval (0: river's default, 1s)")
	flag.DurationVar(&e.asynqCheck, "asynq-check-interval", 2*time.Millisecond, "asynq's TaskCheckInterval (0: asynq's default, 1s)")
	flag.StringVar(&e.cpuProfile, "cpuprofile", "", "write a CPU profile of this process over each measured run of -profile-system, to <this>-<row>-<run>.pprof")
	flag.StringVar(&e.profSystem, "profile-system", "apcore", "the system -cpuprofile profiles: floor, apcore, river or asynq")
	peerDefaults := flag.Bool("peer-defaults", false, "run river and asynq with their own defaults for the three settings above, which cap them (see the doc comment)")
	flag.DurationVar(&e.asynqPoll, "asynq-poll", 2*time.Millisecond, "how often the harness counts asynq's completed set")
	flag.Parse()
	if *peerDefaults {
		e.riverFetchCooldown, e.riverFetchPoll, e.asynqCheck = 0, 0, 0
	}

	var picked []workload
	for _, name := range strings.Split(*rows, ",") {
		i := slices.IndexFunc(allWorkloads, func(w workload) bool { return w.name == strings.TrimSpace(name) })
		if i < 0 {
			fatalf("-rows: no row %q (rows: %s)", name, workloadNames())
		}
		picked = append(picked, allWorkloads[i])
	}
	if e.n < 1 || *runs < 1 || e.workers < 1 || e.backlog < 1 || e.pool < 0 {
		fatalf("-n, -runs, -workers and -backlog must be at least 1, -pool at least 0")
	}

	ctx := context.Background()
	needPG := slices.ContainsFunc(picked, func(w workload) bool { return w.backend == "pg" })
	needRedis := slices.ContainsFunc(picked, func(w workload) bool { return w.backend == "redis" })
	if err := e.connect(ctx, needPG, needRedis); err != nil {
		fatalf("%v", err)
	}
	defer e.close()

	logf("durable: %s, GOMAXPROCS=%d, n=%d, backlog=%d, %d workers, pools of %s, %d runs per system and row\n",
		runtime.Version(), runtime.GOMAXPROCS(0), e.n, e.backlog, e.workers, poolName(e.pool), *runs)
	if needPG {
		logf("  PostgreSQL: server CPU %s, server statements %s\n",
			yes(e.postmaster != 0, "from /proc", "unknown (not on this machine)"),
			yes(e.pgss, "from pg_stat_statements", "unknown (pg_stat_statements not loaded)"))
	}
	if needRedis {
		logf("  Redis: server CPU %s\n", yes(e.redisPID != 0, "from /proc", "unknown (not on this machine)"))
	}
	logf("  river: FetchCooldown %s, FetchPollInterval %s; asynq: TaskCheckInterval %s\n",
		orDefault(e.riverFetchCooldown, "100ms"), orDefault(e.riverFetchPoll, "1s"), orDefault(e.asynqCheck, "1s"))

	began, loadBefore := time.Now(), loadAverage()
	var results []rowResult
	for _, w := range picked {
		r := rowResult{w: w, n: e.tasks(w), samples: map[string][]sample{}, unsupported: map[string]string{}}
		systems, n := w.systems(), e.tasks(w)
		for run := 1; run <= *runs; run++ {
			for _, sys := range systems {
				if _, skip := r.unsupported[sys]; skip {
					continue
				}
				s, err := e.runOnce(ctx, w, sys)
				switch {
				case isUnsupported(err):
					r.unsupported[sys] = err.Error()
					logf("  [%6.1fs] %-17s run %d/%d %-6s %v\n", time.Since(began).Seconds(), w.name, run, *runs, sys, err)
					continue
				case err != nil:
					fatalf("%s, %s, run %d: %v", w.name, sys, run, err)
				}
				r.samples[sys] = append(r.samples[sys], s)
				logf("  [%6.1fs] %-17s run %d/%d %-6s %8.0f tasks/s  %5.2f round trips/task  %6.1f µs client CPU/task  %s µs server CPU/task  %d connection waits (%.0f ms)\n",
					time.Since(began).Seconds(), w.name, run, *runs, sys, float64(n)/s.elapsed.Seconds(),
					float64(s.roundTrips)/float64(n), perTaskMicros(s.clientCPU, n), fmtServerCPU(s.serverCPU, n),
					s.waits.count, float64(s.waits.dur.Microseconds())/1e3)
				if s.detail != "" {
					logf("%s", s.detail)
				}
			}
		}
		results = append(results, r)
	}
	printTables(os.Stdout, e, results)
	fmt.Printf("Load average (1, 5, 15 min) at the start: %s; at the end: %s; %d cores; %.0f s in all.\n",
		loadBefore, loadAverage(), runtime.NumCPU(), time.Since(began).Seconds())
}

// loadAverage reads the machine's load averages, "?" when it cannot.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// workloadNames lists the rows -rows accepts.
func workloadNames() string {
	var names []string
	for _, w := range allWorkloads {
		names = append(names, w.name)
	}
	return strings.Join(names, ",")
}

// yes picks a or b.
func yes(ok bool, a, b string) string {
	if ok {
		return a
	}
	return b
}

// poolName says how big the pools are.
func poolName(n int) string {
	if n == 0 {
		return "each library's default size"
	}
	return fmt.Sprintf("%d connections", n)
}

// orDefault prints d, or the library's default when d is 0.
func orDefault(d time.Duration, def string) string {
	if d == 0 {
		return def + " (default)"
	}
	return d.String()
}

// fatalf reports and exits.
func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "durable: "+format+"\n", a...)
	os.Exit(1)
}
