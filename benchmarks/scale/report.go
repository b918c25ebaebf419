package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// The goals of issue #17.
const (
	maxRatio       = 2.0
	minReapRate    = 50_000 // records/s, on PostgreSQL and Redis
	maxRedisBlock  = 50 * time.Millisecond
	reapGoalStores = "postgres redis"
)

// row is one line of the table.
type row struct {
	store, figure string
	small, large  string
	ratio         string
	goal, met     string
}

// ratioCell prints large/small and whether it is within maxRatio.
func ratioCell(small, large float64) (string, bool) {
	if small <= 0 {
		return "-", large <= 0
	}
	q := large / small
	return fmt.Sprintf("%.2f", q), q <= maxRatio
}

// mark prints whether a goal is met.
func mark(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// rows are the table's lines for a report.
func rows(rep *report) []row {
	var out []row
	for _, s := range rep.stores {
		if len(s.sizes) < 2 {
			continue
		}
		a, b := s.sizes[0], s.sizes[1]
		add := func(figure, small, large string, x, y float64) {
			q, ok := ratioCell(x, y)
			out = append(out, row{s.name, figure, small, large, q, "ratio ≤ 2", mark(ok)})
		}
		add("first dashboard page, time", fmtDur(a.pageTime), fmtDur(b.pageTime), a.pageTime.Seconds(), b.pageTime.Seconds())
		add("first dashboard page, bytes", byteSize(a.pageBytes), byteSize(b.pageBytes), float64(a.pageBytes), float64(b.pageBytes))
		add("first dashboard page, bytes of its API calls", byteSize(a.pageAPIBytes), byteSize(b.pageAPIBytes), float64(a.pageAPIBytes), float64(b.pageAPIBytes))
		for i := range a.lists {
			add(a.lists[i].name, fmtDur(a.lists[i].took), fmtDur(b.lists[i].took), a.lists[i].took.Seconds(), b.lists[i].took.Seconds())
		}
		add("Submit p99, event client connected", fmtDur(a.submitP99), fmtDur(b.submitP99), a.submitP99.Seconds(), b.submitP99.Seconds())
		// Reap: the rate, and the ratio of the time per record.
		rateA, rateB := float64(a.reaped)/a.reap.Seconds(), float64(b.reaped)/b.reap.Seconds()
		q, ok := ratioCell(1/rateA, 1/rateB)
		goal := "ratio ≤ 2"
		if strings.Contains(reapGoalStores, s.name) {
			goal = "≥ 50,000/s, ratio ≤ 2"
			ok = ok && rateA >= minReapRate && rateB >= minReapRate
		}
		out = append(out, row{s.name, "Reap, records/s (ratio: time per record)", fmtRate(rateA), fmtRate(rateB), q, goal, mark(ok)})
		if a.slowlog {
			q, _ := ratioCell(a.slowest.Seconds(), b.slowest.Seconds())
			out = append(out, row{s.name, "longest Redis command (SLOWLOG)", fmtSlow(a), fmtSlow(b), q, "≤ 50 ms",
				mark(a.slowest <= maxRedisBlock && b.slowest <= maxRedisBlock)})
		}
	}
	if len(rep.drains) == 2 {
		a, b := rep.drains[0], rep.drains[1]
		q, ok := ratioCell(a.perTask().Seconds(), b.perTask().Seconds())
		lower := func(d drainResult) string {
			if d.timedOut {
				return "> " + fmtDur(d.perTask())
			}
			return fmtDur(d.perTask())
		}
		out = append(out, row{"memory", fmt.Sprintf("backlog drain per task (backlogs of %s and %s)", count(a.n), count(b.n)),
			lower(a), lower(b), q, "ratio ≤ 2 (linear)", mark(ok && !a.timedOut && !b.timedOut)})
	}
	return out
}

// printTables prints the table as text, then in markdown, then the notes.
func printTables(out io.Writer, rep *report) {
	c := rep.cfg
	header := []string{"store", "figure", "at " + count(c.sizes[0]), "at " + count(c.sizes[1]), fmt.Sprintf("%s/%s", count(c.sizes[1]), count(c.sizes[0])), "goal", "met"}
	list := func(r row) []string { return []string{r.store, r.figure, r.small, r.large, r.ratio, r.goal, r.met} }
	all := rows(rep)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(header, "\t")+"\t")
	for _, r := range all {
		fmt.Fprintln(w, strings.Join(list(r), "\t")+"\t")
	}
	_ = w.Flush()

	fmt.Fprintln(out)
	fmt.Fprintln(out, "| "+strings.Join(header, " | ")+" |")
	fmt.Fprintln(out, "|---|---|--:|--:|--:|---|---|")
	for _, r := range all {
		fmt.Fprintln(out, "| "+strings.Join(list(r), " | ")+" |")
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Medians: first page of %d loads, ListPage of %d calls, Submit p99 of %d rounds of %d submits; Reap and the drains once each.\n", c.runs, c.calls, c.rounds, c.submits)
	fmt.Fprintln(out, "The two stores of each kind are filled first, then measured in turn, call by call or run by run.")
	fmt.Fprintln(out, "First page: GET /, its script and style sheet, "+strings.Join(dashboardAPI, ", ")+", one after the other, on a fresh handler.")
	if len(rep.drains) == 2 {
		fmt.Fprintf(out, "Drain: %d managers of %d slots each drain resumable no-op tasks queued in a shared MemoryStore.\n", drainers, drainSlots)
	}
	for _, s := range rep.stores {
		if s.err != nil {
			fmt.Fprintf(out, "%s: failed: %v\n", s.name, s.err)
		}
		for _, z := range s.sizes {
			fmt.Fprintf(out, "%s, %s records: filled in %.1f s; Submit p50 %s; %d events read; Reap %d records in %s",
				s.name, count(z.n), z.fill.Seconds(), fmtDur(z.submitP50), z.events, z.reaped, fmtDur(z.reap))
			switch {
			case z.slowlog && z.slowest > 0:
				fmt.Fprintf(out, "; longest command %s (%s), %s during the fill", fmtDur(z.slowest), z.slowestCmd, fmtSlowest(z.fillSlowest))
			case z.slowlog:
				fmt.Fprintf(out, "; no command took 1 ms, %s during the fill", fmtSlowest(z.fillSlowest))
			}
			fmt.Fprintln(out, ".")
		}
	}
	if rep.drainE != nil {
		fmt.Fprintf(out, "memory drain: failed: %v\n", rep.drainE)
	}
}

// fmtDur prints d with three significant digits or so.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < 10*time.Microsecond:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// fmtSlow prints the longest command after the fill.
func fmtSlow(r sizeResult) string { return fmtSlowest(r.slowest) }

// fmtSlowest prints a longest command, "< 1 ms" when none was logged.
func fmtSlowest(d time.Duration) string {
	if d == 0 {
		return "< 1 ms"
	}
	return fmtDur(d)
}

// fmtRate prints a rate per second.
func fmtRate(x float64) string { return thousands(int(x+0.5)) + "/s" }

// count prints n with thousands separators, or as 10k, 1M when round.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000 && n%1_000 == 0 && n < 1_000_000:
		return fmt.Sprintf("%dk", n/1_000)
	}
	return thousands(n)
}

// thousands prints n with thousands separators.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
