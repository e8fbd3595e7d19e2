-- Nodes, what they are assigned, and what they report.

CREATE TABLE nodes (
    name TEXT PRIMARY KEY NOT NULL,
    -- SHA-256 of the node's credential, hex; the credential itself is never stored.
    credential_digest TEXT NOT NULL,
    address TEXT NOT NULL,
    labels TEXT NOT NULL,
    capacity TEXT NOT NULL,
    allocatable TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL
);

-- The full list of pods a node must run, as JSON, with a generation that grows on every change.
CREATE TABLE assignments (
    node TEXT PRIMARY KEY NOT NULL REFERENCES nodes (name),
    generation BIGINT NOT NULL,
    pods TEXT NOT NULL
);

-- The last status a node reported for each of its pods, as JSON.
CREATE TABLE pod_reports (
    node TEXT NOT NULL REFERENCES nodes (name),
    namespace TEXT NOT NULL,
    pod TEXT NOT NULL,
    status TEXT NOT NULL,
    generation BIGINT NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (node, namespace, pod)
);
