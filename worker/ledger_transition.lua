-- Move one order to another state: an atomic compare-and-set over the transition table.
--
-- KEYS[1]  the order hash    (<prefix>:order:<tradeNo>)
-- KEYS[2]  its history list  (<prefix>:history:<tradeNo>)
-- ARGV[1]  key prefix (state indexes, batch hash, cluster-wide counts and the discrepancy
--          index are built from it)
-- ARGV[2]  tradeNo   ARGV[3] target state
-- ARGV[4]  expected current states, comma separated ('' = any state the table allows)
-- ARGV[5]  note for the history ('' for none)
-- ARGV[6]  '1' when the caller reports what the provider said (a contradiction of a final
--          state is then recorded as a discrepancy), else '0'
-- ARGV[7..] field/value pairs to store on the order with the move (provider ids, codes)
-- Returns {outcome, state before}: outcome is 'ok', 'same' (already there: fields updated),
-- 'unexpected' (not in the expected states), 'forbidden' (the table disallows it),
-- 'final' (the order is final and stays so) or 'missing'.

local ALLOWED = {
  HELD = {QUEUED = true, CANCELLED = true},
  -- A provider report may find an order back in QUEUED whose earlier POST did arrive
  -- after all: the report wins, and the resubmission is refused as a repeat tradeNo.
  QUEUED = {SUBMITTING = true, CANCELLED = true, REVIEW = true,
            PROCESSING = true, SUCCEEDED = true, FAILED = true},
  SUBMITTING = {PROCESSING = true, SUCCEEDED = true, FAILED = true, UNKNOWN = true,
                QUEUED = true, REVIEW = true},
  PROCESSING = {SUCCEEDED = true, FAILED = true, REVIEW = true},
  UNKNOWN = {PROCESSING = true, SUCCEEDED = true, FAILED = true, REVIEW = true, QUEUED = true},
  REVIEW = {SUCCEEDED = true, FAILED = true},
}
local FINAL = {SUCCEEDED = true, FAILED = true, CANCELLED = true}
-- Final states need no time index; REVIEW keeps one so people can list it.
local INDEXED = {HELD = true, QUEUED = true, SUBMITTING = true, PROCESSING = true,
                 UNKNOWN = true, REVIEW = true}

local prefix, trade_no, target = ARGV[1], ARGV[2], ARGV[3]
local expected, note, is_report = ARGV[4], ARGV[5], ARGV[6] == '1'

local order = redis.call('HMGET', KEYS[1], 'state', 'batch', 'currency', 'cents')
local current = order[1]
if not current then return {'missing', ''} end

local t = redis.call('TIME')
local now = tostring(t[1] * 1000 + math.floor(t[2] / 1000))
local function history(entry)
  if note ~= '' then entry = entry .. ' ' .. note end
  redis.call('RPUSH', KEYS[2], now .. ' ' .. entry)
end
local function store_fields()
  if #ARGV >= 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
end

if current == target then
  store_fields()
  return {'same', current}
end
if expected ~= '' and not string.find(',' .. expected .. ',', ',' .. current .. ',', 1, true) then
  return {'unexpected', current}
end
if FINAL[current] then
  if is_report and FINAL[target] then
    redis.call('HINCRBY', prefix .. ':batch:' .. order[2], 'discrepancies', 1)
    redis.call('HSET', KEYS[1], 'discrepancy', target .. ' ' .. note)
    redis.call('ZADD', prefix .. ':discrepancies', now, trade_no)
    history('DISCREPANCY ' .. target)
  end
  return {'final', current}
end
if not ALLOWED[current][target] then return {'forbidden', current} end

local batch = prefix .. ':batch:' .. order[2]
if INDEXED[current] then redis.call('ZREM', prefix .. ':state:' .. current, trade_no) end
if INDEXED[target] then redis.call('ZADD', prefix .. ':state:' .. target, now, trade_no) end
redis.call('HINCRBY', batch, 'n:' .. current, -1)
redis.call('HINCRBY', batch, 'n:' .. target, 1)
redis.call('HINCRBY', prefix .. ':counts', current, -1)
redis.call('HINCRBY', prefix .. ':counts', target, 1)
redis.call('HINCRBY', batch, 'c:' .. current .. ':' .. order[3], -tonumber(order[4]))
redis.call('HINCRBY', batch, 'c:' .. target .. ':' .. order[3], tonumber(order[4]))
redis.call('HSET', KEYS[1], 'state', target, 'updated', now)
if target == 'SUBMITTING' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
store_fields()
history(target)
return {'ok', current}
