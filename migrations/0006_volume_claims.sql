-- Each claim's volume: the node it is on once its first pod was placed (NULL until then),
-- what the claim asked for, and what declares it ('PersistentVolumeClaim', or
-- 'StatefulSet/<name>' for a claim made from a template). A claim no declared object names any
-- more is orphaned: its data stays until `berth delete pvc`, unless its StatefulSet's
-- persistentVolumeClaimRetentionPolicy (copied into delete_when_deleted and delete_when_scaled
-- while it is declared) says Delete; a commit that deletes data that way waits for an approval.
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
    delete_when_deleted INTEGER NOT NULL DEFAULT 0,
    delete_when_scaled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, name)
);
