-- Each claim's volume: the node it is on once its first pod was placed (NULL until then),
-- what the claim asked for, and what declares it ('PersistentVolumeClaim', or
-- 'StatefulSet/<name>' for a claim made from a template). A claim no declared object names any
-- more is orphaned, never removed by a sync: its data stays until `berth delete pvc`.
CREATE TABLE volume_claims (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    node TEXT,
    storage TEXT NOT NULL,
    access_modes TEXT NOT NULL,
    storage_class TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    orphaned_at INTEGER,
    PRIMARY KEY (namespace, name)
);
