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

# Setting NO_RECORD_GRACE: a POST that may have arrived (UNKNOWN, or a claim whose
# worker is gone) is resubmitted with the same tradeNo once two lookups at least this
# many seconds apart both showed no record of it: a request still in flight at the
# provider may not show at first. The resubmission is safe because the provider
# refuses a repeated tradeNo.
NO_RECORD_GRACE = 30.0
# Resubmission rounds of an order the provider keeps showing no record of, before a
# person looks at it (REVIEW).
MAX_NO_RECORD_RESUBMITS = 3

# Setting LEASE_TTL: seconds a submit or lookup task's lease on its orders lasts unless
# renewed (worker.coordination.leases); a live task renews it every third of that, so
# two renewals may be missed (a starved thread on a busy machine) before it expires.
LEASE_TTL = 15.0
