-- Each node's client certificate, pinned by fingerprint (SHA-256 of its DER, hex): the current
-- one and the one it replaced (still presented on connections opened before a renewal). NULL
-- for a node that joined a server without TLS.
ALTER TABLE nodes ADD COLUMN certificate TEXT;
ALTER TABLE nodes ADD COLUMN previous_certificate TEXT;
ALTER TABLE nodes ADD COLUMN certificate_expires BIGINT;
