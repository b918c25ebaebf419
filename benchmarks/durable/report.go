package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// rowResult holds a row's samples per system.
type rowResult struct {
	w           workload
	n           int // tasks per run
	samples     map[string][]sample
	unsupported map[string]string
}

// figures are the medians of one system's runs in one row, per task.
type figures struct {
	ok          bool
	rate        float64 // tasks/s
	roundTrips  float64
	statements  float64
	serverCalls float64 // -1: unknown
	clientCPU   float64 // µs
	serverCPU   float64 // µs, -1: unknown
	waits       float64 // waits for a pool connection per task
	waitMicros  float64 // µs waited for a pool connection per task
}

// median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// perTaskMicros is d per task, in µs.
func perTaskMicros(d time.Duration, n int) float64 {
	return float64(d.Nanoseconds()) / 1e3 / float64(n)
}

// fmtServerCPU prints the server's CPU per task, or "-".
func fmtServerCPU(d time.Duration, n int) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", perTaskMicros(d, n))
}

// summarize takes the median of each figure over the runs of sys.
func (r rowResult) summarize(sys string, n int) figures {
	ss := r.samples[sys]
	if len(ss) == 0 {
		return figures{}
	}
	pick := func(f func(sample) float64) float64 {
		var xs []float64
		for _, s := range ss {
			xs = append(xs, f(s))
		}
		return median(xs)
	}
	fn := float64(n)
	f := figures{
		ok:          true,
		rate:        pick(func(s sample) float64 { return fn / s.elapsed.Seconds() }),
		roundTrips:  pick(func(s sample) float64 { return float64(s.roundTrips) / fn }),
		statements:  pick(func(s sample) float64 { return float64(s.statements) / fn }),
		serverCalls: -1,
		clientCPU:   pick(func(s sample) float64 { return perTaskMicros(s.clientCPU, n) }),
		serverCPU:   -1,
		waits:       pick(func(s sample) float64 { return float64(s.waits.count) / fn }),
		waitMicros:  pick(func(s sample) float64 { return perTaskMicros(s.waits.dur, n) }),
	}
	if ss[0].serverCalls >= 0 {
		f.serverCalls = pick(func(s sample) float64 { return float64(s.serverCalls) / fn })
	}
	if ss[0].serverCPU >= 0 {
		f.serverCPU = pick(func(s sample) float64 { return perTaskMicros(s.serverCPU, n) })
	}
	return f
}

// cells are the printed cells of one row.
type cells struct {
	workload, peer                 string
	apcore, peerRate, floor        string
	apPeer, apFloor, peerFloor     string
	roundTrips, statements, server string
	clientCPU, serverCPU           string
	waits                          string
}

// rowCells formats a row.
func rowCells(r rowResult) cells {
	n := r.n
	a, p, f := r.summarize("apcore", n), r.summarize(r.w.peer(), n), r.summarize("floor", n)
	rate := func(x figures) string {
		if !x.ok {
			return "n/a"
		}
		return fmt.Sprintf("%.0f", x.rate)
	}
	ratio := func(x, y figures) string {
		if !x.ok || !y.ok {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", x.rate/y.rate)
	}
	three := func(get func(figures) float64, format string) string {
		var parts []string
		for _, x := range []figures{a, p, f} {
			switch v := get(x); {
			case !x.ok:
				parts = append(parts, "n/a")
			case v < 0:
				parts = append(parts, "-")
			default:
				parts = append(parts, fmt.Sprintf(format, v))
			}
		}
		return strings.Join(parts, " / ")
	}
	return cells{
		workload:   r.w.describe(),
		peer:       r.w.peer(),
		apcore:     rate(a),
		peerRate:   rate(p),
		floor:      rate(f),
		apPeer:     ratio(a, p),
		apFloor:    ratio(a, f),
		peerFloor:  ratio(p, f),
		roundTrips: three(func(x figures) float64 { return x.roundTrips }, "%.2f"),
		statements: three(func(x figures) float64 { return x.statements }, "%.2f"),
		server:     three(func(x figures) float64 { return x.serverCalls }, "%.2f"),
		clientCPU:  three(func(x figures) float64 { return x.clientCPU }, "%.0f"),
		serverCPU:  three(func(x figures) float64 { return x.serverCPU }, "%.0f"),
		waits: three(func(x figures) float64 { return x.waits }, "%.3f") + " (" +
			three(func(x figures) float64 { return x.waitMicros }, "%.0f") + " µs)",
	}
}

var header = []string{
	"workload", "peer", "apcore tasks/s", "peer tasks/s", "floor tasks/s",
	"apcore/peer", "apcore/floor", "peer/floor",
	"round trips/task (apcore / peer / floor)",
	"client statements/task",
	"server statements/task",
	"client µs CPU/task",
	"server µs CPU/task",
	"connection waits/task (µs waited/task)",
}

func (c cells) list() []string {
	return []string{c.workload, c.peer, c.apcore, c.peerRate, c.floor, c.apPeer, c.apFloor, c.peerFloor,
		c.roundTrips, c.statements, c.server, c.clientCPU, c.serverCPU, c.waits}
}

// printTables prints the table as text, then in markdown, then the notes.
func printTables(out io.Writer, e *env, results []rowResult) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(header, "\t")+"\t")
	for _, r := range results {
		fmt.Fprintln(w, strings.Join(rowCells(r).list(), "\t")+"\t")
	}
	_ = w.Flush()

	fmt.Fprintln(out)
	fmt.Fprintln(out, "| "+strings.Join(header, " | ")+" |")
	fmt.Fprintln(out, "|"+strings.Repeat("---|", len(header)))
	for _, r := range results {
		fmt.Fprintln(out, "| "+strings.Join(rowCells(r).list(), " | ")+" |")
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "%d tasks per run (a backlog row: %d, inserted before its managers start; no floor), %d workers (per manager), pools of %s, median of the runs. Figures in threes are apcore / peer / floor.\n",
		e.n, e.backlog, e.workers, poolName(e.pool))
	fmt.Fprintln(out, "Connection waits: acquires that found the pool empty (database/sql WaitCount, pgxpool EmptyAcquireCount, go-redis WaitCount) and the time they waited.")
	fmt.Fprintln(out, "Client: as this process sent them (pgx tracer, go-redis hook); a pipeline, batch or prepare is one round trip.")
	fmt.Fprintln(out, "Server: statements from pg_stat_statements (top level), Redis commands from INFO commandstats (those run by scripts included).")
	fmt.Fprintf(out, "river: FetchCooldown %s, FetchPollInterval %s; asynq: TaskCheckInterval %s.\n",
		orDefault(e.riverFetchCooldown, "100ms"), orDefault(e.riverFetchPoll, "1s"), orDefault(e.asynqCheck, "1s"))
	for _, r := range results {
		for sys, why := range r.unsupported {
			fmt.Fprintf(out, "%s, %s: %s\n", r.w.name, sys, why)
		}
	}
}
