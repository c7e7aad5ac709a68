"""The Lua scripts that make each cluster step atomic in Redis, and the key layout.

Keys and the channel, for cluster ``P`` and channel key ``C`` (``["topic", tenant]`` as JSON)::

    P:epoch            the numbering's name; made by the first claim after Redis lost its state
    P:seq:C            the channel's last seq (no TTL: a seq never goes back within an epoch)
    P:topicseq:TOPIC   the highest seq of any channel of the topic (a new tenant starts there)
    P:lease:C:TICK     who queries channel C at tick TICK (SET NX PX: Redis's clock)
    P:refresh:C        who refreshes C at once for a first subscriber (one per interval)
    P:last:C           hash {seq, at (Redis ms), message}: the last publication with a value
    P:node:ID          a node's presence (JSON, PX), P:nodes the set of their ids
    P:updates          the pub/sub channel every publication goes through

Each script names every key it touches in KEYS. Time is Redis's (``TIME``, ``PX``), so no
node needs a synchronised clock for leases or for a last value's age.
"""

from __future__ import annotations

CLAIM = """
-- KEYS: lease, seq, topicseq, epoch. ARGV: node id, lease ms, a new epoch (if none).
-- The lease and the next seq in one step: the winner, and only it, takes a seq.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[4], epoch)
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local top = redis.call('GET', KEYS[3])
  if top then redis.call('SET', KEYS[2], top) end
end
local seq = redis.call('INCR', KEYS[2])
if seq > tonumber(redis.call('GET', KEYS[3]) or '0') then
  redis.call('SET', KEYS[3], seq)
end
return {seq, epoch}
"""

PUBLISH = """
-- KEYS: last, epoch. ARGV: seq, epoch, message to keep, ttl ms, has update (1/0), channel,
-- message to publish (the kept one without a window topic's whole window).
-- Fencing: publish only a seq newer than the last one published, in the current epoch.
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
local seq = tonumber(ARGV[1])
if seq <= tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') then
  return 0
end
redis.call('HSET', KEYS[1], 'seq', seq)
if ARGV[5] == '1' then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('HSET', KEYS[1], 'at', ms, 'message', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"""

LAST_VALUE = """
-- KEYS: last. Returns {age ms by Redis's clock, message} or nil.
local value = redis.call('HMGET', KEYS[1], 'at', 'message')
if not value[2] then
  return false
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {ms - tonumber(value[1]), value[2]}
"""
