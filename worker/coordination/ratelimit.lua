-- Cluster-wide rate limiter: GCRA (generic cell rate algorithm). Slots are due one
-- emission interval apart on a fixed schedule; a caller may take a due slot up to
-- `tolerance` early, so a grant landing a little late does not shift every later
-- slot (the schedule advances from the slot, not from the late caller's clock).
--
-- KEYS[1]  the limiter's key; holds the theoretical arrival time (TAT): the
--          server time, in microseconds, at which the next slot is due.
-- ARGV[1]  emission interval in microseconds (positive integer).
-- ARGV[2]  penalty in microseconds. 0: try to take a slot. > 0: a provider 429,
--          so push the schedule to at least now + penalty (no slot is taken).
-- ARGV[3]  tolerance in microseconds (0 <= tolerance <= interval): how early a
--          slot may be taken. Any n grants then span at least
--          (n - 1) * interval - tolerance, which bounds the busiest window.
-- ARGV[4]  (optional, default 1) slots wanted: once the due slot is taken, the slots
--          after it are taken too, up to this many in all, while each is due within
-- ARGV[5]  (optional, default 0) microseconds from now. The caller must not use the
--          i-th slot (from 0) before first_us + i * interval - tolerance: each slot
--          is still used no earlier than a lone take would have allowed.
--
-- Returns {wait_us, now_us, taken, first_us}: wait_us is 0 when a slot was taken (or
-- the penalty recorded), else the microseconds until the next slot (nothing taken);
-- now_us is the server time the decision was made at; taken is how many slots were
-- taken, the first due at first_us.
--
-- Time comes from the server's TIME, never from a client, so workers on machines
-- whose clocks disagree still share one schedule. Redis 7 replicates scripts by
-- their effects, which is what makes calling TIME before a write allowed.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local penalty = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4]) or 1
local ahead = tonumber(ARGV[5]) or 0

-- A missing (expired) or unreadable key means nothing is scheduled ahead of now;
-- a slot left unused in the past is gone (no saving up for a burst).
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
    tat = now
end

local first = tat
local taken = 0
local new_tat
if penalty > 0 then
    -- max(), not a sum: N workers reporting 429s from the same burst cause one
    -- pause of `penalty`, not N of them.
    new_tat = math.max(tat, now + penalty)
else
    if tat - tolerance > now then
        return {tat - tolerance - now, now, 0, tat}
    end
    taken = 1
    new_tat = tat + interval
    while taken < wanted and new_tat - tolerance <= now + ahead do
        taken = taken + 1
        new_tat = new_tat + interval
    end
end

-- The key only has to outlive the TAT (once it has passed, an absent key means
-- the same thing), so idle keys vanish right after. The expiry is absolute
-- (PXAT), computed from TIME like the TAT itself: a relative PX counts from
-- whatever time sample the server uses for SET, which may be older than TIME
-- (fakeredis samples at the start of the command and reads TIME live; Redis
-- differs between versions), and under load the key then expired before its
-- TAT and let the next caller in early.
-- Format explicitly: tostring() of a 16-digit number switches to exponent
-- notation and loses the microseconds.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
    'PXAT', string.format('%.0f', math.floor(new_tat / 1000) + 1))
return {0, now, taken, first}
