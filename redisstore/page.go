package redisstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
)

// Paged listing, batched sweeps and the unpaged lists, in bounded steps.
//
// Redis serves no other client while a script or a command runs, so no
// call here reads or deletes more than a bounded number of entries
// (walkStep, gatherMax, heldStep, sweepStep): a listing or a sweep of any
// size is many short calls from the client, never one long one. Each step
// goes on from a position that survives the removal of records between
// steps: a sequence number in the order index, or a member of the held
// index (sorted by name).
//
// A page of every record is one step: the order index's entries after the
// cursor's sequence number, and their records. A page in one state reads
// that state's records from the smallest index that has them: the held
// index for pending and running (bounded by what runs and waits), the
// terminal state's own index when it holds at most gatherMax records, and
// otherwise the order index after the cursor, filtered by state, a step at
// a time until the page is full (about Limit / share of that state entries).

const (
	// walkStep is how many entries of the order index one walk script
	// looks at, at most.
	walkStep = 2000
	// gatherMax is the largest terminal index that one gather script reads
	// whole; a larger one is walked through the order index.
	gatherMax = 2000
	// heldStep is how many entries of the held index one step reads.
	heldStep = 2000
	// sweepStep is how many records one sweep script deletes, at most.
	sweepStep = 250
	// sweepRescore is how many records of each terminal index scored +inf
	// (written by an earlier version without a completed_at) one sweep
	// script scores by their submitted_at, at most.
	sweepRescore = 100
)

// steps are the bounds of a Store's listing and sweep steps; 0 is the
// constant's value.
type steps struct{ walk, gather, held, sweep int }

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
// and its JSON (nil when it was gone).
type hit struct {
	id, seq string
	rec     any
}

// hits reads a listing script's reply: the last sequence number looked at,
// 1 if there is nothing after it, then id, sequence number, record for
// each record found.
func hits(v any, err error) (out []hit, last string, ended bool, _ error) {
	if err != nil {
		return nil, "", false, err
	}
	a, ok := v.([]any)
	if !ok || len(a) < 2 || (len(a)-2)%3 != 0 {
		return nil, "", false, fmt.Errorf("redisstore: unexpected reply %T from a listing script", v)
	}
	last, _ = a[0].(string)
	n, _ := a[1].(int64)
	for i := 2; i < len(a); i += 3 {
		id, _ := a[i].(string)
		seq, _ := a[i+1].(string)
		out = append(out, hit{id: id, seq: seq, rec: a[i+2]})
	}
	return out, last, n == 1, nil
}

// walk runs walkScript: up to want records of the order index after the
// sequence number after ("" from the start; newest: before it, from the
// end), looking at no more than walkStep entries. what is "all", a state,
// or "expired" with bound, the exclusive upper bound of a terminal index's
// score in microseconds.
func (s *Store) walk(ctx context.Context, after string, newest bool, what, bound string, want int) ([]hit, string, bool, error) {
	dir := "f"
	if newest {
		dir = "r"
	}
	return hits(walkScript.Run(ctx, s.rdb, s.anyKey, s.base, after, dir, what, bound, want, orDefault(s.steps.walk, walkStep)).Result())
}

// gather runs gatherScript: the records of terminal state st after the
// sequence number after, in order, up to want, when the state's index
// holds at most gatherMax records; ok is false when it holds more.
func (s *Store) gather(ctx context.Context, st apcore.TaskStatus, after string, newest bool, want int) (_ []hit, ok bool, _ error) {
	dir := "f"
	if newest {
		dir = "r"
	}
	v, err := gatherScript.Run(ctx, s.rdb, s.anyKey, s.base, string(st), after, dir, want, orDefault(s.steps.gather, gatherMax)).Result()
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

// withRecords fills in the records of hs that have none yet, MGET by MGET;
// a record gone in between stays nil.
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
// is one script that reads the order index after the cursor; a page in one
// state reads the held index (pending, running), the state's own index
// when it is small, or the order index after the cursor a bounded step at
// a time until the page is full. The cursor is "s" and a sequence number:
// a place in the insertion order, which the removal of any record leaves
// where it is.
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
	var found []hit
	complete := false // found holds everything after the cursor, up to limit+1
	switch {
	case opts.Status == apcore.StatusPending || opts.Status == apcore.StatusRunning:
		if found, err = s.active(ctx, opts.Status, after, opts.Newest); err != nil {
			return apcore.TaskPage{}, err
		}
		found, complete = found[:min(len(found), limit+1)], true
		if err := s.withRecords(ctx, found[:min(len(found), limit)]); err != nil {
			return apcore.TaskPage{}, err
		}
	case opts.Status != "":
		found, complete, err = s.gather(ctx, opts.Status, after, opts.Newest, limit+1)
		if err != nil {
			return apcore.TaskPage{}, unavailable("list a page", err)
		}
	}
	if !complete {
		what := "all"
		if opts.Status != "" {
			what = string(opts.Status)
		}
		// Each step asks for what the page still lacks, and one more, to
		// tell whether a next page has any; it stops once the page is
		// full, the last step having looked for that one more.
		for cur := after; len(found) < limit; {
			more, last, ended, err := s.walk(ctx, cur, opts.Newest, what, "", limit+1-len(found))
			if err != nil {
				return apcore.TaskPage{}, unavailable("list a page", err)
			}
			found = append(found, more...)
			if ended {
				complete = true
				break
			}
			cur = last
		}
	}
	page := apcore.TaskPage{}
	if page.Tasks, err = decode(nil, found[:min(len(found), limit)], nil); err != nil {
		return apcore.TaskPage{}, err
	}
	if len(found) > limit || (len(found) == limit && !complete) {
		page.Next = cursorPrefix + found[limit-1].seq
	}
	return page, nil
}

// Sweep deletes up to req.Limit terminal records whose reference time
// (CompletedAt, or SubmittedAt without one) is strictly before req.Before,
// with their index entries, and returns how many it deleted
// (apcore.Sweeper). It reads each terminal state's index by score, in
// scripts of at most sweepStep records each, and counts the records each
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
		k, err := sweepScript.Run(ctx, s.rdb, s.anyKey, s.base, bound, want, sweepRescore).Int()
		if err != nil {
			return n, unavailable("sweep", err)
		}
		n += k
		if k < want {
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
// order, in bounded steps: pending and running from the held index, a
// terminal state from its own index when it is small, and otherwise the
// order index walkStep entries at a time. A record that changes state or
// is deleted meanwhile may be left out.
func (s *Store) List(ctx context.Context, status apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	switch {
	case status == apcore.StatusPending || status == apcore.StatusRunning:
		found, err := s.active(ctx, status, "", false)
		if err != nil {
			return nil, err
		}
		if err := s.withRecords(ctx, found); err != nil {
			return nil, err
		}
		return decode(make([]apcore.TaskInfo, 0, len(found)), found, func(t *apcore.TaskInfo) bool { return t.Status == status })
	case status == "":
		return s.listWalk(ctx, "all", "", nil)
	case status.Valid():
		found, ok, err := s.gather(ctx, status, "", false, orDefault(s.steps.gather, gatherMax)+1)
		if err != nil {
			return nil, unavailable("list", err)
		}
		if ok {
			return decode(make([]apcore.TaskInfo, 0, len(found)), found, nil)
		}
		return s.listWalk(ctx, string(status), "", nil)
	}
	return nil, invalid(fmt.Sprintf("redisstore: unknown status %q", status))
}

// ListExpired returns the terminal records whose CompletedAt is set and
// strictly before before, in insertion order, walking the order index
// walkStep entries at a time.
func (s *Store) ListExpired(ctx context.Context, before time.Time) ([]apcore.TaskInfo, error) {
	return s.listWalk(ctx, "expired", microsBound(before), func(t *apcore.TaskInfo) bool {
		return t.Status.IsTerminal() && !t.CompletedAt.IsZero() && t.CompletedAt.Before(before)
	})
}

// listWalk walks the whole order index (see walk) and decodes what it
// finds.
func (s *Store) listWalk(ctx context.Context, what, bound string, keep func(*apcore.TaskInfo) bool) ([]apcore.TaskInfo, error) {
	var out []apcore.TaskInfo
	for cur := ""; ; {
		found, last, ended, err := s.walk(ctx, cur, false, what, bound, orDefault(s.steps.walk, walkStep))
		if err != nil {
			return nil, unavailable("list", err)
		}
		if out, err = decode(out, found, keep); err != nil {
			return nil, err
		}
		if ended {
			return out, nil
		}
		cur = last
	}
}

// walkScript walks the order index. ARGV: prefix, the sequence number to
// go on after ("" from the start), "f" (forwards) or "r" (from the end
// backwards), what ("all", a state, or "expired"), for "expired" the
// exclusive bound of the terminal index's score, how many records to find,
// the most entries to look at. Returns the last sequence number looked at,
// 1 if the index has nothing after it (0 otherwise), then id, sequence
// number and record of each record found.
var walkScript = script(`
local after, dir, what, bound = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local want, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local out = {after, 0}
local looked, found = 0, 0
while found < want and looked < budget do
  local n = budget - looked
  if what == 'all' then n = math.min(n, want - found) end
  local r
  if dir == 'r' then
    r = redis.call('ZRANGE', K_ORDER, after == '' and '+inf' or '(' .. after, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, n, 'WITHSCORES')
  else
    r = redis.call('ZRANGE', K_ORDER, after == '' and '-inf' or '(' .. after, '+inf', 'BYSCORE', 'LIMIT', 0, n, 'WITHSCORES')
  end
  local ids = {}
  for i = 1, #r, 2 do ids[#ids + 1] = r[i] end
  local metas = {}
  if what ~= 'all' and #ids > 0 then metas = redis.call('HMGET', K_META, unpack(ids)) end
  local j = 0
  while j < #ids and found < want do
    j = j + 1
    local id = ids[j]
    after = r[2 * j]
    local ok = what == 'all'
    if not ok then
      local m = parse(metas[j])
      if m and what == 'expired' then
        local k = done(m.st)
        local sc = k and tonumber(redis.call('ZSCORE', k, id) or '')
        ok = sc ~= nil and sc < bound
      elseif m then
        ok = m.st == what
      end
    end
    if ok then
      found = found + 1
      out[#out + 1] = id
      out[#out + 1] = after
      out[#out + 1] = redis.call('GET', base .. id)
    end
  end
  looked = looked + j
  if #ids < n and j == #ids then out[2] = 1 break end
end
out[1] = after
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
local found = {}
for i = 1, #ids, 1000 do
  local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
  local metas = redis.call('HMGET', K_META, unpack(chunk))
  for j, id in ipairs(chunk) do
    local m = parse(metas[j])
    if m and m.st == st then
      local seq = tonumber(m.seq)
      if not after or (dir == 'r' and seq < after) or (dir ~= 'r' and seq > after) then
        found[#found + 1] = {id, seq, m.seq}
      end
    end
  end
end
if dir == 'r' then
  table.sort(found, function(a, b) return a[2] > b[2] end)
else
  table.sort(found, function(a, b) return a[2] < b[2] end)
end
local out = {'', 1}
for i = 1, math.min(want, #found) do
  local f = found[i]
  out[#out + 1] = f[1]
  out[#out + 1] = f[3]
  out[#out + 1] = redis.call('GET', base .. f[1])
end
return out
`)

// heldScript reads one step of the held index (by name). ARGV: prefix, an
// active state, the member to go on after ("" from the start), how many
// entries to read. Returns walkScript's reply, with the last member read in
// place of a sequence number, and no records (false).
var heldScript = script(`
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
    out[#out + 1] = false
  end
end
return out
`)

// sweepScript deletes expired terminal records. ARGV: prefix, the
// exclusive bound of the reference time in microseconds, the most records
// to delete, the most records of each terminal index scored +inf to score
// anew. Returns how many records it deleted.
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
  for _, id in ipairs(redis.call('ZRANGE', k, '-inf', '(' .. bound, 'BYSCORE', 'LIMIT', 0, want - n)) do
    if redis.call('ZREM', k, id) == 1 then
      n = n + 1
      redis.call('DEL', base .. id)
      redis.call('HDEL', K_META, id)
      redis.call('ZREM', K_ORDER, id)
    end
  end
end
return n
`)
