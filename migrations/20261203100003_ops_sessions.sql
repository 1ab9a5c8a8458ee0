-- Ops dashboard sessions (issue 7): an operator who logged in with the
-- operator token gets a random session id in a cookie; only its SHA-256 is
-- stored, so a database reader cannot ride a session. Stored here (not in
-- memory) so every control-plane replica honours it.
CREATE TABLE ops_sessions (
    id_hash       bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    -- Sent back in every state-changing form (double check with Origin /
    -- Sec-Fetch-Site).
    csrf_token    text NOT NULL CHECK (length(csrf_token) BETWEEN 32 AND 128),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX ops_sessions_expires ON ops_sessions (expires_at);

-- The overview lists certificates that expire soon without reading every
-- certificate.
CREATE INDEX certificates_not_after ON certificates (not_after);

-- The overview counts domains by (status, TLS status): with this index the
-- count is an index-only scan instead of reading every row (half the time
-- at 200,000 domains, docs/benchmarks.md).
CREATE INDEX domains_status ON domains (status, tls_status);
