"""The retry and timing policy's numbers, each with why it is what it is.

The ones a deployment (or a test) may set are the defaults of settings
(worker.core.settings; README's Configuration table); the rest are fixed here.
"""

from __future__ import annotations

# Claims of one order (each a POST attempt that certainly never arrived) before a
# person looks at it: the provider has been unreachable for this order for a minute
# or two (the delays between them add up to 64-127 s, see ``worker.core.backoff``).
MAX_SUBMIT_ATTEMPTS = 8
# Retries wait at most this long (Submitter caps a provider's Retry-After to it): the
# broker's visibility timeout is derived from it (Settings.visibility_timeout), or Redis
# would deliver a delayed message a second time.
MAX_DELAY = 300.0

# Setting QUERY_DELAY: an UNKNOWN order is asked about this long after its POST, long
# enough for the provider to have recorded a request that did arrive.
QUERY_DELAY = 5.0

# Setting NO_RECORD_GRACE: a POST that may have arrived (UNKNOWN) is resubmitted with
# the same tradeNo once two lookups at least this many seconds apart both showed no
# record of it: a request still in flight at the provider may not show at first (an
# abandoned claim's grace counts from its lease's end: Settings.abandoned_claim_grace).
# The resubmission is safe because the provider refuses a repeated tradeNo.
NO_RECORD_GRACE = 30.0
# Resubmission rounds of an order the provider keeps showing no record of, before a
# person looks at it (REVIEW).
MAX_NO_RECORD_RESUBMITS = 3

# Setting LEASE_TTL: seconds a submit or lookup task's lease on its orders, and a claim's
# lease (worker.coordination.leases, worker.flows.heartbeat), last unless renewed; a
# live task or claim holder renews them every third of that, so two renewals may be
# missed (a starved thread on a busy machine) before one expires.
LEASE_TTL = 15.0
# Seconds between two looks for abandoned claims (SUBMITTING orders whose lease expired:
# worker.flows.heartbeat; celeryconfig's beat entry): with LEASE_TTL and the grace after
# it (Settings.abandoned_claim_grace), a killed worker's claims are looked up about 20 s
# after the kill at most, where a pass comes only every RECONCILE_EVERY. One indexed
# query of the few SUBMITTING orders each.
CLAIM_CHECK_EVERY = 2.0
# Abandoned claims a check looks up itself; the rest go out as lookup tasks of this many
# each: a lookup task asks about its orders one after another, at the provider's latency
# each, and a killed worker may leave dozens claimed.
CLAIM_LOOKUP_CHUNK = 5

# The reconcile walk of the paged list (worker.flows.walk): seconds the provider's clock
# may be behind ours (its post_timestamp), and pages in a row with nothing new after
# which the walk is not getting anywhere.
WALK_SKEW = 60.0
WALK_STALE_PAGES = 3

# Pages of payloads erased per reconcile pass at most (about 0.1 s each;
# worker.flows.retention): a backlog (a first deploy, a long outage) is worked off over
# several passes, never holding one past its lock.
RETENTION_PAGES_PER_PASS = 20

# Orders a submit claims (and answers) in one statement while rate-limit slots come
# free at once (worker.flows.submit): the ledger's cost per payout, and the orders a
# killed worker leaves claimed (its claim's lease, then lookups, settle them), both grow
# with it. While orders wait for their slots, one at a time: the ledger is not what
# limits them then.
SUBMIT_GROUP = 16
# A group's orders are sent on one look at the pause switch (with their rate-limit
# slots) while its POSTs are quick; one that comes later than this many seconds after
# the last look looks again.
PAUSE_LOOK_EVERY = 0.05
# A sender about to POST more than this many seconds after its rate-limit slot's time (a
# machine short of CPU) takes a new slot instead: a slot used late bunches up with the
# next ones used on time, and only the limiter's headroom (3% of any second, less its
# 3 ms tolerance) keeps the busiest second within the limit; this leaves half of it to
# the network and the provider's side.
LATE_SLOT = 0.015

# An OAuth token's lifetime, seconds, when the token answer carries no expires_in at
# all (worker.provider.token); processes waiting for another's refresh poll the key
# first quickly (a refresh usually takes one HTTP round trip), then at most this often.
TOKEN_DEFAULT_EXPIRES_IN = 300.0
TOKEN_POLL_FIRST = 0.005
TOKEN_POLL_MAX = 0.05

# One task message per this many orders (worker.celery.publish): a worker works
# through them under the shared rate limit, and 100,000 orders cost 1,000 messages
# instead of 100,000. Smaller chunks for orders taken up before (worker.core.queues):
# a task works through its chunk at its share of the rate limit, and a short chunk is
# done before its budget runs out, by several workers at once.
SUBMIT_CHUNK = 100
LOOKUP_CHUNK = 50
RESUBMIT_CHUNK = 25

# A webhook event's retries (worker.outbox.deliveries): 1-2 s, 2-4 s, ...
# (worker.core.backoff), and at most an hour apart, counted from each attempt's start.
EVENT_RETRY_BASE = 2.0
EVENT_RETRY_CAP = 3600.0

# Sending webhooks (worker.outbox.sender): seconds between sending runs (celeryconfig's
# beat entry); a run sends for OUTBOX_BUDGET seconds, then leaves the rest to the next;
# (connect, read) timeouts: no answer in 10 s is a failed attempt (the wire contract).
OUTBOX_EVERY = 1.0
OUTBOX_BUDGET = 20.0
OUTBOX_TIMEOUTS = (3.05, 10.0)
# An event being sent is leased for this long (longer than a request can take: connect,
# then 10 s for the answer): the next run, which may start while this one still waits
# for its last answers, does not send it again; one whose process died is sent again
# after it.
OUTBOX_LEASE = 15.0
# Requests in flight at once (worker.outbox.concurrency): a run starts at
# OUTBOX_CONCURRENCY, grows by one per success while it uses its limit, up to
# OUTBOX_MAX_CONCURRENCY (a slow endpoint holds a request 10 s: a few slow answers must
# not hold up the rest), and halves when requests get no answer or most of them fail.
OUTBOX_CONCURRENCY = 8
OUTBOX_MAX_CONCURRENCY = 64
# A request unanswered after OUTBOX_SLOW seconds (a healthy endpoint answers well within
# it) no longer counts against that limit: slow answers (up to the 10 s timeout) hold a
# thread each, not the other events' turn; OUTBOX_MAX_IN_FLIGHT requests at most in all.
OUTBOX_SLOW = 2.0
OUTBOX_MAX_IN_FLIGHT = 256
# The endpoint's breaker (worker.outbox.breaker) judges the attempts of the last
# OUTBOX_WINDOW seconds (at least the last OUTBOX_WINDOW_LEAST, however old): from
# OUTBOX_TRIP_RATE of them failed on, the endpoint is dead and gets one request at a
# time, backing off up to OUTBOX_PROBE_CAP seconds, until one succeeds. An endpoint
# failing 35% of the time is far below it (24 of 30 attempts failing: 1 in 1.7 million;
# the window holds many more while many are sent). From OUTBOX_STRUGGLING_RATE failed
# on, a failure halves the concurrency.
OUTBOX_WINDOW = 30.0
OUTBOX_WINDOW_LEAST = 30
OUTBOX_TRIP_RATE = 0.8
OUTBOX_STRUGGLING_RATE = 0.5
OUTBOX_PROBE_CAP = 30.0
# Seconds a run with nothing to send waits for transactions still running.
OUTBOX_PATIENCE = 5.0

# Orders a reconcile pass reads or restarts per round trip (worker.flows.reconcile).
RECONCILE_PAGE = 500

# Each lock wait of a migration (worker.db.migrate), seconds (PG_LOCK_TIMEOUT's
# default); tries per migration; the longest pause between two tries.
MIGRATION_LOCK_TIMEOUT = 10.0
MIGRATION_LOCK_ATTEMPTS = 5
MIGRATION_LOCK_BACKOFF_CAP = 30.0

# Seconds the database readiness check waits for a connection (worker.db.readiness;
# libpq counts whole seconds): a server that cannot be reached is reported after this,
# not after the system's TCP timeout.
DB_CHECK_CONNECT_TIMEOUT = 5

# Seconds between the beat's releases of held batches (worker.flows.approvals): a batch
# scheduled for a time goes within this long after it, and one held by the daily limit
# this long after the market's day turns; each run reads only the batches held.
RELEASE_EVERY = 15.0

# The operations console (worker.console, worker.flows.users). Failed sign-ins of one name
# from one address within SIGNIN_WINDOW seconds after which sign-in is refused until the
# window passes: slows password guessing to a few tries per quarter hour without locking
# the user out from elsewhere.
SIGNIN_FAILURES = 5
SIGNIN_WINDOW = 900.0
# Seconds without a request after which a console session must sign in again.
CONSOLE_IDLE_TIMEOUT = 1800.0
# Shortest password the console accepts for a user (NIST SP 800-63B's minimum is 8).
PASSWORD_MIN_LENGTH = 12
# Rows a console page lists at a time (batches, review queue, audit trail).
CONSOLE_PAGE = 50
