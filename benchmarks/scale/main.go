// Command scale measures whether apcore's costs follow the work asked
// rather than the records kept (issue #17): each store is filled with
// 10,000 and with 1,000,000 records in its own layout, the same calls are
// timed on both, side by side in one run, and each figure is reported with
// the ratio of its value at 1M to its value at 10k. The goal is a ratio of
// at most 2 for every figure, Reap at 50,000 records/s or more on
// PostgreSQL and Redis, and no Redis command over 50 ms.
//
// The stores: the memory store (filled with Save), sqlstore on SQLite (a
// file in a temporary folder) and on PostgreSQL (one INSERT ... SELECT into
// the store's table, then ANALYZE, or VACUUM ANALYZE on PostgreSQL), and
// redisstore (Save from 64 goroutines, the scripts that run at once sent in
// one pipeline). The records are mostly completed, with a small result,
// spread over two days; one in 200 failed, one in 200 cancelled, and the
// newest 200 pending, held by no manager.
//
// Both stores of a kind are filled first (a schema, a file or a key prefix
// each), each gets a manager (16 slots), and then every measurement
// alternates between the two, call by call or run by run, so that the
// machine's other load falls on both alike:
//
//   - the dashboard's first page: a fresh apcorehttp.NewHandler (nothing
//     cached) served by httptest; GET /, the script and style sheet it
//     links, and the JSON API calls the page makes when it loads, one after
//     the other; total time and bytes, the median of -runs loads;
//   - ListPage of 100: oldest first, newest first, status completed, status
//     pending; the median of -calls calls each;
//   - Submit's median and 99th percentile while a client reads GET
//     /api/events: -rounds rounds of -submits no-op tasks, one after the
//     other, 500 a second (so that they run beside the manager's and the
//     dashboard's periodic work, as under a steady load); the medians of
//     the rounds' figures;
//   - Reap of every expired record (all but the pending ones), in records
//     per second; on Redis, the longest command in SLOWLOG about each store
//     (by its key prefix) from after the fills to the end of the Reaps
//     (slowlog-log-slower-than 1000 µs), and the longest of each fill.
//
// And on the memory store alone, the drain of a backlog: -drain resumable
// tasks (100,000 and 300,000) are queued in a shared MemoryStore by a
// manager without a slot, then two managers of 16 slots drain them; the
// time per task at both sizes shows whether the drain is linear.
//
// Start the servers and run it with scripts/bench-scale.sh, or:
//
//	cd benchmarks && go run ./scale -pg postgres://... -redis redis://...
//	go run ./scale -quick            # 1k and 10k records, a few seconds
//	go run ./scale -stores memory    # the memory store only
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/apcore-go/apcore/sqlstore"
)

// config is what a run measures and how.
type config struct {
	sizes        [2]int // records in the small and the large store
	drains       [2]int // the two backlogs drained
	runs         int    // first page loads per store
	calls        int    // ListPage calls per kind
	submits      int    // timed submits per store and round
	rounds       int    // rounds of submits; the medians of their p50 and p99 are kept
	drainTimeout time.Duration
	stores       []string
	pgDSN        string
	redisURL     string
	sqliteDir    string

	log      *slog.Logger // the managers' logger
	progress io.Writer    // where the figures go as they are measured
}

// logf writes a progress line.
func (c *config) logf(format string, a ...any) { fmt.Fprintf(c.progress, format, a...) }

// quickConfig is -quick: small sizes, a few seconds on the memory store.
func quickConfig() config {
	return config{
		sizes: [2]int{1_000, 10_000}, drains: [2]int{2_000, 6_000},
		runs: 3, calls: 5, submits: 300, rounds: 2, drainTimeout: time.Minute,
		stores: []string{"memory", "sqlite", "postgres", "redis"},
		log:    quietLogger(), progress: os.Stderr,
	}
}

// fullConfig is the default: 10k and 1M records.
func fullConfig() config {
	c := quickConfig()
	c.sizes, c.drains = [2]int{10_000, 1_000_000}, [2]int{100_000, 300_000}
	c.calls, c.submits, c.rounds, c.drainTimeout = 21, 1_000, 3, 10*time.Minute
	return c
}

func main() {
	quick := flag.Bool("quick", false, "small sizes (1k and 10k records, backlogs of 2k and 6k): a few seconds")
	sizes := flag.String("sizes", "", "the two store sizes, small,large (default 10000,1000000; -quick 1000,10000)")
	drains := flag.String("drain", "", "the two backlogs the memory store drains (default 100000,300000; -quick 2000,6000; 0,0: none)")
	stores := flag.String("stores", "memory,sqlite,postgres,redis", "stores to measure (postgres and redis are skipped without a server)")
	runs := flag.Int("runs", 0, "first page loads per store; the median is reported (default 3)")
	calls := flag.Int("calls", 0, "ListPage calls of each kind per store; the median is reported (default 21; -quick 5)")
	submits := flag.Int("submits", 0, "timed submits per store and round (default 1000; -quick 300)")
	rounds := flag.Int("rounds", 0, "rounds of submits per store; the medians of their p50 and p99 are reported (default 3; -quick 2)")
	drainTimeout := flag.Duration("drain-timeout", 0, "bound on one drain (default 10m)")
	pg := flag.String("pg", os.Getenv("APCORE_TEST_POSTGRES"), "PostgreSQL URL (default $APCORE_TEST_POSTGRES)")
	rds := flag.String("redis", os.Getenv("APCORE_TEST_REDIS"), "Redis URL (default $APCORE_TEST_REDIS)")
	flag.Parse()

	c := fullConfig()
	if *quick {
		c = quickConfig()
	}
	var err error
	if *sizes != "" {
		if c.sizes, err = pair(*sizes, 1); err != nil {
			fatalf("-sizes: %v", err)
		}
	}
	if *drains != "" {
		if c.drains, err = pair(*drains, 0); err != nil {
			fatalf("-drain: %v", err)
		}
	}
	for _, f := range []struct {
		v   int
		dst *int
	}{{*runs, &c.runs}, {*calls, &c.calls}, {*submits, &c.submits}, {*rounds, &c.rounds}} {
		if f.v < 0 {
			fatalf("-runs, -calls, -submits and -rounds must be at least 1")
		}
		if f.v > 0 {
			*f.dst = f.v
		}
	}
	if *drainTimeout > 0 {
		c.drainTimeout = *drainTimeout
	}
	c.pgDSN, c.redisURL = *pg, *rds
	c.stores = nil
	for _, s := range strings.Split(*stores, ",") {
		switch s = strings.TrimSpace(s); {
		case s == "postgres" && c.pgDSN == "", s == "redis" && c.redisURL == "":
			c.logf("scale: no %s server (-pg, -redis or $APCORE_TEST_POSTGRES, $APCORE_TEST_REDIS; scripts/bench-scale.sh starts both): skipped\n", s)
		case s == "memory", s == "sqlite", s == "postgres", s == "redis":
			c.stores = append(c.stores, s)
		case s != "":
			fatalf("-stores: no store %q (memory, sqlite, postgres, redis)", s)
		}
	}
	dir, err := os.MkdirTemp("", "apcore-scale-")
	if err != nil {
		fatalf("%v", err)
	}
	c.sqliteDir = dir
	// An interrupt ends the measurements through their context, so that the
	// stores are still dropped and the folder removed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c.logf("scale: %s, GOMAXPROCS=%d, %d and %d records, load average %s\n", runtime.Version(), runtime.GOMAXPROCS(0), c.sizes[0], c.sizes[1], loadAverage())
	began, loadBefore := time.Now(), loadAverage()
	rep := run(ctx, &c)
	if err := os.RemoveAll(dir); err != nil {
		c.logf("scale: %v\n", err)
	}
	printTables(os.Stdout, rep)
	fmt.Printf("Load average (1, 5, 15 min) at the start: %s; at the end: %s; %d cores; %.0f s in all.\n",
		loadBefore, loadAverage(), runtime.NumCPU(), time.Since(began).Seconds())
	if rep.failed() {
		os.Exit(1)
	}
}

// storeResult is what was measured on one kind of store.
type storeResult struct {
	name  string
	sizes []sizeResult
	err   error
}

// report is a whole run.
type report struct {
	cfg    *config
	stores []storeResult
	drains []drainResult
	drainE error
}

// failed reports whether any measurement failed.
func (r *report) failed() bool {
	for _, s := range r.stores {
		if s.err != nil {
			return true
		}
	}
	return r.drainE != nil
}

// run measures every store of c at both sizes, side by side, then the
// memory store's drains. A store that fails is reported with its error, and the run goes
// on with the next.
func run(ctx context.Context, c *config) *report {
	rep := &report{cfg: c}
	for _, name := range c.stores {
		var b backend
		switch name {
		case "memory":
			b = memoryBackend{}
		case "sqlite":
			b = &sqlBackend{dialect: sqlstore.SQLite, dir: c.sqliteDir}
		case "postgres":
			pb := &sqlBackend{dialect: sqlstore.PostgreSQL, dsn: c.pgDSN}
			defer pb.shutdown()
			b = pb
		case "redis":
			rb := &redisBackend{url: c.redisURL}
			defer rb.shutdown()
			b = rb
		}
		sr := storeResult{name: name}
		res, err := c.measureStore(ctx, b)
		if err != nil {
			sr.err = fmt.Errorf("%s: %w", name, err)
			c.logf("scale: %v\n", sr.err)
		} else {
			sr.sizes = res[:]
		}
		rep.stores = append(rep.stores, sr)
	}
	if c.drains[0] > 0 && c.drains[1] > 0 {
		for _, n := range c.drains {
			d, err := c.measureDrain(ctx, n)
			if err != nil {
				rep.drainE = fmt.Errorf("drain of %d: %w", n, err)
				c.logf("scale: %v\n", rep.drainE)
				break
			}
			rep.drains = append(rep.drains, d)
		}
	}
	return rep
}

// pair parses "a,b" with a < b, both at least least.
func pair(s string, least int) ([2]int, error) {
	a, b, ok := strings.Cut(s, ",")
	x, err1 := strconv.Atoi(strings.TrimSpace(a))
	y, err2 := strconv.Atoi(strings.TrimSpace(b))
	switch {
	case !ok || err1 != nil || err2 != nil:
		return [2]int{}, fmt.Errorf("%q is not two numbers, small,large", s)
	case x == 0 && y == 0 && least == 0:
		return [2]int{}, nil
	case x < max(least, 1) || y <= x:
		return [2]int{}, fmt.Errorf("%q: want 0 < small < large", s)
	}
	return [2]int{x, y}, nil
}

// loadAverage reads the machine's load averages, "?" when it cannot.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// quietLogger logs warnings and errors to stderr: a store that fails shows.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// fatalf reports and exits.
func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "scale: "+format+"\n", a...)
	os.Exit(1)
}
