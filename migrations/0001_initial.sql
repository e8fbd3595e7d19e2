-- The memory of the control plane. Timestamps are integer seconds since the Unix epoch and JSON
-- is stored as text, so that the same schema runs on PostgreSQL.

-- Every commit berth has seen.
CREATE TABLE commits (
    sha TEXT PRIMARY KEY NOT NULL,
    author TEXT NOT NULL,
    message TEXT NOT NULL,
    committed_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);

-- The objects as berth last applied them: the observed side of a plan.
CREATE TABLE applied_objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    commit_sha TEXT NOT NULL REFERENCES commits (sha),
    file TEXT NOT NULL,
    line BIGINT NOT NULL,
    spec_hash TEXT NOT NULL,
    -- The canonical object as JSON, secret values redacted.
    canonical TEXT NOT NULL,
    -- A Secret's keys with a digest of each value, as JSON; `{}` for other kinds.
    sensitive_digests TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);

-- Single values of the control plane, such as the commit applied last.
CREATE TABLE control (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
