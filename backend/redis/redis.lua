-- redis.lua - every lock decision of the Redis backend, run atomically on
-- the server.  It is built into the daemon as a C string (backend/
-- meson.build), and backend/redis/conn.c, on Redis >= 7, loads it once as
-- a function library (FUNCTION LOAD, then one FCALL per request): the
-- helpers below are then created once, not on every call.  On an older
-- server (or where FUNCTION LOAD is refused) the same text runs as a
-- script with EVALSHA; its last lines tell the two apart.  Either way one
-- entry point, dispatched on ARGV[1].
--
-- Owns every rule about the records kept in Redis; it knows nothing of a
-- daemon's own tables (the C side keeps those from its replies and from
-- what it publishes).
-- Locking: none of its own - Redis runs each call alone, so every call
-- sees and leaves one consistent state; no state survives a call except
-- the keys.
--
-- Keys (P = prefix, [A-Za-z0-9_.-] only; R = the resource's raw bytes,
-- always last, so no two (kind, resource) pairs share a key):
--   KEYS[1] = P:g:R  hash: the holders; field HOLDER = SPACE..LEASE..'/'..
--                    OWNER (34 bytes), value 'TOKEN N': the token of its
--                    newest grant (no range of it has a newer one) and its
--                    number of ranges, N > 0
--   P:o:HOLDER:R     sorted set: the holder's N ranges, all of score 0,
--                    member T..S..' '..E..' '..TOKEN..' '..SINCE..' '..PID,
--                    so lexical order is by type, then start.  A holder's
--                    ranges are disjoint
--   KEYS[2] = P:w:R  hash: queued requests; field LEASE..'/'..WAITID,
--                    value 'SEQ SPACE T S E OWNER PID SINCE MODE'
--   KEYS[3] = P:d:R  lock-delay: no grant before this server time (ms)
--   P:leases         hash LEASE -> expiry (server ms)
--   P:hosts          hash LEASE -> host id
--   P:token, P:seq   counters: fencing tokens (strictly growing, hence per
--                    resource too) and FIFO arrival order
--   P:l:LEASE        set 'SPACE OWNER RESOURCE': locks of LEASE broken by an
--                    administrator, until its next renewal reads them
--   P:x:LEASE        hash WAITID -> token: grants made to a queued request
--                    (read by the safety re-check and by cancel)
--   P:v:R            hash: the resource's content version (optimistic
--                    concurrency), apart from its locks: n = version (from
--                    1; no key: never bumped, 0), h = host id of the last
--                    bump, t = its server time (ms).  Only version and
--                    bump touch it (their KEYS[1]); no purge, break, drop
--                    or lease expiry ever does, and list() SCANs P:g:*
--                    only
--   channel P:inc:LEASE  'G WAITID TOKEN' (granted), 'W WAITID' (retry),
--                    'L SPACE OWNER RESOURCE' (broken by an administrator)
--                    or 'P SRC SEQ RESOURCE' (poked: another daemon asks
--                    for the resource back; SRC SEQ, 16 hex each, name the
--                    poke, the same on every Redlock node, so a daemon
--                    told by several nodes can tell it once)
--
-- Offsets are 16-digit lower-case hex strings: string order is numeric
-- order and every uint64 (DL_RANGE_EOF = ffff...) is exact, which Lua's
-- doubles are not.  The range rules are those of backend/range.c.
--
-- Common ARGV: [1] op, [2] P, [3] caller's LEASE (16 hex; version and
-- bump need none), [4] ttl ms, [5] lock-delay ms.  Replies are arrays;
-- see each op.
--
-- Cost: a request reads its resource's holders and queue hashes (one
-- field per holder and per waiter, never a list of ranges), the leases of
-- the records found there (one HMGET, the caller's included) and, when it
-- may grant, the lock-delay key.  Ranges are searched, never scanned: a
-- conflict check asks each other holder of the space for its first range
-- over the request (ZRANGEBYLEX, O(log n)), a lock or unlock reads and
-- rewrites only the caller's ranges next to or over its bytes.  So a call
-- costs O(holders * log n + k) for n ranges on the file of which it
-- changes k; only list(), break and a release read every range they
-- return or remove.  It publishes only to a waiter it serves, to the
-- owners of what break removes and to the holders a poke names.  The state
-- below is per call: dispatch() resets every piece of it first, so nothing
-- leaks from one call to the next when the library stays loaded.

-- run by EVALSHA, the script gets its arguments as globals; a function
-- gets them as parameters of each call
local EVAL_KEYS, EVAL_ARGV
if not redis.register_function then EVAL_KEYS, EVAL_ARGV = KEYS, ARGV end

local KEYS, ARGV -- of the current call
local P, ME, TTL, DELAY, NOW, LEASES, HOSTS, RES
local ZERO = '0000000000000000'
local MAX = 'ffffffffffffffff'
local BATCH = 1000 -- members per ZADD/ZREM: unpack() has a stack limit
local SMALL = 8 -- a holder with at most this many ranges is read whole

-- ---------------------------------------------------------------- hex
local function hdec(x) -- x - 1, x > 0
	local hi = tonumber(string.sub(x, 1, 8), 16)
	local lo = tonumber(string.sub(x, 9, 16), 16)
	if lo == 0 then hi = hi - 1; lo = 4294967295 else lo = lo - 1 end
	return string.format('%08x%08x', hi, lo)
end

local function hinc(x) -- x + 1, x < ffff...
	local hi = tonumber(string.sub(x, 1, 8), 16)
	local lo = tonumber(string.sub(x, 9, 16), 16)
	if lo == 4294967295 then hi = hi + 1; lo = 0 else lo = lo + 1 end
	return string.format('%08x%08x', hi, lo)
end

local function overlap(s1, e1, s2, e2) return s1 <= e2 and s2 <= e1 end

-- ---------------------------------------------------------------- ranges
-- A range: { t, s, e, tok, since, pid, m = its member string }.
local function mk(t, s, e, tok, since, pid)
	tok, since, pid = tostring(tok), tostring(since), tostring(pid)
	return { t = t, s = s, e = e, tok = tok, since = since, pid = pid,
		 m = t .. s .. ' ' .. e .. ' ' .. tok .. ' ' .. since .. ' ' ..
			 pid }
end

local function unm(m)
	local t, s, e, tok, since, pid = string.match(m,
		'^(%a)(%x+) (%x+) (%d+) (%d+) (%d+)$')
	return { t = t, s = s, e = e, tok = tok, since = since, pid = pid,
		 m = m }
end

local function by_start(x, y) return x.s < y.s end

-- the holder's sorted set
local function okey(f) return P .. ':o:' .. f .. ':' .. RES end

-- the holder's range of type @t with the greatest start < @s, or nil
local function pred(k, t, s)
	if s == ZERO then return nil end
	local r = redis.call('ZREVRANGEBYLEX', k, '(' .. t .. s, '[' .. t,
			     'LIMIT', 0, 1)
	return r[1] and unm(r[1])
end

-- the holder's ranges of type @t starting in [a, b] (b nil: to EOF) in
-- order, at most @lim of them (nil: all)
local function from(k, t, a, b, lim)
	local hi = '(' .. t .. (b or '') .. '~' -- '~' sorts after the rest
	local r
	if lim then
		r = redis.call('ZRANGEBYLEX', k, '[' .. t .. a, hi, 'LIMIT', 0,
			       lim)
	else
		r = redis.call('ZRANGEBYLEX', k, '[' .. t .. a, hi)
	end
	for i = 1, #r do r[i] = unm(r[i]) end
	return r
end

-- the ranges of holder key @k (@n of them) that overlap [s, e] (@touch:
-- or are next to it), in order: a range starting before s is the one
-- before s of its type.  A small holder is read whole (one call).
local function around(k, n, s, e, touch)
	local v, lo, hi = {}, s, e
	if touch then
		if e ~= MAX then hi = hinc(e) end
		if s ~= ZERO then lo = hdec(s) end
	end
	if n == 0 then return v end
	if n <= SMALL then
		for _, m in ipairs(redis.call('ZRANGE', k, 0, -1)) do
			local l = unm(m)
			if l.e >= lo and l.s <= hi then v[#v + 1] = l end
		end
	else
		if touch and e == MAX then hi = nil end
		for _, t in ipairs({ 'R', 'W' }) do
			local l = pred(k, t, s)
			if l and l.e >= lo then v[#v + 1] = l end
			for _, x in ipairs(from(k, t, s, hi)) do v[#v + 1] = x end
		end
	end
	table.sort(v, by_start)
	return v
end

-- ZADD or ZREM members @v of @k; returns how many were added or removed
local function zbatch(cmd, k, v)
	local done = 0
	for i = 1, #v, BATCH do
		local args = {}
		for j = i, math.min(i + BATCH - 1, #v) do
			if cmd == 'ZADD' then args[#args + 1] = 0 end
			args[#args + 1] = v[j]
		end
		done = done + redis.call(cmd, k, unpack(args))
	end
	return done
end

-- ---------------------------------------------------------------- state
-- Per call: G: holder -> 'TOKEN N' (KEYS[1]); W: field -> raw value of
-- KEYS[2]; DLY: the end of the lock-delay (server ms, 0 none) once read;
-- PURGED: records of dead leases were removed by this call.
local G, W, DLY, PURGED

local function hash_load(key)
	local h, r = {}, redis.call('HGETALL', key)
	for i = 1, #r, 2 do h[r[i]] = r[i + 1] end
	return h
end

local function lease_of_g(f) return string.sub(f, 2, 17) end
local function lease_of_w(f) return string.sub(f, 1, 16) end

local function alive(lease)
	local x = redis.call('HGET', LEASES, lease)
	return x and tonumber(x) > NOW
end

local function delay_end()
	if not DLY then DLY = tonumber(redis.call('GET', KEYS[3]) or '0') end
	return DLY
end

local function delayed() return delay_end() > NOW end

-- the holder @f gives up every range
local function drop(f)
	redis.call('DEL', okey(f))
	redis.call('HDEL', KEYS[1], f)
	G[f] = nil
end

-- holder @f's newest token and number of ranges (0, 0: not a holder)
local function held(f)
	local tok, n = string.match(G[f] or '', '^(%d+) (%d+)$')
	if not tok then return 0, 0 end
	return tonumber(tok), tonumber(n)
end

-- holder @f gained @add and lost @rem ranges, the newest now @tok (at
-- least); no ranges, no holder (ZREM deleted the emptied key)
local function count(f, add, rem, tok)
	local t, n = held(f)
	n = n + add - rem
	if tok and tonumber(tok) > t then t = tonumber(tok) end
	if n <= 0 then
		if G[f] then redis.call('HDEL', KEYS[1], f) end
		G[f] = nil
	elseif add ~= rem or t ~= held(f) then
		G[f] = string.format('%d %d', t, n)
		redis.call('HSET', KEYS[1], f, G[f])
	end
end

-- Load the resource's records and drop those of dead leases; a lock freed
-- by a lease expiry (not a release) keeps the resource unavailable until
-- expiry + lock-delay, so a frozen holder learns of its loss first.  With
-- @me, the caller's own lease is read in the same HMGET: false (nothing
-- written) when it is gone.
local function load_and_purge(me)
	G = hash_load(KEYS[1])
	W = hash_load(KEYS[2])
	local seen, leases = {}, {}
	if me then seen[ME] = true; leases[1] = ME end
	for f in pairs(G) do
		local l = lease_of_g(f)
		if not seen[l] then seen[l] = true; leases[#leases + 1] = l end
	end
	for f in pairs(W) do
		local l = lease_of_w(f)
		if not seen[l] then seen[l] = true; leases[#leases + 1] = l end
	end
	if #leases == 0 then return true end
	local exp = redis.call('HMGET', LEASES, unpack(leases))
	local dead, ndead, untilms = {}, 0, 0
	for i = 1, #leases do
		local x = exp[i] and tonumber(exp[i])
		if not x or x <= NOW then
			if me and i == 1 then return false end
			dead[leases[i]] = x or 0
			ndead = ndead + 1
		end
	end
	if ndead == 0 then return true end
	PURGED = true
	local gone = {}
	for f in pairs(G) do
		local x = dead[lease_of_g(f)]
		if x then
			gone[#gone + 1] = f
			if x > 0 and x + DELAY > untilms then untilms = x + DELAY end
		end
	end
	for _, f in ipairs(gone) do drop(f) end
	gone = {}
	for f in pairs(W) do
		if dead[lease_of_w(f)] then gone[#gone + 1] = f end
	end
	for _, f in ipairs(gone) do
		redis.call('HDEL', KEYS[2], f)
		W[f] = nil
	end
	if untilms > NOW and untilms > delay_end() then
		redis.call('SET', KEYS[3], untilms, 'PX', untilms - NOW)
		DLY = untilms
	end
	return true
end

-- the granted lock of another owner in @space that blocks (t, s, e), the
-- one with the lowest start; returns holder, range.  Each other holder is
-- asked for its first range over [s, e] of each blocking type: a read
-- request is blocked by write locks only.
local function conflict(space, oid, t, s, e)
	local bf, bl = nil, nil
	local types = t == 'W' and { 'R', 'W' } or { 'W' }
	local function consider(f, l)
		if l and (l.t == 'W' or t == 'W') and overlap(l.s, l.e, s, e) and
		   (not bl or l.s < bl.s) then
			bf, bl = f, l
		end
	end
	for f in pairs(G) do
		if string.sub(f, 1, 1) == space and string.sub(f, 2) ~= oid then
			local k = okey(f)
			local _, n = held(f)
			if n <= SMALL then
				for _, m in ipairs(redis.call('ZRANGE', k, 0, -1)) do
					consider(f, unm(m))
				end
			else
				for _, ty in ipairs(types) do
					local l = pred(k, ty, s)
					if not (l and l.e >= s) then
						l = from(k, ty, s, e, 1)[1]
					end
					consider(f, l)
				end
			end
		end
	end
	return bf, bl
end

-- range.c's range_set_apply() on holder @f's ranges: lock [s, e] as @t
-- ('R'/'W') with token @tok.  Reads and rewrites only the holder's ranges
-- next to or over [s, e] (the "run"): same-type ones merge into the new
-- range, a different-type one is cut back to the bytes outside [s, e].
-- Returns the undo record 'LO HI;M;M...' (the span [LO, HI] the run and
-- the new range cover, and the run's members: restoring them over that
-- span restores the holder) and whether a write lock of @f became a read
-- lock, freeing bytes for other readers.
local function lock_range(f, t, s, e, tok, pid)
	local k = okey(f)
	local _, n = held(f)
	local run = around(k, n, s, e, true)
	local ms, me, lo, hi = s, e, s, e
	local rem, add, freed = {}, {}, false
	for i, l in ipairs(run) do
		rem[#rem + 1] = l.m
		if l.s < lo then lo = l.s end
		if l.e > hi then hi = l.e end
		if l.t == t then
			if l.s < ms then ms = l.s end
			if l.e > me then me = l.e end
		else
			if l.t == 'W' and overlap(l.s, l.e, s, e) then
				freed = true
			end
			if i == 1 and l.s < s then -- l.s < s, so s > 0
				local x = hdec(s)
				if l.e < x then x = l.e end
				add[#add + 1] = mk(l.t, l.s, x, l.tok, l.since,
						   l.pid).m
			end
		end
	end
	add[#add + 1] = mk(t, ms, me, tok, NOW, pid).m
	local l = run[#run]
	if l and l.t ~= t and l.e > e then -- e < l.e, so e + 1 exists
		local x = hinc(e)
		if l.s > x then x = l.s end
		add[#add + 1] = mk(l.t, x, l.e, l.tok, l.since, l.pid).m
	end
	local nrem = zbatch('ZREM', k, rem)
	count(f, zbatch('ZADD', k, add), nrem, tok)
	rem[0] = lo .. ' ' .. hi
	return table.concat(rem, ';', 0), freed
end

-- unlock [s, e] of holder @f: only pieces granted with a token <= @max
-- (nil: all); returns whether anything was unlocked
local function unlock_range(f, s, e, max)
	local k = okey(f)
	local _, n = held(f)
	local rem, add = {}, {}
	for _, l in ipairs(around(k, n, s, e, false)) do
		if not max or tonumber(l.tok) <= max then
			rem[#rem + 1] = l.m
			if l.s < s then
				add[#add + 1] = mk(l.t, l.s, hdec(s), l.tok,
						   l.since, l.pid).m
			end
			if l.e > e then
				add[#add + 1] = mk(l.t, hinc(e), l.e, l.tok,
						   l.since, l.pid).m
			end
		end
	end
	local nrem = zbatch('ZREM', k, rem)
	count(f, zbatch('ZADD', k, add), nrem)
	return #rem > 0
end

-- holder @f's ranges, in order
local function ranges_of(f)
	local v = redis.call('ZRANGE', okey(f), 0, -1)
	for i = 1, #v do v[i] = unm(v[i]) end
	table.sort(v, by_start)
	return v
end

local function waiters_sorted()
	local v = {}
	for f, x in pairs(W) do
		local seq, space, t, s, e, owner, pid, since, mode = string.match(x,
			'^(%d+) (%d) (%a) (%x+) (%x+) (%x+) (%d+) (%d+) (%a)$')
		v[#v + 1] = { f = f, seq = tonumber(seq), space = space, t = t,
			      s = s, e = e, owner = owner, pid = pid,
			      since = since, mode = mode }
	end
	table.sort(v, function(x, y) return x.seq < y.seq end)
	return v
end

-- Hand the resource to its waiters in arrival order: like Linux, a waiter
-- is granted when no granted lock conflicts with it.  'g' waiters are
-- granted here and told on their lease's channel; 'n' (Redlock) waiters
-- are only told to retry.  A grant frees bytes only when it turns its
-- owner's write lock into a read lock; then only the waiters before it
-- were checked against the old state and need another look, so each pass
-- covers a strictly shorter prefix of the queue (at most one pass per
-- such grant) and a pass in which nothing was freed is the last.
local function grant_waiters()
	if next(W) == nil or delayed() then return end
	local v = waiters_sorted()
	local limit = #v
	while limit > 0 do
		local again = 0
		for i = 1, limit do
			local w = v[i]
			local lease = lease_of_w(w.f)
			local oid = lease .. '/' .. w.owner
			local wid = string.sub(w.f, 18)
			if not w.done and
			    not conflict(w.space, oid, w.t, w.s, w.e) then
				local chan = P .. ':inc:' .. lease
				w.done = true
				if w.mode == 'g' then
					local tok = redis.call('INCR', P .. ':token')
					local _, freed = lock_range(w.space .. oid,
						w.t, w.s, w.e, tok, w.pid)
					if freed then again = i end
					redis.call('HDEL', KEYS[2], w.f)
					W[w.f] = nil
					redis.call('HSET', P .. ':x:' .. lease, wid,
						   tok)
					redis.call('PUBLISH', chan,
						   'G ' .. wid .. ' ' .. tok)
				else
					redis.call('PUBLISH', chan, 'W ' .. wid)
				end
			end
		end
		limit = again - 1
	end
end

-- ---------------------------------------------------------------- ops
-- lock: [6] space [7] T [8] S [9] E [10] OWNER [11] pid [12] WAITID or ''
--       [13] mode 'g'|'n' [14] enqueue time to store ('' the server's NOW;
--       Redlock sends its own, so every node keeps the same one)
-- -> {1, token, undo record} granted, {0} conflict, {2} queued, {-1} the
--    caller's lease is gone.  The undo record is op undo's argument: '='
--    nothing changed, else what lock_range() returns
local function op_lock()
	local space, t, s, e, owner = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
	local pid, wid, mode = ARGV[11], ARGV[12], ARGV[13]
	local since = NOW
	if ARGV[14] and string.match(ARGV[14], '^%d+$') then since = ARGV[14] end
	if not load_and_purge(true) then return { -1 } end
	local oid = ME .. '/' .. owner
	local f = space .. oid
	local wf = ME .. '/' .. wid
	if space == '0' and G[f] then
		-- flock(2): the same mode again is a no-op; a conversion
		-- first drops the old lock (waking others), as on Linux
		local cur = redis.call('ZRANGE', okey(f), 0, 0)
		cur = cur[1] and unm(cur[1])
		if cur and cur.t == t then
			if W[wf] then redis.call('HDEL', KEYS[2], wf); W[wf] = nil end
			return { 1, tonumber(cur.tok), '=' }
		end
		drop(f)
		grant_waiters()
	end
	if delayed() or conflict(space, oid, t, s, e) then
		if wid == '' then return { 0 } end
		if not W[wf] then
			local seq = redis.call('INCR', P .. ':seq')
			local x = seq .. ' ' .. space .. ' ' .. t .. ' ' .. s .. ' ' ..
				e .. ' ' .. owner .. ' ' .. pid .. ' ' .. since .. ' ' .. mode
			redis.call('HSET', KEYS[2], wf, x); W[wf] = x
		end
		return { 2 }
	end
	local tok = redis.call('INCR', P .. ':token')
	local undo, freed = lock_range(f, t, s, e, tok, pid)
	if wid ~= '' and W[wf] then redis.call('HDEL', KEYS[2], wf); W[wf] = nil end
	-- a conversion to shared may unblock readers; a grant frees nothing
	-- else (a purge of dead leases may have)
	if freed or PURGED then grant_waiters() end
	return { 1, tok, undo }
end

-- unlock: [6] space [8] S [9] E [10] OWNER [11] max token ('' all)
-- -> {1 owner still holds, 0 not}.  With a max token (a retried unlock)
-- only pieces granted with a token <= max are unlocked: a grant that came
-- after the unlock was asked for survives it.
local function op_unlock()
	local space, s, e, owner = ARGV[6], ARGV[8], ARGV[9], ARGV[10]
	local max = ARGV[11] and ARGV[11] ~= '' and tonumber(ARGV[11])
	load_and_purge()
	local f = space .. ME .. '/' .. owner
	if G[f] then unlock_range(f, s, e, max) end
	grant_waiters()
	return { G[f] and 1 or 0 }
end

-- release: [6] space [10] OWNER [11] max token -> {1 owner still holds,
-- 0 not}: drop the owner's
-- locks granted with a token <= max; a newer grant (one that raced ahead
-- of the close that asked for this release) survives
local function op_release()
	load_and_purge()
	local f, max = ARGV[6] .. ME .. '/' .. ARGV[10], tonumber(ARGV[11])
	if G[f] and held(f) <= max then
		drop(f) -- every range: none is newer than the holder's newest
	elseif G[f] then
		local rem = {}
		for _, l in ipairs(ranges_of(f)) do
			if tonumber(l.tok) <= max then rem[#rem + 1] = l.m end
		end
		count(f, 0, zbatch('ZREM', okey(f), rem))
	end
	grant_waiters()
	return { G[f] and 1 or 0 }
end

-- undo (Redlock): [6] space [10] OWNER [11] the undo record of the lock
-- being taken back ('' drop every lock of the owner)
local function op_undo()
	load_and_purge()
	local f, x = ARGV[6] .. ME .. '/' .. ARGV[10], ARGV[11] or ''
	local lo, hi, rest = string.match(x, '^(%x+) (%x+)(.*)$')
	if x == '=' then return { 0 } end
	if not lo then
		if G[f] then drop(f) end
	else
		local k, rem, add, tok = okey(f), {}, {}, 0
		for _, t in ipairs({ 'R', 'W' }) do
			for _, l in ipairs(from(k, t, lo, hi)) do
				rem[#rem + 1] = l.m
			end
		end
		for m in string.gmatch(rest, ';([^;]+)') do
			local l = unm(m)
			if l.t then
				add[#add + 1] = m
				if tonumber(l.tok) > tok then tok = tonumber(l.tok) end
			end
		end
		local nrem = zbatch('ZREM', k, rem)
		count(f, zbatch('ZADD', k, add), nrem, tok)
	end
	grant_waiters()
	return { 0 }
end

-- cancel: [6] WAITID -> {1} removed, {0, token} granted already, {0} gone
local function op_cancel()
	local wf = ME .. '/' .. ARGV[6]
	if redis.call('HDEL', KEYS[2], wf) == 1 then return { 1 } end
	local tok = redis.call('HGET', P .. ':x:' .. ME, ARGV[6])
	if tok then return { 0, tonumber(tok) } end
	return { 0 }
end

-- poll (safety re-check): [6...] WAITIDs -> per id 'q' | token | 'x'
local function op_poll()
	load_and_purge()
	grant_waiters()
	local out = {}
	for i = 6, #ARGV do
		if W[ME .. '/' .. ARGV[i]] then
			out[#out + 1] = 'q'
		else
			out[#out + 1] = redis.call('HGET', P .. ':x:' .. ME, ARGV[i]) or 'x'
		end
	end
	return out
end

local function host_of(lease)
	return redis.call('HGET', HOSTS, lease) or '?'
end

-- getlk: [6] space [7] T [8] S [9] E [10] OWNER
-- -> {1, T, S, E, LEASE, OWNER, pid, token, since, host} or {0}
local function op_getlk()
	load_and_purge()
	local f, l = conflict(ARGV[6], ME .. '/' .. ARGV[10], ARGV[7], ARGV[8],
			      ARGV[9])
	if not f then return { 0 } end
	local lease = lease_of_g(f)
	return { 1, l.t, l.s, l.e, lease, string.sub(f, 19), l.pid, l.tok,
		 l.since, host_of(lease) }
end

-- list -> flat groups of 11: kind ('g'|'w'), space, T, S, E, LEASE, OWNER,
-- pid, token, since, host; holders first, then waiters in FIFO order
local function op_list()
	load_and_purge()
	local out = {}
	local fields = {}
	for f in pairs(G) do fields[#fields + 1] = f end
	table.sort(fields)
	for _, f in ipairs(fields) do
		local lease = lease_of_g(f)
		local host = host_of(lease)
		for _, l in ipairs(ranges_of(f)) do
			for _, x in ipairs({ 'g', string.sub(f, 1, 1), l.t, l.s, l.e,
					     lease, string.sub(f, 19), l.pid,
					     l.tok, l.since, host }) do
				out[#out + 1] = x
			end
		end
	end
	for _, w in ipairs(waiters_sorted()) do
		local lease = lease_of_w(w.f)
		for _, x in ipairs({ 'w', w.space, w.t, w.s, w.e, lease, w.owner,
				     w.pid, '0', w.since, host_of(lease) }) do
			out[#out + 1] = x
		end
	end
	return out
end

-- break: an administrator removes every granted lock of the resource.
-- Each owner's daemon is told 'L SPACE OWNER RESOURCE' on its lease's
-- channel and, in case it misses the publish, through P:l:LEASE, which its
-- next renewal reads; then the waiters are served -> {locks removed}
local function op_break()
	load_and_purge()
	local fields = {}
	for f in pairs(G) do fields[#fields + 1] = f end
	for _, f in ipairs(fields) do
		local lease = lease_of_g(f)
		local entry = string.sub(f, 1, 1) .. ' ' .. string.sub(f, 19) ..
			' ' .. RES
		drop(f)
		redis.call('SADD', P .. ':l:' .. lease, entry)
		redis.call('PEXPIRE', P .. ':l:' .. lease, 2 * TTL)
		redis.call('PUBLISH', P .. ':inc:' .. lease, 'L ' .. entry)
	end
	grant_waiters()
	return { #fields }
end

-- poke: [6] SRC [7] SEQ (16 hex each, chosen by the caller) -> {leases
-- told}: ask every other daemon holding a lock on the resource (either
-- space) to give it back, with one 'P SRC SEQ RESOURCE' on each distinct
-- holder lease's channel, never the caller's.  Reads the holder fields
-- only (one HKEYS, no ranges) and changes nothing: a holder of a dead
-- lease is told on a channel nobody listens to, which costs less than
-- reading the leases to skip it.
local function op_poke()
	local msg = 'P ' .. ARGV[6] .. ' ' .. ARGV[7] .. ' ' .. RES
	local seen, n = { [ME] = true }, 0
	for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
		local lease = lease_of_g(f)
		if not seen[lease] then
			seen[lease] = true
			redis.call('PUBLISH', P .. ':inc:' .. lease, msg)
			n = n + 1
		end
	end
	return { n }
end

-- forget leases dead for an hour: long past any lock-delay
local function gc_leases()
	local r = redis.call('HGETALL', LEASES)
	for i = 1, #r, 2 do
		if tonumber(r[i + 1]) < NOW - 3600000 then
			redis.call('HDEL', LEASES, r[i])
			redis.call('HDEL', HOSTS, r[i])
			redis.call('DEL', P .. ':x:' .. r[i])
		end
	end
end

-- reg: [6] host id -> {NOW}: a fresh lease for the caller
local function op_reg()
	gc_leases()
	redis.call('HSET', LEASES, ME, NOW + TTL)
	redis.call('HSET', HOSTS, ME, ARGV[6])
	return { NOW }
end

-- renew: [6...] WAITIDs whose grants were delivered (forgotten here)
-- -> {1, broken...} renewed, with the 'SPACE OWNER RESOURCE' entries of
-- locks an administrator broke since; {-1} the lease was gone or expired:
-- never revive it
local function op_renew()
	if not alive(ME) then return { -1 } end
	redis.call('HSET', LEASES, ME, NOW + TTL)
	if #ARGV >= 6 then
		redis.call('HDEL', P .. ':x:' .. ME, unpack(ARGV, 6))
	end
	if NOW % 16 == 0 then gc_leases() end -- now and then
	local out = { 1 }
	local lkey = P .. ':l:' .. ME
	for _, e in ipairs(redis.call('SMEMBERS', lkey)) do out[#out + 1] = e end
	if #out > 1 then redis.call('DEL', lkey) end
	return out
end

-- drop: end the caller's lease now (its holder gave its locks up as lost)
local function op_drop()
	redis.call('HDEL', LEASES, ME)
	return { 0 }
end

-- version: KEYS[1] = P:v:R -> {n, host, ms}, {'0', '', '0'} never bumped.
-- Any lease or none: a version outlives every daemon.
local function op_version()
	local v = redis.call('HMGET', KEYS[1], 'n', 'h', 't')
	return { v[1] or '0', v[2] or '', v[3] or '0' }
end

-- bump: KEYS[1] = P:v:R, [6] host id -> {n, host, ms} after adding one.
-- One call, so two daemons bumping at once get two versions; the time is
-- the server's (NOW), so hosts with skewed clocks agree on it.
local function op_bump()
	local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
	local ms = string.format('%d', NOW)
	redis.call('HSET', KEYS[1], 'h', ARGV[6], 't', ms)
	return { n, ARGV[6], ms }
end

local ops = { lock = op_lock, unlock = op_unlock, release = op_release,
	      undo = op_undo, cancel = op_cancel, poll = op_poll,
	      getlk = op_getlk, list = op_list, reg = op_reg,
	      renew = op_renew, drop = op_drop, ['break'] = op_break,
	      poke = op_poke, version = op_version, bump = op_bump }

-- one request: reset every piece of per-call state, then run its op
local function dispatch(keys, argv)
	local fn = ops[argv[1]]
	if not fn then return redis.error_reply('dlockfs: unknown op') end
	KEYS, ARGV = keys, argv
	P, ME = argv[2], argv[3]
	TTL, DELAY = tonumber(argv[4]), tonumber(argv[5])
	local tm = redis.call('TIME')
	NOW = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
	LEASES, HOSTS = P .. ':leases', P .. ':hosts'
	RES = string.sub(keys[1], #P + 4)
	G, W, DLY, PURGED = {}, {}, nil, false
	return fn()
end

if redis.register_function then
	-- FUNCTION LOAD: backend/redis/conn.c declares DLOCKFS_FUNCTION, a name
	-- that changes with this text, so daemons of different versions
	-- sharing one server never call each other's code
	redis.register_function(DLOCKFS_FUNCTION, dispatch)
else
	-- EVALSHA: a write after TIME needs effects replication (Redis < 5)
	if redis.replicate_commands then redis.replicate_commands() end
	return dispatch(EVAL_KEYS, EVAL_ARGV)
end
