-- Revisions, pins and sync records: what the control plane decided about each commit.

-- Each spec of a workload that a commit started rolling out, and how that ended:
-- `progressing`, `healthy` or `failed`. A commit that leaves a workload's spec as it was adds no row.
CREATE TABLE revisions (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    commit_sha TEXT NOT NULL REFERENCES commits (sha),
    spec_hash TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name, commit_sha)
);

-- A workload held at an earlier commit's spec by `berth rollback`, until the branch head moves
-- away from `head_sha`.
CREATE TABLE pins (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    commit_sha TEXT NOT NULL REFERENCES commits (sha),
    head_sha TEXT NOT NULL,
    pinned_at BIGINT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);

-- One record per commit the server saw on its branch: the plan it made for it against the
-- applied state (with that state's index) and what became of it.
CREATE TABLE syncs (
    commit_sha TEXT PRIMARY KEY NOT NULL REFERENCES commits (sha),
    seen_at BIGINT NOT NULL,
    -- `failed` (did not load), `waiting` (for approval), `progressing`, `synced`, `degraded`,
    -- `superseded` (a newer commit came first).
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    state_index BIGINT NOT NULL,
    plan_text TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    approved_at BIGINT,
    finished_at BIGINT
);
