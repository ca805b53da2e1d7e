-- Compare-and-delete for the shared OAuth token: forget the cached token only if
-- it is still the one a caller saw rejected (HTTP 401).
--
-- KEYS[1]  the token cache key.
-- ARGV[1]  the token the caller used and the provider rejected.
--
-- Returns 1 when the cached token was that one and is now deleted, else 0 (already
-- gone, or already replaced by a fresh token that must survive). This is what
-- makes N workers seeing the same 401 cause exactly one refresh.

if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
