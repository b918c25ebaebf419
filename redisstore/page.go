package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/redis/go-redis/v9"
)

// Paged listing, batched sweeps and the unpaged lists, in bounded steps.
//
// Redis serves no other client while a script or a command runs, so no
// call here reads or deletes more than a bounded number of entries
// (walkStep, gatherMax, heldStep, expiredStep, sweepStep; a few
// milliseconds of Redis's time at most): a listing or a sweep of any
// size is many short calls from the client, never one long one. Each step
// goes on from a position that survives the removal of records between
// steps: a sequence number in the order index, a member of the held index
// (sorted by name), or a member of a terminal index and its score. The
// scripts return ids and sequence numbers; the records are read by MGET,
// which costs Redis a fraction of a GET from a script per record.
//
// A page of every record is one ZRANGE of the order index after the
// cursor's sequence number, and one MGET of its records. A page in one
// state reads that state's records from the smallest index that has them:
// the held index for pending and running (bounded by what runs and
// waits), the terminal state's own index when it holds at most gatherMax
// records, and otherwise the order index after the cursor, filtered by
// state, a step at a time until the page is full (about Limit / share of
// that state entries). List reads all of one of those indexes the same
// way, but a large terminal index by score; ListExpired reads each
// terminal index by score up to its bound.
//
// Sweep deletes, per script, up to sweepStep records from the low end of
// the terminal indexes, which are scored by reference time, with one ZREM,
// DEL, HDEL and ZREM of them all, and one HMGET of their unique keys (see
// scripts.go), each of which it takes out of the "uniq" hash where it
// still names the record.

const (
	// walkStep is how many entries of the order index one step looks at,
	// at most.
	walkStep = 1000
	// walkBuckets is how many buckets of the order index (layout 2) one
	// step reads, at most.
	walkBuckets = 64
	// sweepBuckets is how many buckets (layout 2) one sweep script
	// reads, at most.
	sweepBuckets = 64
	// expiredBuckets is how many buckets (layout 2) one step of
	// ListExpired, or of List in a terminal state, reads, at most.
	expiredBuckets = 64
	// gatherMax is the largest terminal index that one gather script reads
	// whole; a larger one is walked through the order index.
	gatherMax = 1000
	// heldStep is how many entries of the held index one step reads.
	heldStep = 1000
	// expiredStep is how many entries of a terminal index one step of
	// ListExpired, or of List in a terminal state, reads.
	expiredStep = 1000
	// sweepStep is how many records one sweep script deletes, at most.
	sweepStep = 500
	// sweepRescore is how many records of each terminal index scored +inf
	// (written by an earlier version without a completed_at) one sweep
	// script scores by their submitted_at, at most.
	sweepRescore = 100
)

// steps are the bounds of a Store's listing and sweep steps; 0 is the
// constant's value. A test may set between, which byScore (ListExpired,
// List in a large terminal state) calls between two steps with the last
// member it read.
type steps struct {
	walk, gather, held, expired, sweep int
	// buckets bounds the buckets a step of layout 2 reads (walkBuckets).
	buckets int
	// move bounds what a Claim moves from later to ready (claimMove).
	move    int
	between func(last string)
	// reading, when a test sets it, is called by ListPage with the ids
	// of a page before it reads their records.
	reading func(ids []string)
}

// orDefault is n, or def when n is not set (0).
func orDefault(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

var (
	_ apcore.Pager   = (*Store)(nil)
	_ apcore.Sweeper = (*Store)(nil)
)

// cursorPrefix starts every cursor this store makes: "s" and the sequence
// number of the last record of the page, in decimal.
const cursorPrefix = "s"

// parseCursor returns the sequence number a cursor names ("" for none), or
// GENERAL_INVALID_INPUT for a cursor this store did not make.
func parseCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	digits, ok := strings.CutPrefix(c, cursorPrefix)
	n, err := strconv.ParseInt(digits, 10, 64)
	if !ok || err != nil || n < 0 || strconv.FormatInt(n, 10) != digits {
		return "", invalid(fmt.Sprintf("redisstore: ListPage cursor %q was not made by this store", c))
	}
	return digits, nil
}

// hit is a record found by a listing step: its id, its sequence number
// and, once read, its JSON (nil when it was gone).
type hit struct {
	id, seq string
	rec     any
}

// hits reads a listing script's reply: the last sequence number (or
// member) looked at, 1 if there is nothing after it, then id and sequence
// number of each record found.
func hits(v any, err error) (out []hit, last string, ended bool, _ error) {
	if err != nil {
		return nil, "", false, err
	}
	a, ok := v.([]any)
	if !ok || len(a) < 2 || len(a)%2 != 0 {
		return nil, "", false, fmt.Errorf("redisstore: unexpected reply %T from a listing script", v)
	}
	last, _ = a[0].(string)
	n, _ := a[1].(int64)
	for i := 2; i < len(a); i += 2 {
		id, _ := a[i].(string)
		seq, _ := a[i+1].(string)
		out = append(out, hit{id: id, seq: seq})
	}
	return out, last, n == 1, nil
}

// walk returns up to want records of the order index after the sequence
// number after ("" from the start; newest: before it, from the end), in
// state what ("" for any), looking at no more than walkStep entries, the
// last sequence number it looked at, and whether the index ends there.
// Every record is one ZRANGE; a state is walkScript.
func (s *Store) walk(ctx context.Context, after string, newest bool, what apcore.TaskStatus, want int) ([]hit, string, bool, error) {
	dir := "f"
	if newest {
		dir = "r"
	}
	if what != "" {
		return hits(s.run(ctx, walks, s.anyKey, s.base, after, dir, string(what), want, orDefault(s.steps.walk, walkStep),
			orDefault(s.steps.buckets, walkBuckets)).Result())
	}
	n := min(want, orDefault(s.steps.walk, walkStep))
	if s.v2.Load() {
		return hits(walk2Script.Run(ctx, s.rdb, s.anyKey, s.base, after, dir, "", n, n, orDefault(s.steps.buckets, walkBuckets)).Result())
	}
	r := redis.ZRangeArgs{Key: s.order, ByScore: true, Start: "-inf", Stop: "+inf", Count: int64(n), Rev: newest}
	switch {
	case after != "" && newest:
		r.Start, r.Stop = "("+after, "-inf"
	case after != "":
		r.Start = "(" + after
	case newest:
		r.Start, r.Stop = "+inf", "-inf"
	}
	// The layout is read in the same transaction: a store that Migrate
	// has begun to move is read as layout 2.
	var layout *redis.StringCmd
	var zr *redis.ZSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		layout = p.Get(ctx, s.base+indexTag+"layout")
		zr = p.ZRangeArgsWithScores(ctx, r)
		return nil
	})
	if layout.Val() == "2" && s.reload(ctx) {
		return s.walk(ctx, after, newest, what, want)
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", false, err
	}
	zs := zr.Val()
	out := make([]hit, len(zs))
	for i, z := range zs {
		id, _ := z.Member.(string)
		out[i] = hit{id: id, seq: strconv.FormatInt(int64(z.Score), 10)}
	}
	if len(out) > 0 {
		after = out[len(out)-1].seq
	}
	return out, after, len(out) < n, nil
}

// gather runs gatherScript: the records of terminal state st after the
// sequence number after, in order, up to want, when the state's index
// holds at most gatherMax records; ok is false when it holds more.
func (s *Store) gather(ctx context.Context, st apcore.TaskStatus, after string, newest bool, want int) (_ []hit, ok bool, _ error) {
	dir := "f"
	if newest {
		dir = "r"
	}
	v, err := s.run(ctx, gathers, s.anyKey, s.base, string(st), after, dir, want, orDefault(s.steps.gather, gatherMax)).Result()
	if n, isInt := v.(int64); err == nil && isInt && n == -1 {
		return nil, false, nil
	}
	out, _, _, err := hits(v, err)
	return out, err == nil, err
}

// active returns the ids and sequence numbers of the records in active
// state st (pending or running), read from the held index heldStep entries
// at a time, in insertion order (newest: reversed), those after the
// sequence number after only.
func (s *Store) active(ctx context.Context, st apcore.TaskStatus, after string, newest bool) ([]hit, error) {
	var out []hit
	var from int64 = -1
	if after != "" {
		from, _ = strconv.ParseInt(after, 10, 64)
	}
	last := ""
	for {
		v, err := heldScript.Run(ctx, s.rdb, s.anyKey, s.base, string(st), last, orDefault(s.steps.held, heldStep)).Result()
		found, next, ended, err := hits(v, err)
		if err != nil {
			return nil, unavailable("list "+string(st), err)
		}
		for _, h := range found {
			seq, _ := strconv.ParseInt(h.seq, 10, 64)
			if from < 0 || (!newest && seq > from) || (newest && seq < from) {
				out = append(out, h)
			}
		}
		if ended {
			break
		}
		last = next
	}
	slices.SortFunc(out, func(a, b hit) int {
		x, _ := strconv.ParseInt(a.seq, 10, 64)
		y, _ := strconv.ParseInt(b.seq, 10, 64)
		if newest {
			x, y = y, x
		}
		return cmp.Compare(x, y)
	})
	return out, nil
}

// withRecords reads the records of hs, 500 keys an MGET; the record of
// one gone since its index entry was read is nil.
func (s *Store) withRecords(ctx context.Context, hs []hit) error {
	const batch = 500
	for start := 0; start < len(hs); start += batch {
		chunk := hs[start:min(start+batch, len(hs))]
		keys := make([]string, len(chunk))
		for i, h := range chunk {
			keys[i] = s.Key(h.id)
		}
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return unavailable("read records", err)
		}
		for i, v := range vals {
			chunk[i].rec = v
		}
	}
	return nil
}

// decode appends to out the records of hs that are there and that keep
// accepts.
func decode(out []apcore.TaskInfo, hs []hit, keep func(*apcore.TaskInfo) bool) ([]apcore.TaskInfo, error) {
	for _, h := range hs {
		str, ok := h.rec.(string)
		if !ok {
			continue // deleted in between
		}
		var t apcore.TaskInfo
		if err := decodeRecord([]byte(str), &t); err != nil {
			return nil, unavailable("decode "+h.id, err)
		}
		if keep == nil || keep(&t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// ListPage returns one page of records in insertion order, or newest
// first (apcore.Pager). Its cost follows the page: a page of every record
// is one ZRANGE of the order index after the cursor and one MGET; a page
// in one state reads the held index (pending, running), the state's own
// index when it is small, or the order index after the cursor a bounded
// step at a time until the page is full. The cursor is "s" and a sequence
// number: a place in the insertion order, which the removal of any record
// leaves where it is.
func (s *Store) ListPage(ctx context.Context, opts apcore.ListOptions) (apcore.TaskPage, error) {
	after, err := parseCursor(opts.After)
	if err != nil {
		return apcore.TaskPage{}, err
	}
	limit := opts.Limit
	switch {
	case limit == 0:
		limit = apcore.DefaultPageLimit
	case limit < 0 || limit > apcore.MaxPageLimit:
		return apcore.TaskPage{}, invalid(fmt.Sprintf("redisstore: ListPage limit %d is out of range (1-%d)", limit, apcore.MaxPageLimit))
	}
	if opts.Status != "" && !opts.Status.Valid() {
		return apcore.TaskPage{}, invalid(fmt.Sprintf("redisstore: unknown status %q", opts.Status))
	}
	for {
		page, err := s.page(ctx, opts, after, limit)
		// Every record of a page may have gone, or changed state, between
		// its index entries and its records: the page then goes on after
		// them, as a caller never sees an empty page with a next one.
		if err != nil || len(page.Tasks) > 0 || page.Next == "" {
			return page, err
		}
		after = strings.TrimPrefix(page.Next, cursorPrefix)
	}
}

// page is ListPage after the cursor's sequence number after, limit set.
func (s *Store) page(ctx context.Context, opts apcore.ListOptions, after string, limit int) (apcore.TaskPage, error) {
	var found []hit
	var err error
	complete := false // found holds everything after the cursor, up to limit+1
	switch {
	case opts.Status == apcore.StatusPending || opts.Status == apcore.StatusRunning:
		if found, err = s.active(ctx, opts.Status, after, opts.Newest); err != nil {
			return apcore.TaskPage{}, err
		}
		found, complete = found[:min(len(found), limit+1)], true
	case opts.Status != "":
		found, complete, err = s.gather(ctx, opts.Status, after, opts.Newest, limit+1)
		if err != nil {
			return apcore.TaskPage{}, unavailable("list a page", err)
		}
	}
	// Each step asks for what the page still lacks, and one more, to tell
	// whether a next page has any; it stops once the page is full, the
	// last step having looked for that one more.
	for cur := after; !complete && len(found) < limit; {
		more, last, ended, err := s.walk(ctx, cur, opts.Newest, opts.Status, limit+1-len(found))
		if err != nil {
			return apcore.TaskPage{}, unavailable("list a page", err)
		}
		found = append(found, more...)
		complete, cur = ended, last
	}
	page := apcore.TaskPage{}
	if len(found) > limit || (len(found) == limit && !complete) {
		page.Next = cursorPrefix + found[limit-1].seq
	}
	found = found[:min(len(found), limit)]
	if s.steps.reading != nil {
		ids := make([]string, len(found))
		for i, h := range found {
			ids[i] = h.id
		}
		s.steps.reading(ids)
	}
	if err := s.withRecords(ctx, found); err != nil {
		return apcore.TaskPage{}, err
	}
	// A record read after its index entry may have changed state since,
	// or gone: a page may then hold fewer records than the limit.
	page.Tasks, err = decode(make([]apcore.TaskInfo, 0, len(found)), found, func(t *apcore.TaskInfo) bool {
		return opts.Status == "" || t.Status == opts.Status
	})
	if err != nil {
		return apcore.TaskPage{}, err
	}
	return page, nil
}

// Sweep deletes up to req.Limit terminal records whose reference time
// (CompletedAt, or SubmittedAt without one) is strictly before req.Before,
// with their index entries, and returns how many it deleted
// (apcore.Sweeper). It reads each terminal state's index by score, in
// scripts of at most 500 records each, and counts the records each
// script took out of an index, so that sweepers racing over the same
// records count each once.
func (s *Store) Sweep(ctx context.Context, req apcore.SweepRequest) (int, error) {
	if req.Limit <= 0 || req.Before.IsZero() {
		return 0, nil
	}
	bound := microsBound(req.Before)
	n := 0
	for n < req.Limit {
		want := min(req.Limit-n, orDefault(s.steps.sweep, sweepStep))
		k, err := s.run(ctx, sweeps, s.anyKey, s.base, bound, want, sweepRescore, orDefault(s.steps.buckets, sweepBuckets)).Int()
		if err != nil {
			return n, unavailable("sweep", err)
		}
		more := k < 0 // layout 2's script stopped at its most buckets
		if more {
			k = -1 - k
		}
		n += k
		if k < want && !more {
			break
		}
	}
	return n, nil
}

// microsBound is the exclusive bound, in Unix microseconds, of the scores
// (times written to the microsecond) strictly before t.
func microsBound(t time.Time) string {
	bound := t.UnixMicro()
	if t.Before(time.UnixMicro(bound)) { // a time between two microseconds: before is strict
		bound++
	}
	return strconv.FormatInt(bound, 10)
}

// List returns every record ("" status) or those in one state, in insertion
// order, in bounded steps: every record from the order index, 1,000
// entries at a time; pending and running from the held index; a terminal
// state from its own index, whole when it is small, by score otherwise
// (1,000 entries a step), sorted by sequence number. A record that
// changes state or is deleted meanwhile may be left out.
func (s *Store) List(ctx context.Context, status apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	if status != "" && !status.Valid() {
		return nil, invalid(fmt.Sprintf("redisstore: unknown status %q", status))
	}
	var found []hit
	var err error
	switch {
	case status == apcore.StatusPending || status == apcore.StatusRunning:
		if found, err = s.active(ctx, status, "", false); err != nil {
			return nil, err
		}
	case status != "":
		var whole bool
		found, whole, err = s.gather(ctx, status, "", false, orDefault(s.steps.gather, gatherMax)+1)
		if err != nil {
			return nil, unavailable("list", err)
		}
		if !whole {
			if found, err = s.byScore(ctx, status, "+inf"); err != nil {
				return nil, unavailable("list", err)
			}
			slices.SortFunc(found, func(a, b hit) int {
				x, _ := strconv.ParseInt(a.seq, 10, 64)
				y, _ := strconv.ParseInt(b.seq, 10, 64)
				return cmp.Compare(x, y)
			})
		}
	default:
		for cur := ""; ; {
			more, last, ended, err := s.walk(ctx, cur, false, status, orDefault(s.steps.walk, walkStep))
			if err != nil {
				return nil, unavailable("list", err)
			}
			found = append(found, more...)
			if ended {
				break
			}
			cur = last
		}
	}
	return s.read(ctx, found, func(t *apcore.TaskInfo) bool { return status == "" || t.Status == status })
}

// read reads and decodes the records of hs, a batch at a time, keeping
// those keep accepts.
func (s *Store) read(ctx context.Context, hs []hit, keep func(*apcore.TaskInfo) bool) ([]apcore.TaskInfo, error) {
	out := make([]apcore.TaskInfo, 0, len(hs))
	const batch = 1000
	for start := 0; start < len(hs); start += batch {
		chunk := hs[start:min(start+batch, len(hs))]
		if err := s.withRecords(ctx, chunk); err != nil {
			return nil, err
		}
		var err error
		if out, err = decode(out, chunk, keep); err != nil {
			return nil, err
		}
		for i := range chunk {
			chunk[i].rec = nil // decoded: let it go
		}
	}
	return out, nil
}

// ListExpired returns the terminal records whose CompletedAt is set and
// strictly before before, in insertion order. It reads each terminal
// state's index by score, 1,000 entries at a time, up to the bound:
// its cost follows the records it returns.
func (s *Store) ListExpired(ctx context.Context, before time.Time) ([]apcore.TaskInfo, error) {
	bound := microsBound(before)
	var found []hit
	for _, st := range []apcore.TaskStatus{apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled} {
		more, err := s.byScore(ctx, st, bound)
		if err != nil {
			return nil, unavailable("list expired", err)
		}
		found = append(found, more...)
	}
	slices.SortFunc(found, func(a, b hit) int {
		x, _ := strconv.ParseInt(a.seq, 10, 64)
		y, _ := strconv.ParseInt(b.seq, 10, 64)
		return cmp.Compare(x, y)
	})
	return s.read(ctx, found, func(t *apcore.TaskInfo) bool {
		return t.Status.IsTerminal() && !t.CompletedAt.IsZero() && t.CompletedAt.Before(before)
	})
}

// byScore returns the ids and sequence numbers of the entries of terminal
// state st's index whose score is below bound (microseconds, exclusive;
// "+inf" for every entry), in the index's order, reading expiredStep
// entries a step. Each step goes on after the last member read; when that
// member is gone, from its score on, leaving out those already read.
func (s *Store) byScore(ctx context.Context, st apcore.TaskStatus, bound string) ([]hit, error) {
	found, err := s.byScore1(ctx, st, bound)
	if err != nil || !s.v2.Load() {
		return found, err
	}
	more, err := s.byScore2(ctx, st, bound)
	if err != nil {
		return nil, err
	}
	// A record that a migration moved between the two is in both.
	ids := make(map[string]bool, len(found))
	for _, h := range found {
		ids[h.id] = true
	}
	for _, h := range more {
		if !ids[h.id] {
			found = append(found, h)
		}
	}
	return found, nil
}

// byScore1 is byScore in layout 1's index of st, which in layout 2 holds
// what a migration under way has not moved yet.
func (s *Store) byScore1(ctx context.Context, st apcore.TaskStatus, bound string) ([]hit, error) {
	var found []hit
	last, lastScore := "", ""
	seen := map[string]bool{}
	ties := 0 // how many read have lastScore
	for {
		v, err := s.run(ctx, byScores, s.anyKey, s.base, string(st), last, lastScore, ties, bound,
			orDefault(s.steps.expired, expiredStep)).Result()
		a, ok := v.([]any)
		if err == nil && (!ok || len(a) < 1 || (len(a)-1)%3 != 0) {
			err = fmt.Errorf("redisstore: unexpected reply %T from the expired script", v)
		}
		if err != nil {
			return nil, err
		}
		for i := 1; i < len(a); i += 3 {
			id, _ := a[i].(string)
			score, _ := a[i+1].(string)
			seq, _ := a[i+2].(string)
			last = id
			if seen[id] {
				continue
			}
			seen[id] = true
			if score == lastScore {
				ties++
			} else {
				lastScore, ties = score, 1
			}
			if seq != "" {
				found = append(found, hit{id: id, seq: seq})
			}
		}
		if n, _ := a[0].(int64); n == 1 {
			return found, nil
		}
		if s.steps.between != nil {
			s.steps.between(last)
		}
	}
}

// walkScript walks the order index for the records in one state. ARGV:
// prefix, the sequence number to go on after ("" from the start), "f"
// (forwards) or "r" (from the end backwards), the state, how many records
// to find, the most entries to look at. Returns the last sequence number
// looked at, 1 if the index has nothing after it (0 otherwise), then id
// and sequence number of each record found.
var walkScript = script(`
local after, dir, st = ARGV[2], ARGV[3], ARGV[4]
local want, budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local r
if dir == 'r' then
  r = redis.call('ZRANGE', K_ORDER, after == '' and '+inf' or '(' .. after, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, budget, 'WITHSCORES')
else
  r = redis.call('ZRANGE', K_ORDER, after == '' and '-inf' or '(' .. after, '+inf', 'BYSCORE', 'LIMIT', 0, budget, 'WITHSCORES')
end
local out = {after, 0}
local n = #r / 2
if n == 0 then out[2] = 1 return out end
local ids = {}
for i = 1, n do ids[i] = r[2 * i - 1] end
local metas = redis.call('HMGET', K_META, unpack(ids))
local found, j = 0, 0
while j < n and found < want do
  j = j + 1
  local m = metas[j]
  if m and string.sub(m, 1, #st + 1) == st .. '|' then
    found = found + 1
    out[#out + 1] = ids[j]
    out[#out + 1] = r[2 * j]
  end
end
out[1] = r[2 * j]
if j == n and n < budget then out[2] = 1 end
return out
`)

// gatherScript reads a terminal state's index whole, when it holds at most
// a given number of records. ARGV: prefix, the state, the sequence number
// to go on after (""), "f" or "r" (see walkScript), how many records to
// return, the largest index to read. Returns -1 for a larger index, and
// otherwise walkScript's reply (its first two entries "" and 1), with the
// records of the state after the sequence number, sorted, up to the count.
var gatherScript = script(`
local st, after, dir, want, most = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local k = done(st)
if not k then return redis.error_reply('not a terminal state: ' .. st) end
if redis.call('ZCARD', k) > most then return -1 end
local ids = redis.call('ZRANGE', k, 0, -1)
local out = {'', 1}
if #ids == 0 then return out end
local found = {}
local metas = redis.call('HMGET', K_META, unpack(ids))
for j, id in ipairs(ids) do
  local m = parse(metas[j])
  if m and m.st == st then
    local seq = tonumber(m.seq)
    if not after or (dir == 'r' and seq < after) or (dir ~= 'r' and seq > after) then
      found[#found + 1] = {id, seq, m.seq}
    end
  end
end
if dir == 'r' then
  table.sort(found, function(a, b) return a[2] > b[2] end)
else
  table.sort(found, function(a, b) return a[2] < b[2] end)
end
for i = 1, math.min(want, #found) do
  out[#out + 1] = found[i][1]
  out[#out + 1] = found[i][3]
end
return out
`)

// heldScript reads one step of the held index (by name). ARGV: prefix, an
// active state, the member to go on after ("" from the start), how many
// entries to read. Returns walkScript's reply, with the last member read in
// place of a sequence number.
var heldScript = anyLayout(`
local st, last, n = ARGV[2], ARGV[3], tonumber(ARGV[4])
local r = redis.call('ZRANGE', K_HELD, last == '' and '-' or '(' .. last, '+', 'BYLEX', 'LIMIT', 0, n)
local out = {last, 0}
if #r < n then out[2] = 1 end
if #r == 0 then return out end
out[1] = r[#r]
local ids = {}
for i, m in ipairs(r) do ids[i] = string.sub(m, string.find(m, '\0', 1, true) + 1) end
local metas = redis.call('HMGET', K_META, unpack(ids))
for i, id in ipairs(ids) do
  local m = parse(metas[i])
  if m and m.st == st then
    out[#out + 1] = id
    out[#out + 1] = m.seq
  end
end
return out
`)

// byScoreScript reads one step of a terminal state's index by score, up
// to a bound. ARGV: prefix, the state, the member to go on after ("" from
// the start), its score, how many members read have that score, the
// exclusive bound of the score in microseconds ("+inf": none, every entry),
// how many entries to read.
// When the member is gone, it reads on from its score, as many more as
// were read with that score (the caller leaves those out again). Returns
// 1 when the index has no more entries below the bound (0 otherwise), then
// id, score and sequence number ("" without one) of each entry read.
var byScoreScript = script(byScoreLua)

// byScoreLeftScript is byScoreScript for layout 2, which reads with it
// what a migration under way has left in layout 1's terminal indexes.
var byScoreLeftScript = anyLayout(byScoreLua)

// byScoreLua is byScoreScript's body.
const byScoreLua = `
local k, last, lastScore, ties, n = done(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[7])
local all = ARGV[6] == '+inf'
local bound, max = tonumber(ARGV[6]), all and '+inf' or '(' .. ARGV[6]
local r
local rank = last ~= '' and redis.call('ZRANK', k, last)
if last == '' then
  r = redis.call('ZRANGE', k, '-inf', max, 'BYSCORE', 'LIMIT', 0, n, 'WITHSCORES')
elseif rank then
  r = redis.call('ZRANGE', k, rank + 1, rank + n, 'WITHSCORES')
else
  n = n + ties
  r = redis.call('ZRANGE', k, lastScore, max, 'BYSCORE', 'LIMIT', 0, n, 'WITHSCORES')
end
local out = {0}
local ids = {}
local m = #r / 2
for i = 1, m do
  local sc = r[2 * i]
  if not all and sc ~= '-inf' and (sc == 'inf' or not (tonumber(sc) < bound)) then out[1] = 1 break end
  ids[#ids + 1] = r[2 * i - 1]
end
if m < n then out[1] = 1 end
if #ids == 0 then out[1] = 1 return out end
local seqs = redis.call('ZMSCORE', K_ORDER, unpack(ids))
for i, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = r[2 * i]
  out[#out + 1] = seqs[i] or ''
end
return out
`

// sweepScript deletes expired terminal records. ARGV: prefix, the
// exclusive bound of the reference time in microseconds, the most records
// to delete, the most records of each terminal index scored +inf to score
// anew. Returns how many records it deleted: how many it took out of the
// terminal indexes, in which a record is once.
//
// Terminal records are scored by their reference time: completed_at, or
// submitted_at without one (-inf for a zero submitted_at). Earlier versions
// scored a terminal record without completed_at +inf; the script first
// scores up to the given number of those by the submitted_at of their
// record, so that they expire too.
var sweepScript = script(`
local bound, want, rescore = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local states = {'completed', 'failed', 'cancelled'}
for _, st in ipairs(states) do
  local k = done(st)
  for _, id in ipairs(redis.call('ZRANGE', k, '+inf', '+inf', 'BYSCORE', 'LIMIT', 0, rescore)) do
    local score = '-inf'
    local rec = redis.call('GET', base .. id)
    local ok, t = pcall(cjson.decode, rec or '')
    if ok and type(t) == 'table' and type(t.submitted_at) == 'number' and t.submitted_at ~= 0 then
      score = string.format('%d', math.floor(t.submitted_at * 1e6 + 0.5))
    end
    redis.call('ZADD', k, 'XX', score, id)
  end
end
local n = 0
for _, st in ipairs(states) do
  if n >= want then break end
  local k = done(st)
  local ids = redis.call('ZRANGE', k, '-inf', '(' .. bound, 'BYSCORE', 'LIMIT', 0, want - n)
  if #ids > 0 then
    n = n + redis.call('ZREM', k, unpack(ids))
    local keys = {}
    for i, id in ipairs(ids) do keys[i] = base .. id end
    redis.call('DEL', unpack(keys))
    redis.call('HDEL', K_META, unpack(ids))
    redis.call('ZREM', K_ORDER, unpack(ids))
    redis.call('HDEL', idx .. 'prio', unpack(ids)) -- none, unless an earlier version ended the task
    local ukeys = redis.call('HMGET', idx .. 'ukey', unpack(ids))
    local had = {}
    for i, key in ipairs(ukeys) do
      if key then
        had[#had + 1] = ids[i]
        if redis.call('HGET', idx .. 'uniq', key) == ids[i] then redis.call('HDEL', idx .. 'uniq', key) end
      end
    end
    if #had > 0 then redis.call('HDEL', idx .. 'ukey', unpack(had)) end
  end
end
return n
`)

// byScore2 is byScore in layout 2's buckets of st (see byScore2Script):
// a step reads up to expiredBuckets buckets, and stops after the bucket
// that brings it to expiredStep entries.
func (s *Store) byScore2(ctx context.Context, st apcore.TaskStatus, bound string) ([]hit, error) {
	var found []hit
	last, lastScore := "", ""
	seen := map[string]bool{}  // ids
	seenB := map[string]bool{} // buckets
	ties := 0                  // how many buckets read have lastScore
	for {
		v, err := byScore2Script.Run(ctx, s.rdb, s.anyKey, s.base, string(st), last, lastScore, ties, bound,
			orDefault(s.steps.expired, expiredStep), orDefault(s.steps.buckets, expiredBuckets)).Result()
		a, ok := v.([]any)
		var nb int64
		if err == nil && ok && len(a) >= 2 {
			nb, _ = a[1].(int64)
		}
		if err == nil && (!ok || len(a) < 2 || int64(len(a)) < 2+2*nb || (int64(len(a))-2-2*nb)%3 != 0) {
			err = fmt.Errorf("redisstore: unexpected reply %T from the expired script", v)
		}
		if err != nil {
			return nil, err
		}
		for i := 2; i < 2+2*int(nb); i += 2 {
			b, _ := a[i].(string)
			score, _ := a[i+1].(string)
			last = b
			if seenB[b] {
				continue
			}
			seenB[b] = true
			if score == lastScore {
				ties++
			} else {
				lastScore, ties = score, 1
			}
		}
		for i := 2 + 2*int(nb); i < len(a); i += 3 {
			id, _ := a[i].(string)
			seq, _ := a[i+2].(string)
			if seen[id] || seq == "" {
				continue
			}
			seen[id] = true
			found = append(found, hit{id: id, seq: seq})
		}
		if n, _ := a[0].(int64); n == 1 {
			return found, nil
		}
		if s.steps.between != nil {
			s.steps.between(last)
		}
	}
}
