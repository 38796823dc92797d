"""The shared ledger's schema (numbered migrations) and its longer statements."""

from __future__ import annotations

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE asyncdicom.meta (
        job TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (job, key)
    );
    CREATE TABLE asyncdicom.requests (
        job TEXT NOT NULL,
        key TEXT NOT NULL,
        line INTEGER NOT NULL,
        elements TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'partial')),
        in_plan BOOLEAN NOT NULL DEFAULT TRUE,
        attempts INTEGER NOT NULL DEFAULT 0,
        status INTEGER,
        category TEXT,
        error TEXT,
        matches INTEGER,
        elapsed DOUBLE PRECISION,
        updated DOUBLE PRECISION,
        completed INTEGER,
        failed_ops INTEGER,
        warning_ops INTEGER,
        received INTEGER,
        missing TEXT,
        transient BOOLEAN NOT NULL DEFAULT FALSE,
        holder TEXT,
        lease_until TIMESTAMPTZ,
        settled_by TEXT,
        PRIMARY KEY (job, key)
    );
    CREATE INDEX requests_claim ON asyncdicom.requests (job, state, line) WHERE in_plan;
    CREATE TABLE asyncdicom.matches (
        job TEXT NOT NULL, request_key TEXT NOT NULL, idx INTEGER NOT NULL, attrs TEXT NOT NULL,
        PRIMARY KEY (job, request_key, idx)
    );
    CREATE TABLE asyncdicom.runs (
        id BIGSERIAL PRIMARY KEY,
        job TEXT NOT NULL,
        host TEXT NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION,
        outcome TEXT,
        counts TEXT
    );
    CREATE INDEX runs_job ON asyncdicom.runs (job, id);
    CREATE TABLE asyncdicom.instances (
        job TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        request_key TEXT,
        path TEXT NOT NULL,
        size BIGINT NOT NULL,
        transfer_syntax TEXT,
        state TEXT NOT NULL,
        received DOUBLE PRECISION NOT NULL,
        warning TEXT,
        sha256 TEXT,
        host TEXT NOT NULL,
        directory TEXT NOT NULL,
        PRIMARY KEY (job, sop_uid, path)
    );
    CREATE INDEX instances_request ON asyncdicom.instances (job, request_key);
    CREATE TABLE asyncdicom.hosts (
        job TEXT NOT NULL,
        holder TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        directory TEXT,
        started TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (job, holder)
    );
    CREATE TABLE asyncdicom.slots (
        job TEXT NOT NULL, n INTEGER NOT NULL, holder TEXT, lease_until TIMESTAMPTZ, PRIMARY KEY (job, n)
    );
    """,
    # a host's renewals and its leaving find what it holds without reading the job's every request
    2: """
    CREATE INDEX requests_held ON asyncdicom.requests (job, holder) WHERE holder IS NOT NULL;
    CREATE INDEX slots_held ON asyncdicom.slots (job, holder) WHERE holder IS NOT NULL;
    """,
    # a host waiting for an association slot says so, until when: the others keep to their share
    3: """
    ALTER TABLE asyncdicom.hosts ADD COLUMN wants_until TIMESTAMPTZ;
    """,
    # instances by request, its key first: an index that began with the job was the planner's pick
    # for a batch's twin lookups in a job newer than the table's statistics (it expected one row of
    # the job): all the job's instances read for each UID
    4: """
    DROP INDEX asyncdicom.instances_request;
    CREATE INDEX instances_by_request ON asyncdicom.instances (request_key, job);
    """,
    # each match says which host's result it is: of two hosts settling one request at the same
    # moment, the later could not see the earlier's new rows to remove them; a request's matches
    # are those of the host that settled it last (rows of earlier schemas have none: all theirs)
    5: """
    ALTER TABLE asyncdicom.matches ADD COLUMN holder TEXT;
    """,
}

# a match row that belongs to its request's result (see schema 5); m and r: matches and requests
OWN_MATCH = "(m.holder IS NULL OR m.holder = r.settled_by)"

HELD_BACK = """
    SELECT CASE WHEN i.state IN ('quarantined', 'skipped') THEN i.state ELSE 'kept compressed' END AS kind,
           i.warning, COUNT(*)
    FROM asyncdicom.instances i LEFT JOIN asyncdicom.requests r ON r.job = i.job AND r.key = i.request_key
    WHERE i.job = %(job)s AND (r.in_plan OR i.request_key IS NULL)
      AND (i.state IN ('quarantined', 'skipped') OR (i.state != 'duplicate' AND i.warning LIKE %(kept)s))
    GROUP BY kind, i.warning ORDER BY COUNT(*) DESC, kind, i.warning
"""

# what a host may claim now, one condition for each kind, shared by CLAIM and OUTLOOK (a host that
# looked for claimable requests by other terms than it claims by would wait, or ask, for nothing)
CLAIMABLE_PENDING = """
    job = %(job)s AND in_plan AND state = 'pending' AND (lease_until IS NULL OR lease_until < now())
"""
CLAIMABLE_PARTIAL = """
    job = %(job)s AND in_plan AND state = 'partial' AND (lease_until IS NULL OR lease_until < now())
    AND (updated IS NULL OR updated < %(since)s)
"""

CLAIM = f"""
    -- pending requests first, in plan order, then partial ones to ask again: each an ordered read
    -- of the claim index that stops at what it takes (one OR in the condition made it read, and
    -- sort, every open request of the job at each claim)
    WITH pending AS MATERIALIZED (
        SELECT key FROM asyncdicom.requests WHERE {CLAIMABLE_PENDING}
        ORDER BY line, key LIMIT %(count)s FOR UPDATE SKIP LOCKED
    ), partial AS MATERIALIZED (
        SELECT key FROM asyncdicom.requests WHERE {CLAIMABLE_PARTIAL}
        ORDER BY line, key LIMIT %(count)s - (SELECT COUNT(*) FROM pending) FOR UPDATE SKIP LOCKED
    ), free AS (
        SELECT ARRAY(SELECT key FROM pending UNION ALL SELECT key FROM partial) AS keys
    )
    UPDATE asyncdicom.requests r SET holder = %(holder)s, lease_until = now() + %(lease)s * interval '1 second'
    FROM free WHERE r.job = %(job)s AND r.key = ANY(free.keys)  -- by the primary key, one lookup each
    RETURNING r.key, r.state, r.missing
"""


OUTLOOK = f"""
    SELECT EXISTS (  -- requests unsettled that another host holds, or nobody (not claimable by this run)
               SELECT 1 FROM asyncdicom.requests WHERE job = %(job)s AND in_plan AND state = 'pending'
                 AND holder IS DISTINCT FROM %(holder)s),
           -- requests this host could claim now, each kind by its own read of the claim index
           EXISTS (SELECT 1 FROM asyncdicom.requests WHERE {CLAIMABLE_PENDING})
           OR EXISTS (SELECT 1 FROM asyncdicom.requests WHERE {CLAIMABLE_PARTIAL})
"""


# a batch of results as one statement (atomic by itself, one round trip: a transaction of its
# six statements made the settling of a request seven round trips): its instances, its settled
# requests (never over one done already, by this host or another), their matches, and a note to
# the job's hosts when any request was settled; returns the stored twins of its instances and
# the requests it settled
_NEW_INSTANCES = """
    new AS (
        SELECT * FROM unnest(%(uids)s::text[], %(keys)s::text[], %(paths)s::text[], %(sizes)s::bigint[],
                             %(syntaxes)s::text[], %(states)s::text[], %(warnings)s::text[])
            AS u (sop_uid, request_key, path, size, transfer_syntax, state, warning)
    ), added AS (
        INSERT INTO asyncdicom.instances (job, received, host, directory, sop_uid, request_key, path, size,
                                          transfer_syntax, state, warning)
        SELECT %(job)s, %(now)s, %(host)s, %(directory)s, new.* FROM new
        ON CONFLICT (job, sop_uid, path) DO NOTHING
    )
"""

SETTLE_COLUMNS = (
    "key", "state", "attempts", "status", "category", "error", "matches", "elapsed", "completed", "failed_ops",
    "warning_ops", "received", "missing", "transient",
)  # fmt: skip

_SETTLE = """
    settled AS (
        UPDATE asyncdicom.requests r SET state = u.state, attempts = r.attempts + u.attempts, status = u.status,
            category = u.category, error = u.error, matches = u.matches, elapsed = u.elapsed, updated = %(now)s,
            completed = u.completed, failed_ops = u.failed_ops, warning_ops = u.warning_ops,
            received = u.received, missing = u.missing, transient = u.transient, holder = NULL,
            lease_until = NULL, settled_by = %(holder)s
        FROM unnest(%(key)s::text[], %(state)s::text[], %(attempts)s::int[], %(status)s::int[],
                    %(category)s::text[], %(error)s::text[], %(matches)s::int[], %(elapsed)s::float8[],
                    %(completed)s::int[], %(failed_ops)s::int[], %(warning_ops)s::int[], %(received)s::int[],
                    %(missing)s::text[], %(transient)s::bool[])
            AS u (key, state, attempts, status, category, error, matches, elapsed, completed, failed_ops,
                  warning_ops, received, missing, transient)
        WHERE r.job = %(job)s AND r.key = u.key AND r.state != 'done'
        RETURNING r.key
    ), answers AS (  -- the settled requests' matches, numbered from 0 for each
        SELECT a.* FROM unnest(%(answer_keys)s::text[], %(answer_idx)s::int[], %(answer_attrs)s::text[])
            AS a (request_key, idx, attrs)
        WHERE a.request_key IN (SELECT key FROM settled)
    ), cleared AS (  -- a settled request's earlier matches beyond its new ones (one statement must not
        -- both delete a row and insert its key again: the others are overwritten), found by a
        -- lookup of the primary key for each request (by a join, the planner, expecting one match
        -- of a job newer than the table's statistics, read all the job's matches for each batch)
        DELETE FROM asyncdicom.matches WHERE ctid = ANY(ARRAY(
            SELECT unnest(ARRAY(
                SELECT m.ctid FROM asyncdicom.matches m WHERE m.job = %(job)s AND m.request_key = s.key
                  AND m.idx >= (SELECT COUNT(*) FROM answers a WHERE a.request_key = s.key)
            )) FROM settled s
        ))
    ), answered AS (
        INSERT INTO asyncdicom.matches (job, request_key, idx, attrs, holder)
        SELECT %(job)s, a.*, %(holder)s FROM answers a
        ON CONFLICT (job, request_key, idx) DO UPDATE SET attrs = excluded.attrs, holder = excluded.holder
    ), told AS (  -- a host waiting for the last requests may be done (sent at commit)
        SELECT pg_notify(%(channel)s, %(payload)s) FROM (SELECT 1 FROM settled LIMIT 1) AS any_settled
    )
"""

# the stored twins of the batch's instances, read as they were before this statement: one
# primary-key lookup per UID, a subquery each (with a plain `sop_uid = ANY(...)` the planner read
# every row of the job for each batch until the job had statistics; and, while an index of
# request keys began with the job, through that index for each UID: schema 4)
_TWINS = """
    SELECT 'twin' AS kind, w.uid, p.path FROM unnest(%(uids)s::text[]) AS w (uid), LATERAL unnest(ARRAY(
        SELECT i.path FROM asyncdicom.instances i WHERE i.job = %(job)s AND i.sop_uid = w.uid ORDER BY i.path
    )) AS p (path)
"""

RECORD = f"""
    WITH {_NEW_INSTANCES}, {_SETTLE}
    {_TWINS}
    UNION ALL SELECT 'settled', key, NULL FROM settled
    UNION ALL SELECT 'told', NULL, NULL FROM told  -- read, so that it runs
"""


# the rows of held-back instances processed again (their UIDs): one primary-key lookup per UID (by
# `sop_uid = ANY(...)`, the planner, expecting one row of a job newer than the statistics, read
# every instance of the job for each batch)
FORGET_HELD = """
    DELETE FROM asyncdicom.instances WHERE ctid = ANY(ARRAY(
        SELECT unnest(ARRAY(SELECT i.ctid FROM asyncdicom.instances i WHERE i.job = %(job)s AND i.sop_uid = u.uid))
        FROM unnest(%(uids)s::text[]) AS u (uid)
    ))
"""


# verify --checksums: the SHA-256 of this host's stored instances, found by the primary key
CHECKSUMS = """
    UPDATE asyncdicom.instances i SET sha256 = u.sha256
    FROM unnest(%(uids)s::text[], %(paths)s::text[], %(digests)s::text[]) AS u (sop_uid, path, sha256)
    WHERE i.job = %(job)s AND i.sop_uid = u.sop_uid AND i.path = u.path AND i.host = %(host)s
      AND i.directory = %(directory)s
"""


# the hosts running the job (a heartbeat younger than a lease) and whether another one waits for a
# slot: what the fair share is reckoned from, by the heartbeat (over_share) and by TAKE_SLOT alike
LIVE_HOSTS = """
    SELECT COUNT(*) AS hosts,
           COALESCE(bool_or(holder != %(holder)s AND wants_until > now()), FALSE) AS others_want
    FROM asyncdicom.hosts WHERE job = %(job)s AND heartbeat > now() - %(lease)s * interval '1 second'
"""

TAKE_SLOT = f"""
    WITH live AS ({LIVE_HOSTS}),
    free AS MATERIALIZED (  -- beyond its share of the slots, a host takes one only if no other host waits
        SELECT n FROM asyncdicom.slots, live
        WHERE job = %(job)s AND (holder IS NULL OR lease_until < now())
          AND (NOT live.others_want OR %(held)s < ceil(%(count)s::numeric / GREATEST(1, live.hosts)))
        ORDER BY n LIMIT 1 FOR UPDATE OF slots SKIP LOCKED
    ), taken AS (
        UPDATE asyncdicom.slots s SET holder = %(holder)s, lease_until = now() + %(lease)s * interval '1 second'
        FROM free WHERE s.job = %(job)s AND s.n = free.n
        RETURNING s.n
    ), wanting AS (  -- refused, or served while another of its workers waits: this host waits (it asks
        -- again at least every second); served with none waiting: no more
        UPDATE asyncdicom.hosts
        SET wants_until = CASE WHEN EXISTS (SELECT 1 FROM taken) AND NOT %(more)s THEN NULL
                               ELSE now() + interval '3 seconds' END
        WHERE job = %(job)s AND holder = %(holder)s
    ), told AS (  -- refused: the hosts beyond their share hear that one waits (sent at commit)
        SELECT pg_notify(%(channel)s, %(wanted)s) WHERE NOT EXISTS (SELECT 1 FROM taken)
    )
    SELECT n FROM taken UNION ALL SELECT NULL FROM told  -- told is read, so that it runs
"""

# a host's heartbeat: it renews its leases, and learns how many hosts run the job and whether
# another waits for a slot (its own row as of its last beat, younger than a lease: counted)
BEAT = f"""
    WITH beat AS (
        UPDATE asyncdicom.hosts SET heartbeat = now() WHERE job = %(job)s AND holder = %(holder)s
    ), requests AS (
        UPDATE asyncdicom.requests SET lease_until = now() + %(lease)s * interval '1 second'
        WHERE job = %(job)s AND holder = %(holder)s
    ), slots AS (
        UPDATE asyncdicom.slots SET lease_until = now() + %(lease)s * interval '1 second'
        WHERE job = %(job)s AND holder = %(holder)s
    )
    {LIVE_HOSTS}
"""

# slots a host gives back to the job, and the note that tells the others (sent at commit)
GIVE_SLOTS = """
    WITH given AS (
        UPDATE asyncdicom.slots SET holder = NULL, lease_until = NULL
        WHERE job = %(job)s AND holder = %(holder)s AND n = ANY(%(numbers)s)
    )
    SELECT pg_notify(%(channel)s, %(freed)s)
"""
