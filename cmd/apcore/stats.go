package main

import (
	"context"
	"fmt"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/spf13/cobra"
)

// states are the task states, in the order stats prints them.
var states = []apcore.TaskStatus{
	apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled,
}

// stats is what apcore stats reports.
type stats struct {
	counts  map[apcore.TaskStatus]int
	total   int
	oldest  *apcore.TaskInfo // the oldest pending task, if any
	age     time.Duration    // its age
	modules map[string]map[apcore.TaskStatus]int
	scanned int  // records read for modules
	whole   bool // the scan read every record
}

// newStats is "apcore stats".
func newStats(g *globals) *cobra.Command {
	var scan int
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count tasks by state and by module; the oldest pending task's age",
		Long: fmt.Sprintf(`stats prints how many tasks the store holds in each state (the store's
counts: a few cheap calls whatever it holds), the oldest pending task and how
long ago it was submitted, and counts by module and state. Stores do not
count by module, so those come from reading the newest --scan records
(default %d), a page of %d at a time: stats says how many it read and
whether that was every record.`, defaultScan, apcore.MaxPageLimit),
		Args: func(cmd *cobra.Command, args []string) error {
			if err := noArgs(cmd, args); err != nil {
				return err
			}
			return intRange(cmd.Flags(), "scan", 1, maxScan)
		},
	}
	cmd.Flags().IntVar(&scan, "scan", defaultScan, "count by module over at most this many of the newest records")
	cmd.RunE = action(g, false, func(ctx context.Context, cmd *cobra.Command, o *opened, _ []string) error {
		st, err := collectStats(ctx, o, scan)
		if err != nil {
			return err
		}
		if g.json {
			return writeStats(cmd.OutOrStdout(), st)
		}
		return printStats(cmd.OutOrStdout(), o.describe(), st)
	})
	return cmd
}

// collectStats counts by state (Counter), finds the oldest pending task
// (a page of one), and counts the newest scan records by module.
func collectStats(ctx context.Context, o *opened, scan int) (stats, error) {
	st := stats{counts: map[apcore.TaskStatus]int{}, modules: map[string]map[apcore.TaskStatus]int{}}
	for _, s := range states {
		n, err := o.Count(ctx, s)
		if err != nil {
			return st, err
		}
		st.counts[s] = n
	}
	total, err := o.Count(ctx)
	if err != nil {
		return st, err
	}
	st.total = total
	page, err := o.ListPage(ctx, apcore.ListOptions{Status: apcore.StatusPending, Limit: 1})
	if err != nil {
		return st, err
	}
	if len(page.Tasks) > 0 {
		st.oldest = &page.Tasks[0]
		st.age = max(0, time.Since(st.oldest.SubmittedAt))
	}
	after := ""
	for st.scanned < scan {
		page, err := o.ListPage(ctx, apcore.ListOptions{After: after, Limit: min(apcore.MaxPageLimit, scan-st.scanned), Newest: true})
		if err != nil {
			return st, err
		}
		for _, t := range page.Tasks {
			m := st.modules[t.ModuleID]
			if m == nil {
				m = map[apcore.TaskStatus]int{}
				st.modules[t.ModuleID] = m
			}
			m[t.Status]++
		}
		st.scanned += len(page.Tasks)
		if page.Next == "" || len(page.Tasks) == 0 {
			st.whole = true
			break
		}
		after = page.Next
	}
	return st, nil
}
