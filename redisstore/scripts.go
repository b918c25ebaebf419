package redisstore

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// The store's Lua scripts. Redis runs each atomically, so every write
// changes a record and all its index entries in one step, and every
// SharedStore method is one script: one round trip (EVALSHA; go-redis falls
// back to EVAL when the server has not cached the script yet, as after a
// restart or a failover).
//
// Every script declares one key, so that a cluster client sends it to the
// master of the store's slot: the record's key when the script is about one
// record, the order index's otherwise (see Store.recordKeys, Store.anyKey).
// The scripts make the index keys' names from the prefix (ARGV[1]), as they
// make those of the records whose ids they find in the indexes: sending all
// the index keys with every call cost more, in bytes and arguments for
// the server to parse, than making them in Lua. In a Redis Cluster every
// key of the store carries one hash tag, so those keys are in the slot of
// the declared one, which Redis allows.
//
// The meta hash holds, per record, "status|seq|r|not_before|owner": the
// state, the insertion sequence number (the record's score in the order
// index), "r" for a resumable task, NotBefore in Unix microseconds ("" for
// none), and the manager holding it ("" for none; last, so it may hold any
// byte but NUL).
//
// A resumable task that is pending and held by no one (claimable) waits in
// one of two sorted sets: "ready", scored by its rank, when it may run now
// (it has no not_before, or it was due by the clock of the writer that made
// it claimable, or a Claim found it due), or "later", scored by its
// not_before, until a Claim finds it due and moves it to "ready". (Earlier
// versions of the store put every claimable task in "later", those without
// not_before scored -inf; a Claim moves those on too.) A claimable task is
// in exactly one of the two. Its rank is its sequence number less its
// priority times 2^45 (rankLua), so that "ready" pops the highest priority
// first and, within a priority, the oldest first; a task of priority 0 is
// ranked by its sequence number alone, as earlier versions ranked every
// task. The order holds while sequence numbers stay below 2^45 (3.5e13
// inserts), and every rank is an integer a double holds exactly (below
// 2^53). The "prio" hash keeps the priority of each active resumable task
// whose priority is not 0, for the writers that put it in "ready" after
// its Insert (Recover, an Update that hands it back, a Claim that finds
// it due).
//
// A record inserted with a unique key has it in the "ukey" hash (id ->
// key) until the record is deleted, and the "uniq" hash (key -> id) names
// the last record inserted with that key. Insert reads the two and the
// named record's state (three hash lookups whatever the number of
// records): that record holds the key while it is pending, running or
// completed. A failed or cancelled one does not, and a new Insert with
// the key names itself in "uniq"; deleting a record (Remove, Sweep) takes
// it out of "ukey", and out of "uniq" where it is still named there.

// prelude is what every script starts with: the key names and the helpers
// that every writing script uses. A script adds the other helpers it uses
// (see script), as Redis makes each local function of a script anew on
// every call.
const prelude = `
local base = ARGV[1]
local idx = base .. '_idx:'
local K_ORDER, K_SEQ, K_META, K_HELD = idx .. 'order', idx .. 'seq', idx .. 'meta', idx .. 'held'
local K_SPEC, K_LATER, K_READY, K_LEASES = idx .. 'spec', idx .. 'later', idx .. 'ready', idx .. 'leases'

-- done is the index of terminal state st, nil for an active state.
local function done(st)
  if st == 'completed' or st == 'failed' or st == 'cancelled' then return idx .. 'status:' .. st end
end

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
`

// rankLua: rank is a claimable task's score in "ready": its sequence
// number less its priority (nil or false for 0) times 2^45, as an integer.
const rankLua = `
local function rank(seq, p)
  return string.format('%d', tonumber(seq) - (tonumber(p) or 0) * 35184372088832)
end
`

// moveLua: move writes new as the meta of record id and moves it between
// the indexes (old is its meta before, nil for a new record); score is the
// score of a terminal record: its completed_at in microseconds, or +inf.
// now is the writer's clock in microseconds (nil when it has none): a task
// that becomes claimable and is due by it goes to "ready", one that is not
// to "later". A writer's clock may be ahead of a claimer's, so Claim checks
// each task it takes from "ready" against its own now, and puts back in
// "later" one that is not due by it.
const moveLua = `
local function move(id, old, new, score, now)
  local wasActive, isActive = old ~= nil and active(old.st), active(new.st)
  if wasActive and (not isActive or old.owner ~= new.owner) then
    redis.call('ZREM', K_HELD, old.owner .. '\0' .. id)
  end
  if isActive and not (wasActive and old.owner == new.owner) then
    redis.call('ZADD', K_HELD, 0, new.owner .. '\0' .. id)
  end
  if old ~= nil and old.st ~= new.st then
    local k = done(old.st)
    if k then redis.call('ZREM', k, id) end
  end
  local k = done(new.st)
  if k then redis.call('ZADD', k, score, id) end
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
  redis.call('HSET', K_META, id, encode(new))
end
`

// wipedLua: wiped reports whether Redis lost records since this Store saw
// sequence number seen (Redis restarted empty, or was flushed): the
// counter, which only ever grows, is below it.
const wipedLua = `
local function wiped(seen)
  return tonumber(redis.call('GET', K_SEQ) or '0') < tonumber(seen)
end
`

// ownersLua: owners calls fn(owner) for each distinct owner of an active
// record, "" included, skipping from one owner's entries to the next's;
// held returns the ids of the active records owner holds.
const ownersLua = `
local function owners(fn)
  local cursor = '-'
  while true do
    local first = redis.call('ZRANGEBYLEX', K_HELD, cursor, '+', 'LIMIT', 0, 1)[1]
    if not first then return end
    local owner = string.sub(first, 1, string.find(first, '\0', 1, true) - 1)
    cursor = '[' .. owner .. '\1'
    fn(owner)
  end
end

local function held(owner)
  local out = {}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', K_HELD, '[' .. owner .. '\0', '(' .. owner .. '\1')) do
    out[#out + 1] = string.sub(m, #owner + 2)
  end
  return out
end
`

// bySeqLua: bySeq sorts ids into insertion order, dropping those without
// meta.
const bySeqLua = `
local function bySeq(ids)
  local seqs, out = {}, {}
  for i = 1, #ids, 1000 do
    local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
    local metas = redis.call('HMGET', K_META, unpack(chunk))
    for j, id in ipairs(chunk) do
      local m = parse(metas[j])
      if m then
        seqs[id] = tonumber(m.seq)
        out[#out + 1] = id
      end
    end
  end
  table.sort(out, function(a, b) return seqs[a] < seqs[b] end)
  return out
end
`

// guardLua ends a script of layout 1 with an error starting "APCORE_LAYOUT"
// when the store's recorded layout is another one (Migrate has begun to
// move it to layout 2 since the Store read it): the Store then reads the
// layout anew and runs the script of that layout instead (see
// Store.run). Scripts that read and write the same keys in both layouts
// (Claim, Renew, Orphans and the held index's steps) have no guard.
const guardLua = `
do
  local l = redis.call('GET', ARGV[1] .. '_idx:layout')
  if l and l ~= '1' then return redis.error_reply('APCORE_LAYOUT ' .. l) end
end
`

// script makes a script of layout 1 of the guard, the prelude, the
// helpers it uses, and body.
func script(body string, helpers ...string) *redis.Script {
	return redis.NewScript(guardLua + prelude + strings.Join(helpers, "") + body)
}

// anyLayout is script without the guard: a script that does the same in
// both layouts.
func anyLayout(body string, helpers ...string) *redis.Script {
	return redis.NewScript(prelude + strings.Join(helpers, "") + body)
}

// fastScript is script with fast in front of the prelude: a path for the
// common case that returns before Redis makes the prelude's functions and
// key names, which cost as much as the commands of a task's write (about
// 1.5 µs of Redis's CPU a call). It must do exactly what the body does in
// that case.
func fastScript(fast, body string, helpers ...string) *redis.Script {
	return redis.NewScript(guardLua + fast + prelude + strings.Join(helpers, "") + body)
}

// saveScript writes a record (Save, SaveIf). ARGV: prefix, id, json,
// status, done score, mode ("set" or "if"), then for "if" the states the
// stored record must be in. Returns 1 if it wrote.
var saveScript = script(`
local id = ARGV[2]
local old = parse(redis.call('HGET', K_META, id))
if ARGV[6] == 'if' then
  if not old then return 0 end
  local ok = false
  for i = 7, #ARGV do
    if ARGV[i] == old.st then ok = true end
  end
  if not ok then return 0 end
end
local new
if old then
  new = {st = ARGV[4], seq = old.seq, r = old.r, nb = old.nb, owner = old.owner}
else
  local seq = string.format('%d', redis.call('INCR', K_SEQ))
  redis.call('ZADD', K_ORDER, seq, id)
  new = {st = ARGV[4], seq = seq, r = false, nb = '', owner = ''}
end
move(id, old, new, ARGV[5])
redis.call('SET', KEYS[1], ARGV[3])
return 1
`, rankLua, moveLua)

// removeScript deletes a record and its index entries. ARGV: prefix, id.
// Returns 1 if the record was there.
var removeScript = script(`
local id = ARGV[2]
local old = parse(redis.call('HGET', K_META, id))
local had = redis.call('DEL', KEYS[1])
if not old then return had end
if active(old.st) then redis.call('ZREM', K_HELD, old.owner .. '\0' .. id) end
if done(old.st) then redis.call('ZREM', done(old.st), id) end
if claimable(old) then
  redis.call('ZREM', K_LATER, id)
  redis.call('ZREM', K_READY, id)
end
if old.r then
  redis.call('HDEL', K_SPEC, id)
  redis.call('HDEL', idx .. 'prio', id)
end
local key = redis.call('HGET', idx .. 'ukey', id)
if key then
  if redis.call('HGET', idx .. 'uniq', key) == id then redis.call('HDEL', idx .. 'uniq', key) end
  redis.call('HDEL', idx .. 'ukey', id)
end
redis.call('HDEL', K_META, id)
redis.call('ZREM', K_ORDER, id)
return 1
`)

// insertScript is Insert. ARGV: prefix, id, json, status, owner, "r" or "",
// not_before, spec, limit, now in microseconds, unique key ("" for none),
// priority. Returns the new record's sequence number, 0 at the limit, -1
// when the id is taken, and the id of the record that holds the unique
// key (a string) when one does (see the top of this file), before it
// looks at the limit: a duplicate is a duplicate however full the store.
//
// It does what move does for a new record without the prelude (see
// fastScript): a new record is active, so it goes in the held index, and
// a resumable one held by no one waits in "ready" or "later".
var insertScript = redis.NewScript(guardLua + `
local idx = ARGV[1] .. '_idx:'
local held, key = idx .. 'held', ARGV[11]
if key ~= '' then
  local holder = redis.call('HGET', idx .. 'uniq', key)
  if holder and redis.call('HGET', idx .. 'ukey', holder) == key then
    local st = string.match(redis.call('HGET', idx .. 'meta', holder) or '', '^(%a+)|')
    if st == 'pending' or st == 'running' or st == 'completed' then return holder end
  end
end
if redis.call('ZCARD', held) >= tonumber(ARGV[9]) then return 0 end
if not redis.call('SET', KEYS[1], ARGV[3], 'NX') then return -1 end
local id, st, owner, r, nb, p = ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[12])
local seq = string.format('%d', redis.call('INCR', idx .. 'seq'))
redis.call('ZADD', idx .. 'order', seq, id)
if r == 'r' then
  redis.call('HSET', idx .. 'spec', id, ARGV[8])
  if p ~= 0 then redis.call('HSET', idx .. 'prio', id, ARGV[12]) end
end
if key ~= '' then
  redis.call('HSET', idx .. 'uniq', key, id)
  redis.call('HSET', idx .. 'ukey', id, key)
end
redis.call('ZADD', held, 0, owner .. '\0' .. id)
if r == 'r' and owner == '' and st == 'pending' then
  if nb == '' or tonumber(nb) <= tonumber(ARGV[10]) then
    redis.call('ZADD', idx .. 'ready', string.format('%d', seq - p * 35184372088832), id)
  else
    redis.call('ZADD', idx .. 'later', nb, id)
  end
end
redis.call('HSET', idx .. 'meta', id, st .. '|' .. seq .. '|' .. r .. '|' .. nb .. '|' .. owner)
return tonumber(seq)
`)

// updateScript is Update. ARGV: prefix, id, json, status, owner, not_before,
// done score, holder, the highest sequence number this Store saw, the end of
// a lease made anew (µs), now (µs). Returns 1 if it wrote, 0 if the record is not
// active and held by holder, and -1 if it is absent.
//
// A record that is absent because Redis lost its data (see wiped) is
// written anew, as a new record held by holder, with holder's lease if
// that was lost too: the holder's record is the best account of the task
// left. A resumable task handed back (no owner) is not, as its inputs are
// gone.
//
// The fast path is a task that is active and held by holder, and by
// someone (so not claimable, before or after), that stays held by the same
// owner while active, or ends: only its meta, its record, and on its end
// the held index, its terminal state's index and its spec change.
var updateScript = fastScript(`
do
  local idx = ARGV[1] .. '_idx:'
  local meta, id, to, owner = idx .. 'meta', ARGV[2], ARGV[4], ARGV[5]
  local m = redis.call('HGET', meta, id)
  local st, seq, r, _, was = string.match(m or '', '^(%a+)|(%d+)|(r?)|(%-?%d*)|(.*)$')
  if (st == 'pending' or st == 'running') and was == ARGV[8] and was ~= '' then
    local ends = to == 'completed' or to == 'failed' or to == 'cancelled'
    if ends or owner == was then
      if ends then
        redis.call('ZREM', idx .. 'held', was .. '\0' .. id)
        redis.call('ZADD', idx .. 'status:' .. to, ARGV[7], id)
        if r == 'r' then
          redis.call('HDEL', idx .. 'spec', id)
          redis.call('HDEL', idx .. 'prio', id)
        end
      end
      redis.call('HSET', meta, id, to .. '|' .. seq .. '|' .. r .. '|' .. ARGV[6] .. '|' .. owner)
      redis.call('SET', KEYS[1], ARGV[3])
      return 1
    end
  end
end
`, `
local id = ARGV[2]
local old = parse(redis.call('HGET', K_META, id))
if not old then
  if ARGV[5] == '' or not wiped(ARGV[9]) then return -1 end
  local seq = string.format('%d', redis.call('INCR', K_SEQ))
  redis.call('ZADD', K_ORDER, seq, id)
  move(id, nil, {st = ARGV[4], seq = seq, r = false, nb = ARGV[6], owner = ARGV[5]}, ARGV[7])
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('ZADD', K_LEASES, 'NX', ARGV[10], ARGV[8])
  return 2
end
if not active(old.st) or old.owner ~= ARGV[8] then return 0 end
move(id, old, {st = ARGV[4], seq = old.seq, r = old.r, nb = ARGV[6], owner = ARGV[5]}, ARGV[7], ARGV[11])
redis.call('SET', KEYS[1], ARGV[3])
return 1
`, rankLua, moveLua, wipedLua)

// claimScript is Claim. ARGV: prefix, owner, n, now in microseconds, now as
// the wire format's seconds, the most due tasks to move from "later"; for
// a Claim limited to some modules, then "1", the most ids of "ready" to
// look at, and the module ids. Returns, per claimed task, its record, its
// spec, its not_before and its sequence number. An owner without a live
// lease claims nothing.
//
// A Claim first moves the due tasks from "later" to "ready" (see the top of
// this file), ranked by their priority, then pops the first from "ready":
// the highest priority, and within it the oldest. Tasks not yet due cost
// it nothing: "later" is read by score up to now, O(log N) however many
// wait. It moves no more than the given number of due tasks, the ones
// due first, so that a million tasks falling due at once are moved by many
// Claims, each a few milliseconds of Redis's time, rather than by one that
// stops Redis for seconds; until then a task due later than that many
// others waits in "later" even if its priority is higher than what the
// Claim takes from "ready". A claimed record changes by
// two substitutions in its JSON, made on the first match: the status (the
// first "status" key of the record is its own: the ids before it are JSON
// strings, in which every quote is escaped) and an unset started_at, which
// comes before the result. A claimable task is held by "" and is in no
// terminal index, and the one it was popped from is the only one of "later"
// and "ready" it was in, so the claim moves it by hand rather than by move,
// without the prelude (see fastScript).
// A task in "ready" that is not due by this Claim's now (its writer's clock
// was ahead) goes back to "later"; so a Claim's work grows with what it
// takes, not with what waits.
//
// A Claim limited to some modules walks "ready" in its order instead of
// popping it, in pages, and takes a task only if its record's module_id
// (the record decoded by cjson, so that any JSON escaping of the id
// matches) is one of them; a task of another module stays in "ready" for
// the managers that run it. It looks at no more than the given number of
// ids, however many wait: past that many tasks of other modules at the
// head of "ready", it takes nothing until their managers have taken some.
var claimScript = redis.NewScript(`
local base, owner, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
if n <= 0 then return {} end
local idx = base .. '_idx:'
local lease = redis.call('ZSCORE', idx .. 'leases', owner)
if not lease or tonumber(lease) < tonumber(ARGV[4]) then return {} end -- no live lease: no claim
local meta, held, later, ready = idx .. 'meta', idx .. 'held', idx .. 'later', idx .. 'ready'
local META = '^(%a+)|(%d+)|(r?)|(%-?%d*)|(.*)$' -- see parse
local due = redis.call('ZRANGEBYSCORE', later, '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[6]))
for i = 1, #due, 1000 do
  local chunk = {unpack(due, i, math.min(i + 999, #due))}
  local metas = redis.call('HMGET', meta, unpack(chunk))
  local prios = redis.call('HMGET', idx .. 'prio', unpack(chunk))
  local args = {}
  for j, id in ipairs(chunk) do
    local st, seq, r, _, by = string.match(metas[j] or '', META)
    if st == 'pending' and r == 'r' and by == '' then -- claimable
      args[#args + 1] = string.format('%d', tonumber(seq) - (tonumber(prios[j]) or 0) * 35184372088832) -- see rankLua
      args[#args + 1] = id
    end
  end
  if #args > 0 then redis.call('ZADD', ready, unpack(args)) end
  redis.call('ZREM', later, unpack(chunk))
end
local now, out = tonumber(ARGV[4]), {}
local function take(id, seq, nb, rec)
  rec = string.gsub(rec, '"status":"pending"', '"status":"running"', 1)
  rec = string.gsub(rec, '"started_at":null', '"started_at":' .. ARGV[5], 1)
  redis.call('SET', base .. id, rec)
  redis.call('ZREM', held, '\0' .. id)
  redis.call('ZADD', held, 0, owner .. '\0' .. id)
  redis.call('HSET', meta, id, 'running|' .. seq .. '|r|' .. nb .. '|' .. owner)
  out[#out + 1] = {rec, redis.call('HGET', idx .. 'spec', id) or '', nb, seq}
end
if ARGV[7] == '1' then -- only tasks of the modules ARGV[9] on
  local want = {}
  for i = 9, #ARGV do want[ARGV[i]] = true end
  local bound, looked, from = tonumber(ARGV[8]), 0, '-inf'
  while #out < n and looked < bound do
    local size = math.min(bound - looked, math.max(2 * (n - #out), 32))
    local page = redis.call('ZRANGEBYSCORE', ready, from, '+inf', 'WITHSCORES', 'LIMIT', 0, size)
    for i = 1, #page, 2 do
      if #out >= n then break end
      local id = page[i]
      looked, from = looked + 1, '(' .. page[i + 1]
      local st, seq, r, nb, by = string.match(redis.call('HGET', meta, id) or '', META)
      local rec = st == 'pending' and r == 'r' and by == '' and redis.call('GET', base .. id)
      if not rec then -- not claimable any more: out of "ready", as a pop would take it
        redis.call('ZREM', ready, id)
      elseif nb ~= '' and tonumber(nb) > now then -- due by its writer's clock, not by this one
        redis.call('ZREM', ready, id)
        redis.call('ZADD', later, nb, id)
      else
        local ok, t = pcall(cjson.decode, rec)
        if ok and type(t) == 'table' and type(t.module_id) == 'string' and want[t.module_id] then
          redis.call('ZREM', ready, id)
          take(id, seq, nb, rec)
        end
      end
    end
    if #page < 2 * size then break end -- the end of "ready"
  end
  return out
end
while #out < n do
  local want = n - #out
  local popped = redis.call('ZPOPMIN', ready, want)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local st, seq, r, nb, by = string.match(redis.call('HGET', meta, id) or '', META)
    local rec = st == 'pending' and r == 'r' and by == '' and redis.call('GET', base .. id)
    if rec and nb ~= '' and tonumber(nb) > now then -- due by its writer's clock, not by this one
      redis.call('ZADD', later, nb, id)
      rec = nil
    end
    if rec then take(id, seq, nb, rec) end
  end
  if #popped < 2 * want then break end -- "ready" is empty
end
return out
`)

// renewScript is Renew. ARGV: prefix, owner, expires in microseconds, "1"
// to create, the highest sequence number this Store saw. A lease that is
// gone because Redis lost its data (see wiped) is made anew.
var renewScript = anyLayout(`
if ARGV[4] ~= '1' and not redis.call('ZSCORE', K_LEASES, ARGV[2]) and not wiped(ARGV[5]) then return 0 end
redis.call('ZADD', K_LEASES, ARGV[3], ARGV[2])
return 1
`, wipedLua)

// abandonLua: abandon is an abandoned record written anew from its
// decoded fields, numbers in their shortest exact form (as Go writes
// them), without its result: an active record has none. ARGV[3] is now as
// the wire format's seconds, ARGV[4] the error as a JSON string.
const abandonLua = `
local function num(x)
  if x == math.floor(x) and math.abs(x) < 1e15 then return string.format('%d', x) end
  for p = 15, 16 do
    local s = string.format('%.' .. p .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end
local function opt(x)
  if type(x) ~= 'number' then return 'null' end
  return num(x)
end
local function str(x)
  if type(x) ~= 'string' then return '""' end
  return cjson.encode(x)
end
local function abandon(rec)
  local t = cjson.decode(rec)
  local out = '{"task_id":' .. str(t.task_id) .. ',"module_id":' .. str(t.module_id) ..
    ',"status":"failed","submitted_at":' .. opt(t.submitted_at) .. ',"started_at":' .. opt(t.started_at) ..
    ',"completed_at":' .. ARGV[3] .. ',"result":null,"error":' .. ARGV[4] ..
    ',"retry_count":' .. opt(t.retry_count) .. ',"max_retries":' .. opt(t.max_retries) ..
    ',"error_code":"TASK_ABANDONED"'
  if type(t.progress) == 'number' and t.progress ~= 0 then out = out .. ',"progress":' .. num(t.progress) end
  if type(t.progress_message) == 'string' and t.progress_message ~= '' then
    out = out .. ',"progress_message":' .. str(t.progress_message)
  end
  if type(t.run_at) == 'number' then out = out .. ',"run_at":' .. num(t.run_at) end
  if type(t.unique_key) == 'string' and t.unique_key ~= '' then out = out .. ',"unique_key":' .. str(t.unique_key) end
  if type(t.priority) == 'number' and t.priority ~= 0 then out = out .. ',"priority":' .. num(t.priority) end
  return out .. '}'
end
`

// recoverScript is Recover. ARGV: prefix, now in microseconds, now as the
// wire format's seconds, the abandoned record's error as a JSON string.
// Returns how many records it changed.
//
// A resumable record goes back to pending by a substitution (see
// claimScript); an abandoned one is written anew from its decoded fields,
// numbers in their shortest exact form (as Go writes them), without its
// result: an active record has none.
var recoverScript = script(`
local now = ARGV[2]
redis.call('ZREMRANGEBYSCORE', K_LEASES, '-inf', '(' .. now)

`+abandonLua+`
local dead = {}
owners(function(owner)
  if owner ~= '' and not redis.call('ZSCORE', K_LEASES, owner) then dead[#dead + 1] = owner end
end)
local n = 0
for _, owner in ipairs(dead) do
  for _, id in ipairs(held(owner)) do
    local old = parse(redis.call('HGET', K_META, id))
    local rec = redis.call('GET', base .. id)
    if old and active(old.st) and rec then
      n = n + 1
      if old.r then
        rec = string.gsub(rec, '"status":"running"', '"status":"pending"', 1)
        move(id, old, {st = 'pending', seq = old.seq, r = true, nb = old.nb, owner = ''}, '', now)
      else
        rec = abandon(rec)
        move(id, old, {st = 'failed', seq = old.seq, r = false, nb = old.nb, owner = owner}, now)
      end
      redis.call('SET', base .. id, rec)
    else
      redis.call('ZREM', K_HELD, owner .. '\0' .. id)
    end
  end
end
return n
`, rankLua, moveLua, ownersLua)

// orphansScript is Orphans. ARGV: prefix, self ("" for a manager that has
// ended its lease), now in microseconds. Returns the records, in insertion
// order.
var orphansScript = anyLayout(`
local self, now = ARGV[2], tonumber(ARGV[3])
local others = false
for _, o in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, ARGV[3], '+inf', 'LIMIT', 0, 2)) do
  if o ~= self then others = true end
end
local ids = {}
owners(function(owner)
  if owner == self and self ~= '' then return end
  local orphaned
  if owner == '' then
    orphaned = not others
  else
    local until_ = redis.call('ZSCORE', K_LEASES, owner)
    orphaned = not until_ or tonumber(until_) < now
  end
  if orphaned then
    for _, id in ipairs(held(owner)) do
      -- held by no one and due later: it waits for whoever runs then
      local m = owner == '' and parse(redis.call('HGET', K_META, id))
      local nb = m and tonumber(m.nb)
      if not nb or nb <= now then ids[#ids + 1] = id end
    end
  end
end)
local out = {}
for _, id in ipairs(bySeq(ids)) do
  local rec = redis.call('GET', base .. id)
  if rec then out[#out + 1] = rec end
end
return out
`, ownersLua, bySeqLua)

// countScript counts the records in the states given (ARGV[2:]), each
// once; with none it counts every record.
var countScript = script(`
if #ARGV < 2 then return redis.call('ZCARD', K_ORDER) end
local want = {}
for i = 2, #ARGV do want[ARGV[i]] = true end
local n = 0
for _, st in ipairs({'completed', 'failed', 'cancelled'}) do
  if want[st] then n = n + redis.call('ZCARD', done(st)) end
end
if want.pending and want.running then
  n = n + redis.call('ZCARD', K_HELD)
elseif want.pending or want.running then
  local all = redis.call('ZRANGE', K_HELD, 0, -1)
  for i = 1, #all, 1000 do
    local chunk = {}
    for j = i, math.min(i + 999, #all) do
      local m = all[j]
      chunk[#chunk + 1] = string.sub(m, string.find(m, '\0', 1, true) + 1)
    end
    for _, meta in ipairs(redis.call('HMGET', K_META, unpack(chunk))) do
      local m = parse(meta)
      if m and want[m.st] then n = n + 1 end
    end
  end
end
return n
`)

// lostScript is Lost. ARGV: prefix, owner, the highest sequence number
// this Store saw, ids. Returns the ids that owner no longer holds while
// active. An absent record is not lost when Redis lost it (see wiped): its
// holder still has it, and its next Update writes it anew.
var lostScript = script(`
local owner, out, gone = ARGV[2], {}, nil
for i = 4, #ARGV, 1000 do
  local chunk = {unpack(ARGV, i, math.min(i + 999, #ARGV))}
  local metas = redis.call('HMGET', K_META, unpack(chunk))
  for j, id in ipairs(chunk) do
    local m = parse(metas[j])
    if not m then
      if gone == nil then gone = not wiped(ARGV[3]) end
      if gone then out[#out + 1] = id end
    elseif not active(m.st) or m.owner ~= owner then
      out[#out + 1] = id
    end
  end
end
return out
`, wipedLua)
