-- Named API tokens: who may do what. Only a token's SHA-256 digest is kept; the token itself
-- is printed once when it is made. A revoked token stays (revoked_at) so its name is not reused
-- and the audit log's names keep meaning one holder.
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    role TEXT NOT NULL,
    -- JSON array of namespaces; empty means every namespace.
    namespaces TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);

-- What was done through the user API, by whom, and how it ended.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    address TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
