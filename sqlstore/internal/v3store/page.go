package v3store

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/apcore-go/apcore"
)

// The Pager and Sweeper capabilities: a page of records, and a batch of
// expired records deleted, each at the cost of the page or the batch.

var (
	_ apcore.Pager   = (*Store)(nil)
	_ apcore.Sweeper = (*Store)(nil)
)

// cursorPrefix starts every cursor ListPage makes: "s." and the seq of the
// last record of the page, in decimal.
const cursorPrefix = "s."

func makeCursor(seq int64) string { return cursorPrefix + strconv.FormatInt(seq, 10) }

// readCursor returns the seq a cursor names. Only what makeCursor makes
// is read: the prefix, then a positive number in canonical decimal.
func readCursor(c string) (int64, error) {
	digits, ok := strings.CutPrefix(c, cursorPrefix)
	n, err := strconv.ParseInt(digits, 10, 64)
	if !ok || err != nil || n < 1 || strconv.FormatInt(n, 10) != digits {
		return 0, invalid(fmt.Sprintf("sqlstore: ListPage: cursor %q was not made by this store", c))
	}
	return n, nil
}

// ListPage returns one page of records in insertion order (opts.Newest:
// newest first): one query that reads at most opts.Limit+1 rows, through
// the primary key (seq) or, with opts.Status, the (status, seq) index, so
// its cost follows the page whatever the table holds. The cursor is the
// seq of the page's last record: the next page starts after that place in
// the insertion order, whether that record is still there or not, and
// whatever the filter. A cursor this store did not make is an error
// matching apcore.ErrInvalidInput.
func (s *Store) ListPage(ctx context.Context, opts apcore.ListOptions) (apcore.TaskPage, error) {
	if opts.Status != "" && !opts.Status.Valid() {
		return apcore.TaskPage{}, invalid(fmt.Sprintf("sqlstore: unknown status %q", opts.Status))
	}
	limit := opts.Limit
	if limit < 1 || limit > apcore.MaxPageLimit {
		limit = apcore.DefaultPageLimit
		if opts.Limit > apcore.MaxPageLimit {
			limit = apcore.MaxPageLimit
		}
	}
	// The first page starts after seq 0, or before the largest seq.
	var from int64
	if opts.Newest {
		from = math.MaxInt64
	}
	if opts.After != "" {
		var err error
		if from, err = readCursor(opts.After); err != nil {
			return apcore.TaskPage{}, err
		}
	}
	stmt, a := s.st.pageUp, []any{from, limit + 1}
	switch {
	case opts.Status != "" && opts.Newest:
		stmt, a = s.st.pageStatusDown, []any{string(opts.Status), from, limit + 1}
	case opts.Status != "":
		stmt, a = s.st.pageStatusUp, []any{string(opts.Status), from, limit + 1}
	case opts.Newest:
		stmt = s.st.pageDown
	}
	rows, err := stmt.QueryContext(ctx, a...)
	if err != nil {
		return apcore.TaskPage{}, unavailable("list a page", err)
	}
	defer rows.Close()
	page := apcore.TaskPage{Tasks: make([]apcore.TaskInfo, 0, min(limit, 128))}
	var last int64
	for rows.Next() {
		if len(page.Tasks) == limit {
			page.Next = makeCursor(last) // one row more: another page follows
			break
		}
		var t apcore.TaskInfo
		var d infoDest
		if err := rows.Scan(append([]any{&last}, d.ptrs(&t)...)...); err != nil {
			return apcore.TaskPage{}, unavailable("list a page", err)
		}
		if err := d.fill(&t); err != nil {
			return apcore.TaskPage{}, unavailable("list a page", err)
		}
		page.Tasks = append(page.Tasks, t)
	}
	if err := rows.Err(); err != nil {
		return apcore.TaskPage{}, unavailable("list a page", err)
	}
	return page, nil
}

// Sweep deletes up to req.Limit terminal records whose reference time
// (CompletedAt, or SubmittedAt when it is unset) is strictly before
// req.Before, and returns how many this call deleted: one DELETE, which
// finds its batch through the sweep index (a partial index on that time
// over terminal records), so that it costs the batch, not the table. On
// PostgreSQL the batch is locked FOR UPDATE SKIP LOCKED as it is picked,
// so that racing sweepers delete different records instead of waiting on
// each other's; the count of active records is untouched, since only
// terminal records go (its triggers would keep it exact anyway).
func (s *Store) Sweep(ctx context.Context, req apcore.SweepRequest) (int, error) {
	if req.Limit < 1 {
		return 0, nil
	}
	done, err := s.write(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	res, err := s.st.sweep.ExecContext(ctx, req.Before.UnixMicro(), req.Limit)
	if err != nil {
		return 0, unavailable("sweep", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, unavailable("sweep", err)
	}
	return int(n), nil
}
