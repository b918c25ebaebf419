package apcore

import (
	"context"
	"strconv"
	"strings"
)

// The MemoryStore's Pager and Sweeper.

// memCursorPrefix starts every cursor a MemoryStore makes; the rest is the
// sequence number of the last record of the page.
const memCursorPrefix = "m1."

// ListPage returns one page of records in insertion order (opts.Newest:
// newest first), after the record the cursor names. It seeks its first
// block by binary search and reads on from there, skipping the blocks that
// hold no record in opts.Status; its cost follows the page.
func (s *MemoryStore) ListPage(ctx context.Context, opts ListOptions) (TaskPage, error) {
	opts, err := checkListOptions(opts)
	if err != nil {
		return TaskPage{}, err
	}
	after := uint64(0)
	if opts.Newest {
		after = ^uint64(0)
	}
	if opts.After != "" {
		if after, err = s.parseCursor(opts.After); err != nil {
			return TaskPage{}, err
		}
	}
	set, keep := everySet, (func(*TaskInfo) bool)(nil)
	if opts.Status != "" {
		set = setOf(opts.Status)
		keep = func(t *TaskInfo) bool { return t.Status == opts.Status }
	}
	var page TaskPage
	last := uint64(0)
	more := false
	visit := func(r *memRecord) bool {
		info, ok := r.read(keep)
		if !ok {
			return true
		}
		if len(page.Tasks) == opts.Limit {
			more = true
			return false
		}
		page.Tasks = append(page.Tasks, info)
		last = r.seq
		return true
	}
	if opts.Newest {
		s.index.descend(after, set, visit)
	} else {
		s.index.ascend(after, set, visit)
	}
	for i := range page.Tasks {
		page.Tasks[i].Result = CloneResult(page.Tasks[i].Result)
	}
	if more {
		page.Next = memCursorPrefix + strconv.FormatUint(last, 10)
	}
	return page, nil
}

// parseCursor reads a cursor this store made.
func (s *MemoryStore) parseCursor(c string) (uint64, error) {
	rest, ok := strings.CutPrefix(c, memCursorPrefix)
	seq, err := strconv.ParseUint(rest, 10, 64)
	if !ok || err != nil || seq == 0 || seq >= s.index.next.Load() {
		return 0, invalidf("ListPage: cursor %q was not made by this store", c)
	}
	return seq, nil
}

// Sweep deletes up to req.Limit terminal records whose reference time
// (CompletedAt, or SubmittedAt when CompletedAt is unset) is strictly
// before req.Before, oldest first, and returns how many it deleted. It reads
// only the blocks that may hold one, and glances at the others.
func (s *MemoryStore) Sweep(ctx context.Context, req SweepRequest) (int, error) {
	if req.Limit < 1 {
		return 0, invalidf("task store: Sweep with limit %d; it must be at least 1", req.Limit)
	}
	before := req.Before
	expired := func(t *TaskInfo) bool {
		ref := t.CompletedAt
		if ref.IsZero() {
			ref = t.SubmittedAt
		}
		return t.Status.IsTerminal() && ref.Before(before)
	}
	n := 0
	s.index.eachBlock(func(b *memBlock) bool {
		if !b.mayExpire(before) {
			return true
		}
		start := b.minRef.Load()
		low := int64(noRef)
		full := b.each(terminalSet, func(r *memRecord) bool {
			if n == req.Limit {
				return false
			}
			r.sh.mu.Lock()
			if r.sh.m[r.info.TaskID] == r && r.info.Status.IsTerminal() {
				if expired(&r.info) {
					s.removeLocked(r)
					n++
				} else {
					low = min(low, refMicros(&r.info))
				}
			}
			r.sh.mu.Unlock()
			return true
		})
		if full { // every terminal record read: minRef can be made exact
			// Writers only lower minRef: if one did while this sweep read the
			// block, its value stands.
			b.minRef.CompareAndSwap(start, low)
		}
		return n < req.Limit && ctx.Err() == nil
	})
	return n, nil
}
