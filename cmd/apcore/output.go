package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/apcore-go/apcore"
)

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// writeList writes a page as {"tasks":[...],"next":"..."}: the dashboard's
// GET /api/tasks shape, "next" left out on the last page, and "scanned"
// (the records read) with --module.
func writeList(w io.Writer, l listing) error {
	out := struct {
		Tasks   []apcore.TaskInfo `json:"tasks"`
		Next    string            `json:"next,omitempty"`
		Scanned *int              `json:"scanned,omitempty"`
	}{Tasks: l.tasks, Next: l.next}
	if out.Tasks == nil {
		out.Tasks = []apcore.TaskInfo{}
	}
	if l.scanned >= 0 {
		out.Scanned = &l.scanned
	}
	return writeJSON(w, out)
}

// writeStats writes stats as JSON.
func writeStats(w io.Writer, st stats) error {
	counts := map[string]int{"total": st.total}
	for _, s := range states {
		counts[string(s)] = st.counts[s]
	}
	modules := map[string]map[string]int{}
	for m, c := range st.modules {
		mc := map[string]int{}
		total := 0
		for s, n := range c {
			mc[string(s)] = n
			total += n
		}
		mc["total"] = total
		modules[m] = mc
	}
	type oldest struct {
		Task       apcore.TaskInfo `json:"task"`
		AgeSeconds float64         `json:"age_seconds"`
	}
	out := struct {
		Counts        map[string]int            `json:"counts"`
		OldestPending *oldest                   `json:"oldest_pending"`
		Modules       map[string]map[string]int `json:"modules"`
		Scanned       int                       `json:"scanned"`
		ScannedAll    bool                      `json:"scanned_all"`
	}{Counts: counts, Modules: modules, Scanned: st.scanned, ScannedAll: st.whole}
	if st.oldest != nil {
		out.OldestPending = &oldest{Task: *st.oldest, AgeSeconds: st.age.Seconds()}
	}
	return writeJSON(w, out)
}

// printList writes a page as a table, then how to carry on.
func printList(w io.Writer, l listing, module string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(l.tasks) == 0 {
		fmt.Fprintln(tw, "no tasks")
	} else {
		fmt.Fprintln(tw, "TASK ID\tMODULE\tSTATUS\tSUBMITTED\tRAN\tRETRIES\tPROGRESS\tERROR")
		for i := range l.tasks {
			t := &l.tasks[i]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", cell(t.TaskID), cell(t.ModuleID), t.Status,
				stamp(t.SubmittedAt), ran(t), t.RetryCount, t.MaxRetries, progress(t), short(errorText(t), 60))
		}
	}
	if l.scanned >= 0 {
		why := "the end of the store"
		if l.budget {
			why = "--scan's bound"
		} else if l.next != "" {
			why = "--limit"
		}
		fmt.Fprintf(tw, "\n%d of module %s, from %d records read (stopped at %s)\n", len(l.tasks), cell(module), l.scanned, why)
	}
	if l.next != "" {
		fmt.Fprintf(tw, "next page: --after %s\n", l.next)
	}
	return tw.Flush()
}

// printRecord writes one record, a field a line.
func printRecord(w io.Writer, t apcore.TaskInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("task_id", cell(t.TaskID))
	row("module_id", cell(t.ModuleID))
	row("status", string(t.Status))
	row("submitted_at", stamp(t.SubmittedAt))
	row("started_at", stamp(t.StartedAt))
	row("completed_at", stamp(t.CompletedAt))
	row("ran", ran(&t))
	row("retries", fmt.Sprintf("%d of %d", t.RetryCount, t.MaxRetries))
	if t.RunAt != nil {
		row("run_at", stamp(*t.RunAt))
	}
	if t.UniqueKey != "" {
		row("unique_key", cell(t.UniqueKey))
	}
	if t.Priority != 0 {
		row("priority", strconv.Itoa(t.Priority))
	}
	if t.Progress != 0 || t.ProgressMessage != "" {
		row("progress", progress(&t)+" "+cell(t.ProgressMessage))
	}
	if t.ErrorCode != "" {
		row("error_code", cell(string(t.ErrorCode)))
	}
	if t.Error != "" {
		row("error", cell(t.Error))
	}
	if t.Status == apcore.StatusCompleted {
		b, err := json.Marshal(t.Result)
		if err != nil {
			return err
		}
		row("result", string(b))
	}
	return tw.Flush()
}

// printStats writes stats for people.
func printStats(w io.Writer, store string, st stats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "store\t%s\n", store)
	for _, s := range states {
		line := fmt.Sprintf("%s\t%d", s, st.counts[s])
		if s == apcore.StatusPending && st.oldest != nil {
			line += fmt.Sprintf("\toldest %s ago (%s, %s)", st.age.Round(time.Second), cell(st.oldest.TaskID), cell(st.oldest.ModuleID))
		}
		fmt.Fprintln(tw, line)
	}
	fmt.Fprintf(tw, "total\t%d\n", st.total)
	if err := tw.Flush(); err != nil {
		return err
	}
	scope := fmt.Sprintf("every record (%d)", st.scanned)
	if !st.whole {
		scope = fmt.Sprintf("the newest %d records only (--scan)", st.scanned)
	}
	fmt.Fprintf(w, "\nby module, over %s:\n", scope)
	if len(st.modules) == 0 {
		_, err := fmt.Fprintln(w, "no tasks")
		return err
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "MODULE\t")
	for _, s := range states {
		fmt.Fprintf(tw, "%s\t", strings.ToUpper(string(s)))
	}
	fmt.Fprintln(tw, "TOTAL")
	for _, m := range slices.Sorted(maps.Keys(st.modules)) {
		c := st.modules[m]
		fmt.Fprintf(tw, "%s\t", cell(m))
		total := 0
		for _, s := range states {
			fmt.Fprintf(tw, "%d\t", c[s])
			total += c[s]
		}
		fmt.Fprintf(tw, "%d\n", total)
	}
	return tw.Flush()
}

// stamp formats a time for a table: UTC, to the second; "-" when unset.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// ran is how long a task has run, or ran: from its start to its end, or
// to now while it runs; "-" before it started.
func ran(t *apcore.TaskInfo) string {
	if t.StartedAt.IsZero() {
		return "-"
	}
	end := t.CompletedAt
	if end.IsZero() {
		end = time.Now()
	}
	d := max(0, end.Sub(t.StartedAt))
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// progress formats a task's progress; "-" when none was reported.
func progress(t *apcore.TaskInfo) string {
	if t.Progress == 0 {
		return "-"
	}
	return strconv.FormatFloat(t.Progress, 'f', -1, 64) + "%"
}

// errorText is a failed task's code and message.
func errorText(t *apcore.TaskInfo) string {
	switch {
	case t.ErrorCode != "" && t.Error != "":
		return string(t.ErrorCode) + ": " + t.Error
	case t.Error != "":
		return t.Error
	}
	return string(t.ErrorCode)
}

// short cuts s (made safe for a table) to n runes.
func short(s string, n int) string {
	s = cell(s)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// cell makes text from a record safe for a table and a terminal: tabs and
// line breaks become spaces, other control characters (terminal escapes)
// U+FFFD.
func cell(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case unicode.IsControl(r):
			return unicode.ReplacementChar
		}
		return r
	}, s)
}

// quoteID is an id for a message: quoted when it holds anything odd.
func quoteID(id string) string {
	for _, r := range id {
		if !(r == '-' || r == '_' || r == '.' || r == ':' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return strconv.Quote(id)
		}
	}
	return id
}
