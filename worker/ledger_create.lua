-- Create a chunk of orders atomically, idempotent on the application reference.
--
-- KEYS[1]  the reference map hash           (<prefix>:refs)
-- KEYS[2]  the batch hash                   (<prefix>:batch:<id>)
-- KEYS[3]  the batch's ordered tradeNo list (<prefix>:batch:<id>:orders)
-- KEYS[4]  the index of the initial state   (<prefix>:state:<STATE>)
-- KEYS[5]  the cluster-wide counts per state (<prefix>:counts)
-- ARGV[1]  key prefix   ARGV[2] batch id   ARGV[3] initial state (QUEUED or HELD)
-- ARGV[4..] seven values per order: tradeNo, reference ('' for none), market, currency,
--           amount, cents (amount in hundredths, an integer), payload (JSON of the fields to send)
-- Order keys are built from the prefix (single Redis node, not Cluster).
-- Returns a flat list: for each order, the tradeNo that holds it and 1 if it was created
-- now, 0 if its reference already belonged to an existing order.

local prefix, batch, state = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tostring(t[1] * 1000 + math.floor(t[2] / 1000))
local out = {}
local created = 0
for i = 4, #ARGV, 7 do
  local trade_no, ref = ARGV[i], ARGV[i + 1]
  local existing = false
  if ref ~= '' then
    existing = redis.call('HGET', KEYS[1], ref)
    if not existing then redis.call('HSET', KEYS[1], ref, trade_no) end
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local currency, cents = ARGV[i + 3], ARGV[i + 5]
    redis.call('HSET', prefix .. ':order:' .. trade_no,
      'batch', batch, 'ref', ref, 'market', ARGV[i + 2], 'currency', currency,
      'amount', ARGV[i + 4], 'cents', cents, 'state', state,
      'created', now, 'updated', now, 'attempts', 0)
    redis.call('SET', prefix .. ':payload:' .. trade_no, ARGV[i + 6])
    redis.call('RPUSH', prefix .. ':history:' .. trade_no, now .. ' ' .. state)
    redis.call('ZADD', KEYS[4], now, trade_no)
    redis.call('RPUSH', KEYS[3], trade_no)
    redis.call('HINCRBY', KEYS[2], 'c:' .. state .. ':' .. currency, cents)
    created = created + 1
    out[#out + 1] = trade_no
    out[#out + 1] = 1
  end
end
if created > 0 then
  redis.call('HINCRBY', KEYS[2], 'n:' .. state, created)
  redis.call('HINCRBY', KEYS[2], 'total', created)
  redis.call('HINCRBY', KEYS[5], state, created)
end
return out
