"""The Lua scripts: each runs atomically in Redis/Valkey, so replicas never race.

Admission checks every limit first and changes state only when all pass, so a refused request
costs nothing.
"""

# Freeing one request in flight: its slot in the in-flight set (KEYS[3] of ADMIT, KEYS[2] of
# SETTLE) and its budget hold (a hash of member -> estimated nano-USD and their running _sum).
_FREE = """
local function free(inflight, holds, member)
  redis.call('ZREM', inflight, member)
  local hold = redis.call('HGET', holds, member)
  if hold then
    redis.call('HDEL', holds, member)
    redis.call('HINCRBY', holds, '_sum', -tonumber(hold))
  end
end
"""

# Admission. RPM and TPM are exact sliding windows over the last 60 s, kept in one request log
# (a sorted set of admitted requests scored by time) plus, for TPM, a hash of each request's
# tokens and their running sum; so "60 per minute" admits 60 in any minute, whichever replica
# sees the request.
# The in-flight set holds the requests of a key that has max_parallel or a budget, each scored
# with the last time its edge vouched for it (admission, then RENEW): one older than the lease
# belongs to an edge that died (see limits/slots.py). max_parallel counts it; with a budget,
# each admitted request also holds the key's estimated cost of one request of its model (learnt
# by accounting: RECORD), and a request is refused while spend + the holds of requests in
# flight reach the budget. A sweep of dead edges' requests frees their holds too.
# KEYS: request log (zset), tokens (hash: member -> tokens, _sum), in-flight (zset),
#       holds (hash: member -> nano-USD, _sum)
# ARGV: now ms, rpm, tpm, estimated tokens, max parallel, member id, budget (nano-USD),
#       slot lease ms, freshness ms (a live edge renews its slots at least this often),
#       budget reset ms, spend counter name, model alias asked for, the key's estimates (hash),
#       the platform's estimates (hash), then pending settles of this key as (member, actual
#       tokens or '') pairs: applied first, so a busy key needs no separate settle call.
# The spend counter and the estimates are named in ARGV, not KEYS: keys declared to EVAL are
# checked as read-write, and the ingress role may only read spend (the GETs inside are checked
# as reads).
ADMIT = (
    _FREE
    + """
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local est = tonumber(ARGV[4])
local maxp = tonumber(ARGV[5])
local member = ARGV[6]
local budget = tonumber(ARGV[7])
local lease = tonumber(ARGV[8])
local fresh = tonumber(ARGV[9])
local reset_ms = tonumber(ARGV[10])
local spend_key = ARGV[11]
local alias = ARGV[12]
local window = now - 60000

for i = 15, #ARGV - 1, 2 do
  local done, actual = ARGV[i], ARGV[i + 1]
  if actual ~= '' then
    local before = tonumber(redis.call('HGET', KEYS[2], done) or '-1')
    if before >= 0 then
      redis.call('HSET', KEYS[2], done, actual)
      redis.call('HINCRBY', KEYS[2], '_sum', tonumber(actual) - before)
    end
  end
  free(KEYS[3], KEYS[4], done)
end

-- Requests of edges that stopped renewing them (died): out of the in-flight set, holds freed.
local function sweep()
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - lease)
  if #dead == 0 then return end
  local drop = 0
  for i = 1, #dead, 1000 do
    local part = {unpack(dead, i, math.min(i + 999, #dead))}
    for _, v in ipairs(redis.call('HMGET', KEYS[4], unpack(part))) do
      drop = drop + (tonumber(v) or 0)
    end
    redis.call('HDEL', KEYS[4], unpack(part))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - lease)
  if drop > 0 then
    redis.call('HINCRBY', KEYS[4], '_sum', -drop)
  end
end

local used_requests = 0
local used_tokens = 0
if tpm > 0 then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', window)
  if #expired > 0 then
    local drop = 0
    for i = 1, #expired, 1000 do
      local part = {unpack(expired, i, math.min(i + 999, #expired))}
      for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(part))) do
        drop = drop + (tonumber(v) or 0)
      end
      redis.call('HDEL', KEYS[2], unpack(part))
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', window)
    redis.call('HINCRBY', KEYS[2], '_sum', -drop)
  end
  used_tokens = tonumber(redis.call('HGET', KEYS[2], '_sum') or '0')
elseif rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', window)
end
if rpm > 0 or tpm > 0 then
  used_requests = redis.call('ZCARD', KEYS[1])
end
-- Until an entry leaves the window (clamped: edges' clocks may differ a little).
local function leaves(score)
  return math.max(0, math.min(60000, tonumber(score) + 60000 - now))
end
-- When the window is back to its initial state (OpenAI's "reset"): the newest entry leaves.
-- For tokens, the newest entry that holds any (token counts hold none); past 512 entries of
-- none, the newest entry's time (later: the tokens are back by then all the same).
-- One page of the request log (``cmd``: ZRANGE oldest first, ZREVRANGE newest first): its
-- (member, score) pairs, and each member's tokens.
local function page(cmd, from, size)
  local part = redis.call(cmd, KEYS[1], from, from + size - 1, 'WITHSCORES')
  if #part == 0 then return part, {} end
  local members = {}
  for j = 1, #part, 2 do members[#members + 1] = part[j] end
  return part, redis.call('HMGET', KEYS[2], unpack(members))
end
local function resets(tokens)
  local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if not top[2] then return 0, 0 end
  local requests_ms = leaves(top[2])
  if tpm <= 0 or tokens <= 0 then return requests_ms, 0 end
  for i = 0, 511, 64 do
    local part, counts = page('ZREVRANGE', i, 64)
    if #part == 0 then break end
    for j = 1, #counts do
      if (tonumber(counts[j]) or 0) > 0 then return requests_ms, leaves(part[2 * j]) end
    end
  end
  return requests_ms, requests_ms
end
-- An RPM refusal: the oldest request leaves, and with it one request's room.
local function retry_requests()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then return math.max(1, tonumber(first[2]) + 60000 - now) end
  return 1000
end
-- A TPM refusal: when enough tokens have left for this request, the log walked oldest first
-- (the oldest entry alone may free too few: a client told so was refused again).
local function retry_tokens()
  local need = used_tokens + est - tpm
  local freed = 0
  -- At most 1,000 entries (a log of many tiny entries would hold Valkey's one thread): past
  -- them, when the newest leaves, which frees everything.
  for i = 0, math.min(used_requests, 1000) - 1, 100 do
    local part, counts = page('ZRANGE', i, 100)
    if #part == 0 then break end
    for j = 1, #counts do
      freed = freed + (tonumber(counts[j]) or 0)
      if freed >= need then return math.max(1, tonumber(part[2 * j]) + 60000 - now) end
    end
  end
  local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if top[2] then return math.max(1, tonumber(top[2]) + 60000 - now) end
  return 1000
end
-- reply: code, requests used, tokens used, retry after (ms), in flight, spent (nano-USD),
--        held (nano-USD, by requests in flight), holders (requests in flight holding some),
--        reset of requests (ms), reset of tokens (ms)
local function refuse(code, retry, n, spent, held, holders)
  local reset_requests, reset_tokens = resets(used_tokens)
  return {code, used_requests, used_tokens, retry, n, spent, held, holders, reset_requests,
          reset_tokens}
end
if rpm > 0 and used_requests >= rpm then
  return refuse(1, retry_requests(), 0, 0, 0, 0)
end
if tpm > 0 and est > tpm then
  return refuse(5, 60000, 0, 0, 0, 0)
end
if tpm > 0 and used_tokens + est > tpm then
  return refuse(2, retry_tokens(), 0, 0, 0, 0)
end
local n = 0
if maxp > 0 then
  n = redis.call('ZCARD', KEYS[3])
  if n >= maxp then  -- sweep slots of dead edges (not renewed for a lease) before refusing
    sweep()
    n = redis.call('ZCARD', KEYS[3])
    if n >= maxp then
      -- A live edge's request may end any moment: retry in a second. When no slot was
      -- renewed lately, all are a dead edge's: the first frees when its lease runs out.
      local retry = 1000
      if redis.call('ZCOUNT', KEYS[3], now - fresh, '+inf') == 0 then
        local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
        retry = math.max(1000, tonumber(first[2]) + lease - now)
      end
      return refuse(3, retry, n, 0, 0, 0)
    end
  end
end
local spent = 0
local held = 0
local hold = false
if budget > 0 then
  spent = tonumber(redis.call('GET', spend_key) or '0')
  if spent >= budget then
    return refuse(4, reset_ms, n, spent, 0, 0)
  end
  held = tonumber(redis.call('HGET', KEYS[4], '_sum') or '0')
  if held > 0 and spent + held >= budget then  -- free dead edges' holds before refusing
    sweep()
    if redis.call('ZCARD', KEYS[3]) == 0 then  -- nothing in flight: no hold is left
      redis.call('DEL', KEYS[4])
      held = 0
    else
      held = tonumber(redis.call('HGET', KEYS[4], '_sum') or '0')
    end
    if held > 0 and spent + held >= budget then
      -- Held by requests still running: one of them ends soon, retry in a second.
      local holders = math.max(0, redis.call('HLEN', KEYS[4]) - 1)
      return refuse(4, 1000, n, spent, held, holders)
    end
  end
  hold = redis.call('HGET', ARGV[13], alias) or redis.call('HGET', ARGV[14], alias)
  if hold and tonumber(hold) <= 0 then
    hold = false
  end
end
if rpm > 0 or tpm > 0 then
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], 61000)
end
if tpm > 0 then
  redis.call('HSET', KEYS[2], member, est)
  redis.call('HINCRBY', KEYS[2], '_sum', est)
  redis.call('PEXPIRE', KEYS[2], 61000)
end
if maxp > 0 or budget > 0 then
  redis.call('ZADD', KEYS[3], now, member)
  redis.call('PEXPIRE', KEYS[3], lease)  -- every slot in it is at most a lease old
end
if hold then
  redis.call('HSET', KEYS[4], member, hold)
  held = redis.call('HINCRBY', KEYS[4], '_sum', hold)
  redis.call('PEXPIRE', KEYS[4], lease)  -- kept alive, with the in-flight set, by RENEW
end
-- The request just admitted is the newest entry: the window is whole again a minute from now
-- (no walk of the log on the success path; only a zero-token entry, a count, needs one).
local reset_requests, reset_tokens = 0, 0
if rpm > 0 or tpm > 0 then reset_requests = 60000 end
if tpm > 0 and est > 0 then
  reset_tokens = 60000
elseif tpm > 0 and used_tokens > 0 then
  reset_requests, reset_tokens = resets(used_tokens)
end
return {0, used_requests + 1, used_tokens + est, 0, n + 1, spent, held, 0, reset_requests,
        reset_tokens}
"""
)

# After requests of a key that sent nothing since: free their slots and budget holds, and
# replace their token estimates with the tokens actually used (only while still inside the
# window).
# KEYS: tpm tokens (hash), in-flight (zset), holds (hash); ARGV: (member id, actual tokens or
# '') pairs
SETTLE = (
    _FREE
    + """
for i = 1, #ARGV - 1, 2 do
  local member, actual = ARGV[i], ARGV[i + 1]
  if actual ~= '' then
    local before = tonumber(redis.call('HGET', KEYS[1], member) or '-1')
    if before >= 0 then
      redis.call('HSET', KEYS[1], member, actual)
      redis.call('HINCRBY', KEYS[1], '_sum', tonumber(actual) - before)
    end
  end
  free(KEYS[2], KEYS[3], member)
end
return 1
"""
)

# A key's spend this period (nano-USD), for a check that admits nothing (a batch's creation).
# ARGV: the spend counter's name (in ARGV, read-only for the ingress role: see ADMIT).
SPENT = """
return redis.call('GET', ARGV[1])
"""

# An edge vouches for the slots it holds (limits/slots.py): each gets the current time as its
# score. XX: a slot freed meanwhile (settled, or swept as a dead edge's) is never taken again.
# The key's budget holds live as long as its in-flight set.
# KEYS: per key its in-flight set (zset) and its holds (hash); ARGV: now ms, lease ms, then per
# key: the number of its members, then those members.
RENEW = """
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local a = 3
for k = 1, #KEYS - 1, 2 do
  local count = tonumber(ARGV[a])
  local scored = {}
  for i = 1, count do
    scored[2 * i - 1] = now
    scored[2 * i] = ARGV[a + i]
  end
  a = a + count + 1
  if count > 0 and redis.call('ZADD', KEYS[k], 'XX', 'CH', unpack(scored)) > 0 then
    redis.call('PEXPIRE', KEYS[k], lease)
    redis.call('PEXPIRE', KEYS[k + 1], lease)
  end
end
return 1
"""

# Accounting: apply one usage batch exactly once, and each event in it once by its own id.
# The batch is known by its place in the USAGE stream (what JetStream redelivers is the same
# stream message; a model-proxy's re-publish is deduplicated into it): one bit per stream
# sequence in a chunk key (limits/keys.py: applied), set here, in the same atomic call that
# counts, so a batch applied and then redelivered (its ack lost, or accounting gone before it
# acked) is skipped however late it comes. Each event is remembered by its id (one per request
# and deployment hop) for the once-TTL: a request executed twice, after a NATS failover re-send
# or a worker's death, is billed once.
# Each counted event also teaches the estimated cost of one request (what ADMIT holds while
# a request runs), per key and model alias and platform-wide per alias: it rises at once to a
# dearer request and decays by an eighth of the gap toward a cheaper one.
# A stopped call's event (``:left``, ``:late``) names the request's answer's "once" key as its
# second key: once that answer is billed, the stopped copy is the platform's duplicate (a copy
# redelivered or re-sent while another answered; its caller left because it had the answer)
# and is not billed. Every other event names its own "once" key there.
# KEYS: the applied chunk, then one "once" key per event, then one answer key per event (as
#       above), then the platform's estimates (hash:
#       alias -> nano-USD), then per group of events (same key, period, day, model, team) ten
#       keys: budget, total, day-key, day-model, day-key-model, day-team (hashes), the day's
#       rankings by cost of keys, teams and models (sorted sets), the key's estimates (hash);
#       then per deployment group (same day and deployment) two: its day counters (hash) and
#       the day's ranking of deployments
# ARGV: the batch's bit in the chunk (-1: its place is unknown, the events' ids alone guard
#       it), chunk TTL (s), daily TTL (s), once TTL (s), estimates TTL (s), number of events,
#       number of groups, then per event: its group (from 1), cost (nano-USD), prompt tokens,
#       completion tokens, its deployment group (from 1); then per group: budget counter TTL
#       (s, 0 = none), key id, team, model alias; then per deployment group: deployment id,
#       provider, provider's model
# Returns 0 for a batch applied before, else per event 1 (counted) or 0 (seen before).
RECORD = """
if tonumber(ARGV[1]) >= 0 then
  if redis.call('SETBIT', KEYS[1], ARGV[1], 1) == 1 then
    return 0
  end
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
local daily_ttl = tonumber(ARGV[3])
local once_ttl = tonumber(ARGV[4])
local estimate_ttl = tonumber(ARGV[5])
local events = tonumber(ARGV[6])
local groups = tonumber(ARGV[7])
local platform = KEYS[2 + 2 * events]
local first_key = 3 + 2 * events
local first_arg = 8 + events * 5
local deployment_key = first_key + groups * 10
local deployment_arg = first_arg + groups * 4
local function learn(hash, alias, cost)
  local old = tonumber(redis.call('HGET', hash, alias) or '-1')
  local c = tonumber(cost)
  if old < c then
    redis.call('HSET', hash, alias, cost)
  elseif old > c then
    redis.call('HSET', hash, alias, string.format('%d', old - math.floor((old - c) / 8)))
  end
end
local function add(sums, n, a)
  local s = sums[n]
  if not s then
    s = {0, 0, 0, 0}
    sums[n] = s
  end
  s[1] = s[1] + tonumber(ARGV[a + 1])
  s[2] = s[2] + tonumber(ARGV[a + 2])
  s[3] = s[3] + tonumber(ARGV[a + 3])
  s[4] = s[4] + 1
end
local function count(hash, s)
  redis.call('HINCRBY', hash, 'cost_nano', s[1])
  redis.call('HINCRBY', hash, 'prompt_tokens', s[2])
  redis.call('HINCRBY', hash, 'completion_tokens', s[3])
  redis.call('HINCRBY', hash, 'requests', s[4])
  redis.call('EXPIRE', hash, daily_ttl)
end
local function rank(ranking, cost, member)
  redis.call('ZINCRBY', ranking, cost, member)
  redis.call('EXPIRE', ranking, daily_ttl)
end
local sums = {}
local deployment_sums = {}
local counted = {}
for e = 0, events - 1 do
  counted[e + 1] = 0
  local once = KEYS[2 + e]
  local answer = KEYS[2 + events + e]
  local duplicate = answer ~= once and redis.call('EXISTS', answer) == 1
  if not duplicate and redis.call('SET', once, '1', 'NX', 'EX', once_ttl) then
    local a = 8 + e * 5
    local g = tonumber(ARGV[a])
    local alias = ARGV[first_arg + (g - 1) * 4 + 3]
    learn(KEYS[first_key + (g - 1) * 10 + 9], alias, ARGV[a + 1])
    learn(platform, alias, ARGV[a + 1])
    add(sums, g, a)
    add(deployment_sums, tonumber(ARGV[a + 4]), a)
    counted[e + 1] = 1
  end
end
for g, s in pairs(sums) do
  local k = first_key + (g - 1) * 10
  local a = first_arg + (g - 1) * 4
  local cost = s[1]
  redis.call('INCRBY', KEYS[k], cost)
  if tonumber(ARGV[a]) > 0 then
    redis.call('EXPIRE', KEYS[k], tonumber(ARGV[a]))
  end
  redis.call('INCRBY', KEYS[k + 1], cost)
  redis.call('EXPIRE', KEYS[k + 9], estimate_ttl)  -- the key's estimates (learnt above)
  for i = k + 2, k + 5 do
    count(KEYS[i], s)
  end
  for r = 0, 2 do
    rank(KEYS[k + 6 + r], cost, ARGV[a + 1 + r])
  end
end
for d, s in pairs(deployment_sums) do
  local k = deployment_key + (d - 1) * 2
  local a = deployment_arg + (d - 1) * 3
  count(KEYS[k], s)
  redis.call('HSET', KEYS[k], 'provider', ARGV[a + 1], 'model', ARGV[a + 2])
  rank(KEYS[k + 1], s[1], ARGV[a])
end
if next(sums) ~= nil then
  redis.call('EXPIRE', platform, estimate_ttl)
end
return counted
"""
