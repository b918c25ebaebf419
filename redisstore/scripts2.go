package redisstore

// The scripts of layout 2 (see layout2.go). Each takes the arguments of
// its layout 1 counterpart in scripts.go and page.go and returns what it
// returns; they differ in where they keep an ended record's entries.

// save2Script is saveScript of layout 2.
var save2Script = script2(`
local id = ARGV[2]
local old = lookup(id)
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
  oadd(id, seq)
  new = {st = ARGV[4], seq = seq, r = false, nb = '', owner = ''}
end
move(id, old, new, ARGV[5])
redis.call('SET', KEYS[1], written(ARGV[3], new))
return 1
`, rankLua, move2Lua)

// remove2Script is removeScript of layout 2.
var remove2Script = script2(`
local id = ARGV[2]
local old = lookup(id)
local had = redis.call('DEL', KEYS[1])
if not old then return had end
if active(old.st) then redis.call('ZREM', K_HELD, old.owner .. '\0' .. id) end
if isdone(old.st) then drem(old.st, {old.seq}, bucket(old.seq)) end
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
orem({id}, bucket(old.seq))
return 1
`)

// insert2Script is insertScript of layout 2. The holder of a unique key
// that has no meta entry has ended: its state is its record's.
var insert2Script = script2(`
local id, st, owner, r, nb, p, key = ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[12]), ARGV[11]
if key ~= '' then
  local holder = redis.call('HGET', idx .. 'uniq', key)
  if holder and redis.call('HGET', idx .. 'ukey', holder) == key then
    local hst = string.match(redis.call('HGET', K_META, holder) or '', '^(%a+)|')
    if not hst then
      local _, rst = recseq(redis.call('GET', base .. holder) or '')
      hst = rst
    end
    if hst == 'pending' or hst == 'running' or hst == 'completed' then return holder end
  end
end
if redis.call('ZCARD', K_HELD) >= tonumber(ARGV[9]) then return 0 end
if not redis.call('SET', KEYS[1], ARGV[3], 'NX') then return -1 end
local seq = string.format('%d', redis.call('INCR', K_SEQ))
oadd(id, seq)
if r == 'r' then
  redis.call('HSET', K_SPEC, id, ARGV[8])
  if p ~= 0 then redis.call('HSET', idx .. 'prio', id, ARGV[12]) end
end
if key ~= '' then
  redis.call('HSET', idx .. 'uniq', key, id)
  redis.call('HSET', idx .. 'ukey', id, key)
end
redis.call('ZADD', K_HELD, 0, owner .. '\0' .. id)
if r == 'r' and owner == '' and st == 'pending' then
  if nb == '' or tonumber(nb) <= tonumber(ARGV[10]) then
    redis.call('ZADD', K_READY, string.format('%d', seq - p * 35184372088832), id)
  else
    redis.call('ZADD', K_LATER, nb, id)
  end
end
redis.call('HSET', K_META, id, st .. '|' .. seq .. '|' .. r .. '|' .. nb .. '|' .. owner)
return tonumber(seq)
`)

// update2Script is updateScript of layout 2. Its fast path is a task that
// is active, held by holder and stays so, by the same owner: only its
// meta and its record change.
var update2Script = script2Fast(`
do
  local idx = ARGV[1] .. '_idx:'
  local meta, id, to, owner = idx .. 'meta', ARGV[2], ARGV[4], ARGV[5]
  local m = redis.call('HGET', meta, id)
  local st, seq, r, _, was = string.match(m or '', '^(%a+)|(%d+)|(r?)|(%-?%d*)|(.*)$')
  if (st == 'pending' or st == 'running') and (to == 'pending' or to == 'running') and was == ARGV[8] and was ~= '' and owner == was then
    redis.call('HSET', meta, id, to .. '|' .. seq .. '|' .. r .. '|' .. ARGV[6] .. '|' .. owner)
    redis.call('SET', KEYS[1], ARGV[3])
    return 1
  end
end
`, `
local id = ARGV[2]
local old = lookup(id)
if not old then
  if ARGV[5] == '' or not wiped(ARGV[9]) then return -1 end
  local seq = string.format('%d', redis.call('INCR', K_SEQ))
  oadd(id, seq)
  local new = {st = ARGV[4], seq = seq, r = false, nb = ARGV[6], owner = ARGV[5]}
  move(id, nil, new, ARGV[7])
  redis.call('SET', KEYS[1], written(ARGV[3], new))
  redis.call('ZADD', K_LEASES, 'NX', ARGV[10], ARGV[8])
  return 2
end
if not active(old.st) or old.owner ~= ARGV[8] then return 0 end
local new = {st = ARGV[4], seq = old.seq, r = old.r, nb = ARGV[6], owner = ARGV[5]}
move(id, old, new, ARGV[7], ARGV[11])
redis.call('SET', KEYS[1], written(ARGV[3], new))
return 1
`, rankLua, move2Lua, wipedLua)

// recover2Script is recoverScript of layout 2.
var recover2Script = script2(`
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
        rec = stamp(abandon(rec), old.seq)
        move(id, old, {st = 'failed', seq = old.seq, r = false, nb = old.nb, owner = owner}, now)
      end
      redis.call('SET', base .. id, rec)
    else
      redis.call('ZREM', K_HELD, owner .. '\0' .. id)
    end
  end
end
return n
`, rankLua, move2Lua, ownersLua)

// count2Script is countScript of layout 2: the sizes are in "n", and,
// while a migration runs, in what is left of layout 1's indexes.
var count2Script = script2(`
local function size(field, k1)
  local n = tonumber(redis.call('HGET', K_COUNT, field) or '0')
  if MIG then n = n + redis.call('ZCARD', k1) end
  return n
end
if #ARGV < 2 then return size('all', K_ORDER1) end
local want = {}
for i = 2, #ARGV do want[ARGV[i]] = true end
local n = 0
for _, st in ipairs({'completed', 'failed', 'cancelled'}) do
  if want[st] then n = n + size(st, done1(st)) end
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

// lost2Script is lostScript of layout 2: a record without a meta entry
// that is there has ended.
var lost2Script = script2(`
local owner, out, gone = ARGV[2], {}, nil
for i = 4, #ARGV, 1000 do
  local chunk = {unpack(ARGV, i, math.min(i + 999, #ARGV))}
  local metas = redis.call('HMGET', K_META, unpack(chunk))
  for j, id in ipairs(chunk) do
    local m = parse(metas[j])
    if not m then
      if redis.call('EXISTS', base .. id) == 1 then
        out[#out + 1] = id
      else
        if gone == nil then gone = not wiped(ARGV[3]) end
        if gone then out[#out + 1] = id end
      end
    elseif not active(m.st) or m.owner ~= owner then
      out[#out + 1] = id
    end
  end
end
return out
`, wipedLua)

// walk2Script is walkScript of layout 2, for every record too (state
// ""), with one more ARGV: the most buckets to read. It reads the order
// buckets after the cursor, up to that many and about the given number of
// entries, and, while a migration runs,
// "order" after the cursor, and merges them. A record in a terminal state
// without a meta entry is in that state when its bucket of the state's
// index has its sequence number.
var walk2Script = script2(`
local after, rev, st = ARGV[2], ARGV[3] == 'r', ARGV[4]
local want, budget, maxB = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local cand, horizon = {}, nil
local function beyond(a, b) if rev then return a < b end return a > b end
local lo, hi = after == '' and '-inf' or '(' .. after, '+inf'
if rev then lo, hi = after == '' and '+inf' or '(' .. after, '-inf' end
local from = after == '' and (rev and '+inf' or '-inf') or bucket(after)
local bs
if rev then
  bs = redis.call('ZRANGE', K_ODIR, from, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, maxB)
else
  bs = redis.call('ZRANGE', K_ODIR, from, '+inf', 'BYSCORE', 'LIMIT', 0, maxB)
end
local got, last2 = 0, nil
for i, b in ipairs(bs) do
  local r
  if rev then
    r = redis.call('ZRANGE', okey(b), lo, hi, 'BYSCORE', 'REV', 'WITHSCORES')
  else
    r = redis.call('ZRANGE', okey(b), lo, hi, 'BYSCORE', 'WITHSCORES')
  end
  for j = 1, #r, 2 do
    cand[#cand + 1] = {r[j], tonumber(r[j + 1]), r[j + 1], b}
    last2 = tonumber(r[j + 1])
  end
  got = got + #r / 2
  if got >= budget or i == maxB then
    if i < #bs or i == maxB then horizon = last2 end
    break
  end
end
if MIG then
  local r
  if rev then
    r = redis.call('ZRANGE', K_ORDER1, lo, hi, 'BYSCORE', 'REV', 'LIMIT', 0, budget, 'WITHSCORES')
  else
    r = redis.call('ZRANGE', K_ORDER1, lo, hi, 'BYSCORE', 'LIMIT', 0, budget, 'WITHSCORES')
  end
  for j = 1, #r, 2 do cand[#cand + 1] = {r[j], tonumber(r[j + 1]), r[j + 1], bucket(r[j + 1])} end
  if #r / 2 >= budget then
    local h = tonumber(r[#r])
    if horizon == nil or beyond(horizon, h) then horizon = h end
  end
end
table.sort(cand, function(a, b) if rev then return a[2] > b[2] end return a[2] < b[2] end)
local n = #cand
if horizon ~= nil then
  while n > 0 and beyond(cand[n][2], horizon) do n = n - 1 end
end
local ended = horizon == nil
if n > budget then n, ended = budget, false end
local out = {after, 0}
if n == 0 then out[2] = 1 return out end
local metas
if st ~= '' then
  local ids = {}
  for i = 1, n do ids[i] = cand[i][1] end
  metas = {}
  for i = 1, n, 1000 do
    local part = redis.call('HMGET', K_META, unpack(ids, i, math.min(i + 999, n)))
    for j, m in ipairs(part) do metas[i + j - 1] = m end
  end
end
local found, j = 0, 0
while j < n and found < want do
  j = j + 1
  local c, ok = cand[j], st == ''
  if not ok then
    local m = metas[j]
    if m then
      ok = string.sub(m, 1, #st + 1) == st .. '|'
    elseif isdone(st) then
      ok = redis.call('ZSCORE', dkey(st, c[4]), c[3]) ~= false
    end
  end
  if ok then
    found = found + 1
    out[#out + 1] = c[1]
    out[#out + 1] = c[3]
  end
end
out[1] = cand[j][3]
if j == n and ended then out[2] = 1 end
return out
`)

// gather2Script is gatherScript of layout 2: it reads the state's
// buckets, and, while a migration runs, what is left of its index of
// layout 1.
var gather2Script = script2(`
local st, after, dir, want, most = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
if not isdone(st) then return redis.error_reply('not a terminal state: ' .. st) end
local total = tonumber(redis.call('HGET', K_COUNT, st) or '0')
if MIG then total = total + redis.call('ZCARD', done1(st)) end
if total > most then return -1 end
local found = {}
local function keep(id, s)
  local seq = tonumber(s)
  if not after or (dir == 'r' and seq < after) or (dir ~= 'r' and seq > after) then
    found[#found + 1] = {id, seq, s}
  end
end
for _, b in ipairs(redis.call('ZRANGE', ddir(st), 0, -1)) do
  local seqs = redis.call('ZRANGE', dkey(st, b), 0, -1)
  local idin = #seqs > 16 and idsof(b)
  for _, s in ipairs(seqs) do
    local id = idin and idin(s) or idof(s, b)
    if id then keep(id, s) end
  end
end
if MIG then
  local ids = redis.call('ZRANGE', done1(st), 0, -1)
  if #ids > 0 then
    local metas = redis.call('HMGET', K_META, unpack(ids))
    for j, id in ipairs(ids) do
      local m = parse(metas[j])
      if m and m.st == st then keep(id, m.seq) end
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
  out[#out + 1] = found[i][1]
  out[#out + 1] = found[i][3]
end
return out
`)

// byScore2Script reads one step of a terminal state's index of layout 2
// up to a bound: the buckets in its directory whose lowest score is below
// the bound, by that score. ARGV: prefix, the state, the bucket to go on
// after ("" from the start), its score, how many buckets read have that
// score, the exclusive bound of the score in microseconds ("+inf": none),
// about how many entries to read (it stops after the bucket that reaches
// it), the most buckets to read. When the bucket is gone from the
// directory, it reads on from its score, as many more as were read with
// that score (the caller leaves those out again). Returns 1 when the directory has
// no more buckets below the bound (0 otherwise), how many buckets it
// read, bucket and score of each, then id, score and sequence number (""
// without one) of each entry below the bound of those buckets.
var byScore2Script = script2(`
local k, last, lastScore, ties, want, n = ddir(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[8])
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
local ended = 0
local bs, entries, got = {}, {}, 0
for i = 1, #r / 2 do
  local sc = r[2 * i]
  if not all and sc ~= '-inf' and (sc == 'inf' or not (tonumber(sc) < bound)) then ended = 1 break end
  local b = r[2 * i - 1]
  bs[#bs + 1] = {b, sc}
  local e = redis.call('ZRANGE', dkey(ARGV[2], b), '-inf', max, 'BYSCORE', 'WITHSCORES')
  local idin = #e > 32 and idsof(b)
  for j = 1, #e, 2 do
    local id = idin and idin(e[j]) or idof(e[j], b)
    if id then
      entries[#entries + 1] = id
      entries[#entries + 1] = e[j + 1]
      entries[#entries + 1] = e[j]
    end
  end
  got = got + #e / 2
  if got >= want then break end
end
if ended == 0 and #bs == #r / 2 and #r / 2 < n then ended = 1 end
local out = {ended, #bs}
for _, b in ipairs(bs) do
  out[#out + 1] = b[1]
  out[#out + 1] = b[2]
end
for _, x in ipairs(entries) do out[#out + 1] = x end
return out
`)

// sweep2Script is sweepScript of layout 2, with one more ARGV: the most
// buckets to read. While a migration runs, it first sweeps what is left
// of layout 1's terminal indexes as sweepScript does; then it takes, in
// each terminal state, the bucket whose lowest reference time is lowest
// while that is before the bound, and deletes its records before the
// bound, until it has deleted the given number. It returns how many it
// deleted, as -1 - n when it stopped at the most buckets with more
// expired records left (in a state whose expired records are few to a
// bucket, each bucket costs a script about as much as 10 records).
var sweep2Script = script2(`
local bound, want, rescore = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local states = {'completed', 'failed', 'cancelled'}
local n = 0
local function unique(ids)
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
if MIG then
  for _, st in ipairs(states) do
    local k = done1(st)
    for _, id in ipairs(redis.call('ZRANGE', k, '+inf', '+inf', 'BYSCORE', 'LIMIT', 0, rescore)) do
      redis.call('ZADD', k, 'XX', submittedScore(redis.call('GET', base .. id)), id)
    end
  end
  for _, st in ipairs(states) do
    if n >= want then break end
    local k = done1(st)
    local ids = redis.call('ZRANGE', k, '-inf', '(' .. bound, 'BYSCORE', 'LIMIT', 0, want - n)
    if #ids > 0 then
      n = n + redis.call('ZREM', k, unpack(ids))
      local keys = {}
      for i, id in ipairs(ids) do keys[i] = base .. id end
      redis.call('DEL', unpack(keys))
      redis.call('HDEL', K_META, unpack(ids))
      redis.call('ZREM', K_ORDER1, unpack(ids))
      redis.call('HDEL', idx .. 'prio', unpack(ids))
      unique(ids)
    end
  end
end
local buckets, most = 0, tonumber(ARGV[5])
for _, st in ipairs(states) do
  while n < want do
    local b = redis.call('ZRANGE', ddir(st), '-inf', '(' .. bound, 'BYSCORE', 'LIMIT', 0, 1)[1]
    if not b then break end
    if buckets >= most then return -1 - n end
    buckets = buckets + 1
    local seqs = redis.call('ZRANGE', dkey(st, b), '-inf', '(' .. bound, 'BYSCORE', 'LIMIT', 0, want - n)
    if #seqs == 0 then
      dfix(st, b)
    else
      local ids, keys = {}, {}
      local idin = #seqs > 16 and idsof(b)
      for _, s in ipairs(seqs) do
        local id = idin and idin(s) or idof(s, b)
        if id then
          ids[#ids + 1] = id
          keys[#keys + 1] = base .. id
        end
      end
      n = n + drem(st, seqs, b)
      if #ids > 0 then
        redis.call('DEL', unpack(keys))
        orem(ids, b)
        unique(ids)
      end
    end
  end
end
return n
`)

// migrateStartScript begins Migrate: it records layout 2, and marks the
// store as migrating. ARGV: prefix. Returns the layout found: "2" when
// there was nothing to begin, "1" (or false, none) when it began, and
// anything else unchanged.
var migrateStartScript = script2(`
local l = redis.call('GET', idx .. 'layout')
if l and l ~= '1' then return l end
redis.call('SET', idx .. 'layout', '2')
redis.call('SET', idx .. 'migrating', '1')
return l or '1'
`)

// migrateScript is one step of Migrate. ARGV: prefix, how many records to
// move. It moves the oldest records of layout 1's order index (and, ended,
// of the meta hash and their state's index) to layout 2; once that index is
// empty, it drops what is left of layout 1's terminal indexes (entries of
// records that are not there), the same number at a time, and then ends
// the migration. Returns 1 once the migration has ended, 0 otherwise.
var migrateScript = script2(`
if not MIG then return 1 end
local step = tonumber(ARGV[2])
local r = redis.call('ZRANGE', K_ORDER1, 0, step - 1, 'WITHSCORES')
for i = 1, #r, 2 do
  local id, seq = r[i], r[i + 1]
  local m = parse(redis.call('HGET', K_META, id))
  if m and isdone(m.st) then settle(id, m) end
  redis.call('ZREM', K_ORDER1, id)
  oadd(id, seq)
end
if #r > 0 then return 0 end
for _, st in ipairs({'completed', 'failed', 'cancelled'}) do
  local left = redis.call('ZRANGE', done1(st), 0, step - 1)
  if #left > 0 then
    redis.call('ZREM', done1(st), unpack(left))
    return 0
  end
end
redis.call('DEL', idx .. 'migrating')
return 1
`)
