"""The Lua scripts: each runs atomically in Redis/Valkey, so replicas never race.

Admission checks every limit first and changes state only when all pass, so a refused request
costs nothing.
"""

# Admission. RPM and TPM are exact sliding windows over the last 60 s, kept in one request log
# (a sorted set of admitted requests scored by time) plus, for TPM, a hash of each request's
# tokens and their running sum; so "60 per minute" admits 60 in any minute, whichever replica
# sees the request.
# The in-flight set scores each slot with the last time its edge vouched for it (admission,
# then RENEW): a slot older than the lease belongs to an edge that died (see limits/slots.py).
# KEYS: request log (zset), tokens (hash: member -> tokens, _sum), in-flight (zset)
# ARGV: now ms, rpm, tpm, estimated tokens, max parallel, member id, budget (nano-USD),
#       slot lease ms, freshness ms (a live edge renews its slots at least this often),
#       budget reset ms, spend counter name, then pending settles of this key as
#       (member, actual tokens or '') pairs: applied first, so a busy key needs no separate
#       settle call.
# The spend counter is named in ARGV, not KEYS: keys declared to EVAL are checked as read-write,
# and the ingress role may only read spend (the GET inside is checked as a read).
ADMIT = """
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
local window = now - 60000

for i = 12, #ARGV - 1, 2 do
  local done, actual = ARGV[i], ARGV[i + 1]
  if actual ~= '' then
    local before = tonumber(redis.call('HGET', KEYS[2], done) or '-1')
    if before >= 0 then
      redis.call('HSET', KEYS[2], done, actual)
      redis.call('HINCRBY', KEYS[2], '_sum', tonumber(actual) - before)
    end
  end
  redis.call('ZREM', KEYS[3], done)
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
local function retry_log()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then return math.max(1, tonumber(first[2]) + 60000 - now) end
  return 1000
end
-- reply: code, requests used, tokens used, retry after (ms), in flight, spent (nano-USD)
if rpm > 0 and used_requests >= rpm then
  return {1, used_requests, used_tokens, retry_log(), 0, 0}
end
if tpm > 0 and est > tpm then
  return {5, used_requests, used_tokens, 60000, 0, 0}
end
if tpm > 0 and used_tokens + est > tpm then
  return {2, used_requests, used_tokens, retry_log(), 0, 0}
end
local n = 0
if maxp > 0 then
  n = redis.call('ZCARD', KEYS[3])
  if n >= maxp then  -- sweep slots of dead edges (not renewed for a lease) before refusing
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - lease)
    n = redis.call('ZCARD', KEYS[3])
    if n >= maxp then
      -- A live edge's request may end any moment: retry in a second. When no slot was
      -- renewed lately, all are a dead edge's: the first frees when its lease runs out.
      local retry = 1000
      if redis.call('ZCOUNT', KEYS[3], now - fresh, '+inf') == 0 then
        local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
        retry = math.max(1000, tonumber(first[2]) + lease - now)
      end
      return {3, used_requests, used_tokens, retry, n, 0}
    end
  end
end
local spent = 0
if budget > 0 then
  spent = tonumber(redis.call('GET', spend_key) or '0')
  if spent >= budget then
    return {4, used_requests, used_tokens, reset_ms, n, spent}
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
if maxp > 0 then
  redis.call('ZADD', KEYS[3], now, member)
  redis.call('PEXPIRE', KEYS[3], lease)  -- every slot in it is at most a lease old
end
return {0, used_requests + 1, used_tokens + est, 0, n + 1, spent}
"""

# After requests of a key that sent nothing since: free their concurrency slots and replace
# their token estimates with the tokens actually used (only while still inside the window).
# KEYS: tpm tokens (hash), in-flight (zset); ARGV: (member id, actual tokens or '') pairs
SETTLE = """
for i = 1, #ARGV - 1, 2 do
  local member, actual = ARGV[i], ARGV[i + 1]
  if actual ~= '' then
    local before = tonumber(redis.call('HGET', KEYS[1], member) or '-1')
    if before >= 0 then
      redis.call('HSET', KEYS[1], member, actual)
      redis.call('HINCRBY', KEYS[1], '_sum', tonumber(actual) - before)
    end
  end
  redis.call('ZREM', KEYS[2], member)
end
return 1
"""

# An edge vouches for the slots it holds (limits/slots.py): each gets the current time as its
# score. XX: a slot freed meanwhile (settled, or swept as a dead edge's) is never taken again.
# KEYS: in-flight sets (zsets); ARGV: now ms, lease ms, then per key: the number of its
# members, then those members.
# A key's spend this period (nano-USD), for a check that admits nothing (a batch's creation).
# ARGV: the spend counter's name (in ARGV, read-only for the ingress role: see ADMIT).
SPENT = """
return redis.call('GET', ARGV[1])
"""

RENEW = """
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local a = 3
for k = 1, #KEYS do
  local count = tonumber(ARGV[a])
  local scored = {}
  for i = 1, count do
    scored[2 * i - 1] = now
    scored[2 * i] = ARGV[a + i]
  end
  a = a + count + 1
  if count > 0 and redis.call('ZADD', KEYS[k], 'XX', 'CH', unpack(scored)) > 0 then
    redis.call('PEXPIRE', KEYS[k], lease)
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
# KEYS: the applied chunk, then one "once" key per event, then per group of events (same key,
#       period, day, model, team) nine keys: budget, total, day-key, day-model, day-key-model,
#       day-team (hashes), then the day's rankings by cost of keys, teams and models (sorted sets)
# ARGV: the batch's bit in the chunk (-1: its place is unknown, the events' ids alone guard
#       it), chunk TTL (s), daily TTL (s), once TTL (s), number of events, then per event: its
#       group (from 1), cost (nano-USD), prompt tokens, completion tokens; then per group:
#       budget counter TTL (s, 0 = none), key id, team, model alias
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
local events = tonumber(ARGV[5])
local sums = {}
local counted = {}
for e = 0, events - 1 do
  counted[e + 1] = 0
  if redis.call('SET', KEYS[2 + e], '1', 'NX', 'EX', once_ttl) then
    local a = 6 + e * 4
    local g = tonumber(ARGV[a])
    local s = sums[g]
    if not s then
      s = {0, 0, 0, 0}
      sums[g] = s
    end
    s[1] = s[1] + tonumber(ARGV[a + 1])
    s[2] = s[2] + tonumber(ARGV[a + 2])
    s[3] = s[3] + tonumber(ARGV[a + 3])
    s[4] = s[4] + 1
    counted[e + 1] = 1
  end
end
local first_key = 2 + events
local first_arg = 6 + events * 4
for g, s in pairs(sums) do
  local k = first_key + (g - 1) * 9
  local a = first_arg + (g - 1) * 4
  local cost = s[1]
  redis.call('INCRBY', KEYS[k], cost)
  if tonumber(ARGV[a]) > 0 then
    redis.call('EXPIRE', KEYS[k], tonumber(ARGV[a]))
  end
  redis.call('INCRBY', KEYS[k + 1], cost)
  for i = k + 2, k + 5 do
    redis.call('HINCRBY', KEYS[i], 'cost_nano', cost)
    redis.call('HINCRBY', KEYS[i], 'prompt_tokens', s[2])
    redis.call('HINCRBY', KEYS[i], 'completion_tokens', s[3])
    redis.call('HINCRBY', KEYS[i], 'requests', s[4])
    redis.call('EXPIRE', KEYS[i], daily_ttl)
  end
  for r = 0, 2 do
    redis.call('ZINCRBY', KEYS[k + 6 + r], cost, ARGV[a + 1 + r])
    redis.call('EXPIRE', KEYS[k + 6 + r], daily_ttl)
  end
end
return counted
"""
