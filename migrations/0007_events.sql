-- Events as Kubernetes has them: what happened to an object (`Pod/web-7f9c-0`,
-- `Deployment/web`), Normal or Warning, a reason and a message; the same event again raises
-- its count and last_seen. Bounded by age and number (`Store::add_events`).
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    object TEXT NOT NULL,
    -- The workload a pod's event belongs to (`Deployment/web`), empty for other objects.
    owner TEXT NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_same ON events (namespace, object, reason, message);
CREATE INDEX events_last_seen ON events (last_seen);
