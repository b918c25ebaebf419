package apcore

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// Paged listing and batched sweeps: what lets a caller, the dashboard and
// the reaper read or delete a bounded number of records at a time however
// many the store keeps.

const (
	// DefaultPageLimit is the page size of a ListOptions with Limit 0.
	DefaultPageLimit = 100
	// MaxPageLimit is the largest page ListPage returns.
	MaxPageLimit = 1000
	// sweepBatch is how many records one Sweep call deletes at most, and so
	// how many a sweep holds in memory at a time.
	sweepBatch = 1000
)

// ListOptions selects one page of records.
type ListOptions struct {
	Status TaskStatus // "" = every status
	After  string     // the Next of the previous page; "" = from the start
	Limit  int        // 1-1000; 0 = 100; above 1000 or negative: GENERAL_INVALID_INPUT
	Newest bool       // newest first instead of insertion order
}

// TaskPage is one page of records.
type TaskPage struct {
	Tasks []TaskInfo
	Next  string // cursor for the following page; "" on the last page
}

// Pager is an optional TaskStore capability: one page of records whose cost
// follows the page, not the number of records kept. The manager's ListPage
// uses it when present and otherwise lists every record and cuts a page
// out of the list.
//
// The manager passes opts checked: Status is "" or a valid state, Limit is
// 1-1000. Pages follow the insertion order (Newest: the reverse), by a
// sequence number the store gives each record when it is created, so that
// a record added or removed between pages never makes a page repeat or
// skip another record; a record whose state changes between pages may
// appear in a filtered listing twice or not at all. Next is "" on the last
// page, and a cursor this store did not make (or cannot read) is an error
// matching ErrInvalidInput.
type Pager interface {
	ListPage(ctx context.Context, opts ListOptions) (TaskPage, error)
}

// SweepRequest is what Sweeper.Sweep is asked to delete.
type SweepRequest struct {
	// Before: delete terminal records whose reference time is strictly
	// before it. The reference time is CompletedAt, or SubmittedAt when
	// CompletedAt is unset.
	Before time.Time
	// Limit is the most records one call deletes (at least 1).
	Limit int
}

// Sweeper is an optional TaskStore capability: delete expired records a
// batch at a time. Reap and Cleanup call Sweep until it deletes fewer than
// the limit, so that neither holds more than one batch, and a store can
// delete a batch in one round trip; without it they list what expired and
// delete it one record at a time.
//
// Sweep never deletes a pending or running record, returns how many
// records this call deleted (replicas sweeping at once never count one
// record twice), and costs what it deletes, not what the store keeps.
type Sweeper interface {
	Sweep(ctx context.Context, req SweepRequest) (int, error)
}

// checkListOptions validates opts and fills in the default limit.
func checkListOptions(opts ListOptions) (ListOptions, error) {
	switch {
	case opts.Limit < 0 || opts.Limit > MaxPageLimit:
		return opts, invalidf("ListPage: Limit %d is out of range (1-%d, or 0 for %d)", opts.Limit, MaxPageLimit, DefaultPageLimit)
	case opts.Limit == 0:
		opts.Limit = DefaultPageLimit
	}
	if opts.Status != "" && !opts.Status.Valid() {
		return opts, invalidf("ListPage: unknown status %q", opts.Status)
	}
	if len(opts.After) > 256 {
		return opts, invalidf("ListPage: the cursor is %d bytes; no store makes one that long", len(opts.After))
	}
	return opts, nil
}

// ListPage returns one page in insertion order (or newest first). Its cost
// follows the page, not the number of records the store holds; a record
// added or removed between pages never makes a page repeat or skip another
// record. A cursor this store did not make is GENERAL_INVALID_INPUT.
//
// A store without the Pager capability is listed whole and a page cut out
// of the list, at the cost of List; its cursors name the page's last record
// and cannot promise more than that record's own removal keeps the next
// page right.
func (m *TaskManager) ListPage(ctx context.Context, opts ListOptions) (TaskPage, error) {
	if err := checkCtx(ctx, "ListPage"); err != nil {
		return TaskPage{}, err
	}
	opts, err := checkListOptions(opts)
	if err != nil {
		return TaskPage{}, err
	}
	page, err := callFor(m, ctx, "ListPage", func(ctx context.Context) (TaskPage, error) {
		if p, ok := m.store.(Pager); ok {
			return p.ListPage(ctx, opts)
		}
		return listPageByList(ctx, m.store, opts)
	})
	if err != nil {
		return TaskPage{}, storeErr("list a page", err)
	}
	for i := range page.Tasks {
		m.freshProgress(&page.Tasks[i])
	}
	return page, nil
}

// listPageByList cuts a page out of the whole list, for a store without
// Pager. Its cursor is "l.<position>.<task id>": the page goes on after the
// record with that id, or, when that record is gone, where it was. (Without
// a sequence number that is a guess: if other records before it were
// removed as well, a page may repeat some.)
func listPageByList(ctx context.Context, store TaskStore, opts ListOptions) (TaskPage, error) {
	all, err := store.List(ctx, opts.Status)
	if err != nil {
		return TaskPage{}, err
	}
	if opts.Newest {
		for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
			all[i], all[j] = all[j], all[i]
		}
	}
	start := 0
	if opts.After != "" {
		rest, ok := strings.CutPrefix(opts.After, "l.")
		pos, id, ok2 := strings.Cut(rest, ".")
		n, err := strconv.Atoi(pos)
		if !ok || !ok2 || err != nil || n < 0 || id == "" {
			return TaskPage{}, invalidf("ListPage: cursor %q was not made by this store", opts.After)
		}
		// Gone: most likely the cursor's own record was removed, and the
		// records after it moved up by one.
		start = min(max(n-1, 0), len(all))
		for i := range all {
			if all[i].TaskID == id {
				start = i + 1
				break
			}
		}
	}
	end := min(start+opts.Limit, len(all))
	page := TaskPage{Tasks: all[start:end:end]}
	if end < len(all) {
		page.Next = "l." + strconv.Itoa(end) + "." + all[end-1].TaskID
	}
	return page, nil
}
