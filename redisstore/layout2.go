package redisstore

import (
	"context"
	"strings"

	"github.com/apcore-go/apcore"
	"github.com/redis/go-redis/v9"
)

// Layout 2: the same records in less memory (see LayoutVersion).
//
// Layout 1 keeps, per record, an entry in the order index, one in the meta
// hash and, once it has ended, one in its terminal state's index; each of
// those is a large sorted set or hash, whose entries cost Redis about 120
// to 145 bytes each. Layout 2 keeps an ended record's facts where they
// already are and its index entries in small keys that Redis encodes
// compactly (a listpack, while a sorted set holds at most
// zset-max-listpack-entries members, 128 by default):
//
//	o:<b>          sorted set: the ids of the records whose sequence number s has
//	               floor(s / 128) = b, scored by s (the order index, in buckets)
//	o              sorted set: every b that has an o:<b>, scored by b
//	d:<state>:<b>  sorted set: the sequence numbers of bucket b's records in a terminal
//	               state, scored by reference time (the terminal indexes, in the same
//	               buckets; a record's id is its sequence number's member in o:<b>)
//	d:<state>      sorted set: every b that has a d:<state>:<b>, scored by the lowest
//	               reference time in it
//	n              hash: how many records the o:<b> hold ("all") and each d:<state>:<b>
//	migrating      present while Migrate moves a store of layout 1 to layout 2
//
// An ended record has no meta entry: its state is its record's "status",
// and its sequence number is in its record, as the key "_seq" that the
// store adds last ({..., "_seq":42}; TaskInfo.UnmarshalJSON, as other
// readers of the wire format, ignores a key it does not know). An active
// record has its meta entry as in layout 1, and every other key (held,
// spec, prio, later, ready, uniq, ukey, leases, seq) is as in layout 1.
//
// Reading a state's records walks buckets: a page in one terminal state
// reads the buckets after its cursor; Sweep and ListExpired read the
// buckets whose lowest reference time is before their bound, which the
// state's directory "d:<state>" orders; each step reads a bounded number
// of buckets (each at most 128 entries), so no script runs long at any
// size.
//
// While Migrate runs (the "migrating" key is there) a record may still be
// as layout 1 left it: its order entry in "order", and, ended, its meta
// entry and its entry in "status:<state>". Every script of layout 2 reads
// those too, and a write to such an ended record first moves it to layout
// 2 (settle), so the indexes never disagree with the records whatever
// the migration has reached.

// prelude2 starts every script of layout 2: the key names, layout 1's
// helpers for the meta hash (parse, active, claimable, encode) and those
// for the buckets.
const prelude2 = `
local base = ARGV[1]
local idx = base .. '_idx:'
local K_SEQ, K_META, K_HELD = idx .. 'seq', idx .. 'meta', idx .. 'held'
local K_SPEC, K_LATER, K_READY, K_LEASES = idx .. 'spec', idx .. 'later', idx .. 'ready', idx .. 'leases'
local K_ORDER1, K_ODIR, K_COUNT = idx .. 'order', idx .. 'o', idx .. 'n'
local MIG = redis.call('EXISTS', idx .. 'migrating') == 1

local function isdone(st) return st == 'completed' or st == 'failed' or st == 'cancelled' end
local function done1(st) return idx .. 'status:' .. st end
-- A bucket holds 128 sequence numbers: Redis's default
-- zset-max-listpack-entries, so that a bucket stays a listpack.
local function bucket(seq) return string.format('%d', math.floor(tonumber(seq) / 128)) end
local function okey(b) return idx .. 'o:' .. b end
local function ddir(st) return idx .. 'd:' .. st end
local function dkey(st, b) return idx .. 'd:' .. st .. ':' .. b end

local function parse(m)
  if not m then return nil end
  local st, seq, r, nb, owner = string.match(m, '^(%a+)|(%d+)|(r?)|(%-?%d*)|(.*)$')
  if not st then return nil end
  return {st = st, seq = seq, r = (r == 'r'), nb = nb, owner = owner}
end

local function active(st) return st == 'pending' or st == 'running' end

local function claimable(m)
  return m ~= nil and m.r and m.owner == '' and m.st == 'pending'
end

local function encode(m)
  return m.st .. '|' .. m.seq .. '|' .. (m.r and 'r' or '') .. '|' .. m.nb .. '|' .. m.owner
end

-- oadd puts id in its order bucket. A new bucket records the layout
-- when it is not recorded: Redis lost its data (see wiped) while Stores of
-- layout 2 ran, which must not be read as layout 1 (see New).
local function oadd(id, seq)
  local b = bucket(seq)
  if redis.call('ZADD', okey(b), seq, id) == 1 then
    redis.call('HINCRBY', K_COUNT, 'all', 1)
    if redis.call('ZADD', K_ODIR, 'NX', b, b) == 1 then redis.call('SET', idx .. 'layout', '2', 'NX') end
  end
end

-- orem takes ids, all of bucket b, out of the order index.
local function orem(ids, b)
  local k = okey(b)
  local n = redis.call('ZREM', k, unpack(ids))
  if n > 0 then
    redis.call('HINCRBY', K_COUNT, 'all', -n)
    if redis.call('EXISTS', k) == 0 then redis.call('ZREM', K_ODIR, b) end
  end
  if MIG then redis.call('ZREM', K_ORDER1, unpack(ids)) end
end

-- dfix scores bucket b in state st's directory by its lowest score, or
-- takes it out when it is empty.
local function dfix(st, b)
  local first = redis.call('ZRANGE', dkey(st, b), 0, 0, 'WITHSCORES')
  if first[1] then redis.call('ZADD', ddir(st), first[2], b) else redis.call('ZREM', ddir(st), b) end
end

-- dadd puts the record of sequence number seq in state st's index.
local function dadd(st, seq, score)
  local b = bucket(seq)
  if redis.call('ZADD', dkey(st, b), score, seq) == 1 then redis.call('HINCRBY', K_COUNT, st, 1) end
  dfix(st, b)
end

-- drem takes the records of sequence numbers seqs, all of bucket b, out
-- of state st's index, and returns how many were there.
local function drem(st, seqs, b)
  local n = redis.call('ZREM', dkey(st, b), unpack(seqs))
  if n > 0 then redis.call('HINCRBY', K_COUNT, st, -n) end
  dfix(st, b)
  return n
end

-- idof is the id of the record of sequence number seq, in bucket b.
local function idof(seq, b)
  local id = redis.call('ZRANGE', okey(b), seq, seq, 'BYSCORE', 'LIMIT', 0, 1)[1]
  if not id and MIG then id = redis.call('ZRANGE', K_ORDER1, seq, seq, 'BYSCORE', 'LIMIT', 0, 1)[1] end
  return id
end

-- idsof returns idof for the records of bucket b, reading the bucket once:
-- cheaper than idof for more than about 16 records of a bucket.
local function idsof(b)
  local r, m = redis.call('ZRANGE', okey(b), 0, -1, 'WITHSCORES'), {}
  for i = 1, #r, 2 do m[r[i + 1]] = r[i] end
  return function(seq) return m[seq] or (MIG and idof(seq, b)) or nil end
end

-- stamp is an ended record's JSON with its sequence number added last.
local function stamp(rec, seq) return string.sub(rec, 1, -2) .. ',"_seq":' .. seq .. '}' end

-- recseq is the sequence number an ended record of layout 2 carries, and its state.
local function recseq(rec)
  local seq = string.match(rec, ',"_seq":(%d+)}$')
  local st = seq and string.match(rec, '"status":"(%a+)"')
  if st and isdone(st) then return seq, st end
end

local function submittedScore(rec)
  local ok, t = pcall(cjson.decode, rec or '')
  if ok and type(t) == 'table' and type(t.submitted_at) == 'number' and t.submitted_at ~= 0 then
    return string.format('%d', math.floor(t.submitted_at * 1e6 + 0.5))
  end
  return '-inf'
end

-- settle moves an ended record that layout 1 wrote (meta m) to layout 2:
-- out of the meta hash and "status:<state>", into its bucket of
-- "d:<state>", its record stamped. Its order entry stays where it is.
local function settle(id, m)
  local k1 = done1(m.st)
  local score = redis.call('ZSCORE', k1, id)
  redis.call('ZREM', k1, id)
  local rec = redis.call('GET', base .. id)
  if not score or score == 'inf' then score = submittedScore(rec) end
  dadd(m.st, m.seq, score)
  redis.call('HDEL', K_META, id)
  if rec then redis.call('SET', base .. id, stamp(rec, m.seq)) end
end

-- lookup is what the store knows of record id (as parse makes it), nil
-- when it has no record of its own there.
local function lookup(id)
  local m = parse(redis.call('HGET', K_META, id))
  if m and isdone(m.st) then
    settle(id, m)
    m = nil
  end
  if m then return m end
  local rec = redis.call('GET', base .. id)
  if not rec then return nil end
  local seq, st = recseq(rec)
  if not seq then return nil end
  return {st = st, seq = seq, r = false, nb = '', owner = ''}
end

-- written is what a write puts in record id's key: an ended record stamped.
local function written(json, m)
  if isdone(m.st) then return stamp(json, m.seq) end
  return json
end
`

// move2Lua: move is layout 1's move (see moveLua) for layout 2: an ended
// record goes to its bucket of its state's index and out of the meta hash.
const move2Lua = `
local function move(id, old, new, score, now)
  local wasActive, isActive = old ~= nil and active(old.st), active(new.st)
  if wasActive and (not isActive or old.owner ~= new.owner) then
    redis.call('ZREM', K_HELD, old.owner .. '\0' .. id)
  end
  if isActive and not (wasActive and old.owner == new.owner) then
    redis.call('ZADD', K_HELD, 0, new.owner .. '\0' .. id)
  end
  if old ~= nil and isdone(old.st) and old.st ~= new.st then drem(old.st, {old.seq}, bucket(old.seq)) end
  if isdone(new.st) then dadd(new.st, new.seq, score) end
  local wasC, isC = claimable(old), claimable(new)
  if wasC and (not isC or old.nb ~= new.nb) then
    redis.call('ZREM', K_LATER, id)
    redis.call('ZREM', K_READY, id)
  end
  if isC and not (wasC and old.nb == new.nb) then
    if new.nb == '' or (now and tonumber(new.nb) <= tonumber(now)) then
      redis.call('ZADD', K_READY, rank(new.seq, redis.call('HGET', idx .. 'prio', id)), id)
    else
      redis.call('ZADD', K_LATER, new.nb, id)
    end
  end
  if old ~= nil and old.r and not isActive then
    redis.call('HDEL', K_SPEC, id)
    redis.call('HDEL', idx .. 'prio', id)
  end
  if isdone(new.st) then
    redis.call('HDEL', K_META, id)
  else
    redis.call('HSET', K_META, id, encode(new))
  end
end
`

// script2 makes a script of layout 2 of its prelude, the helpers it uses
// and body.
func script2(body string, helpers ...string) *redis.Script {
	return redis.NewScript(prelude2 + strings.Join(helpers, "") + body)
}

// script2Fast is script2 with fast in front of the prelude (see
// fastScript).
func script2Fast(fast, body string, helpers ...string) *redis.Script {
	return redis.NewScript(fast + prelude2 + strings.Join(helpers, "") + body)
}

// byLayout is a script of each layout.
type byLayout struct{ v1, v2 *redis.Script }

// The scripts of both layouts.
var (
	saves    = byLayout{saveScript, save2Script}
	removes  = byLayout{removeScript, remove2Script}
	counts   = byLayout{countScript, count2Script}
	inserts  = byLayout{insertScript, insert2Script}
	updateS  = byLayout{updateScript, update2Script}
	recovers = byLayout{recoverScript, recover2Script}
	losts    = byLayout{lostScript, lost2Script}
	walks    = byLayout{walkScript, walk2Script}
	gathers  = byLayout{gatherScript, gather2Script}
	sweeps   = byLayout{sweepScript, sweep2Script}
	byScores = byLayout{byScoreScript, byScoreLeftScript}
)

// pick is b's script of the layout the Store last found.
func (s *Store) pick(b byLayout) *redis.Script {
	if s.v2.Load() {
		return b.v2
	}
	return b.v1
}

// run runs b's script of the store's layout. When Migrate has moved the
// store to layout 2 since this Store read its layout, a script of layout
// 1 fails (see guardLua); run then reads the layout anew and runs the
// script of layout 2.
func (s *Store) run(ctx context.Context, b byLayout, keys []string, args ...any) *redis.Cmd {
	cmd := s.pick(b).Run(ctx, s.rdb, keys, args...)
	if relayout(cmd.Err()) && s.reload(ctx) {
		cmd = s.pick(b).Run(ctx, s.rdb, keys, args...)
	}
	return cmd
}

// relayout reports whether err is a guard's (see guardLua).
func relayout(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "APCORE_LAYOUT")
}

// reload reads the store's layout anew, and reports whether it is now 2.
func (s *Store) reload(ctx context.Context) bool {
	v, err := s.rdb.Get(ctx, s.base+indexTag+"layout").Result()
	if err == nil && v == "2" {
		s.v2.Store(true)
	}
	return s.v2.Load()
}

// migrateStep is how many records one step of Migrate moves: about 30 µs
// of Redis's time each (BenchmarkMigrate), 2 ms a step.
const migrateStep = 64

// Migrate moves the store under the prefix the options name (WithPrefix,
// WithHashTag) to layout 2, which keeps an ended record in about 60% of
// the memory (see LayoutVersion), and returns once every record is moved. A
// store of layout 2 is left as it is; an empty one, or one without a
// recorded layout, is given layout 2.
//
// Every manager on the store must run a version of this package that
// knows layout 2 (this one or later) before Migrate begins: an earlier
// version refuses the store once it has layout 2, but one already running
// misreads it. Managers of this version go on running meanwhile: Migrate
// records layout 2 first, each of them finds that at its next call and
// goes on in layout 2, which reads and writes both the records Migrate
// has moved and those it has not yet.
//
// Migrate moves 64 records a script, the oldest first, so Redis is never
// busy with it for more than a few milliseconds at a time (about 30 µs a
// record: a million records in about 30 s), and it honours ctx between
// scripts. It may be stopped at any point (ctx
// cancelled, the process killed, Redis unreachable): each script moves
// its records whole, and a later Migrate goes on where it stopped. Until
// it has ended, layout 2 also reads what is left of layout 1's indexes,
// which costs every listing and sweep a little.
func Migrate(ctx context.Context, client redis.UniversalClient, opts ...Option) error {
	s, err := New(client, opts...)
	if err != nil {
		return err
	}
	_, err = s.migrate(ctx, migrateStep, 0)
	return err
}

// migrate runs Migrate's steps of step records, no more than steps of
// them (0: until the end), and reports whether the migration has ended.
func (s *Store) migrate(ctx context.Context, step, steps int) (bool, error) {
	found, err := migrateStartScript.Run(ctx, s.rdb, s.anyKey, s.base).Text()
	if err != nil {
		return false, unavailable("migrate", err)
	}
	if found != "1" && found != "2" {
		le := &LayoutError{Key: s.base + indexTag + "layout", Found: found, Known: LayoutVersion}
		return false, &apcore.Error{Code: apcore.CodeTaskStoreUnavailable, Message: "redisstore.Migrate", Cause: le}
	}
	s.v2.Store(true)
	for i := 0; steps == 0 || i < steps; i++ {
		if err := ctx.Err(); err != nil {
			return false, unavailable("migrate", err)
		}
		n, err := migrateScript.Run(ctx, s.rdb, s.anyKey, s.base, step).Int()
		if err != nil {
			return false, unavailable("migrate", err)
		}
		if n == 1 {
			return true, nil
		}
	}
	return false, nil
}
