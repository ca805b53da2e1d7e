-- The circuit breaker's count (worker.coordination.breaker): first attempts of one
-- provider account refused at the top level, in a sorted set scored by the Redis server's
-- clock (ms), so workers on machines whose clocks disagree count one window.
--
-- KEYS[1]  the account's set; members "<code>|<tradeNo>".
-- ARGV[1]  the window in milliseconds; ARGV[2] the refusals that trip the breaker;
-- ARGV[3]  the member to add.
--
-- Returns the members within the window when there are at least ARGV[2] of them (the
-- breaker trips), else their number. The set is left to expire, so refusals that come
-- while the account pauses trip it again rather than count from zero.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then
    return redis.call('ZRANGE', KEYS[1], 0, -1)
end
return n
