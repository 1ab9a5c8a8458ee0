-- Config distribution: one global config version, a change log of the keys
-- each version touched, the registered edges, and stored certificates.
--
-- Every transaction that changes what edges serve bumps config_state.version
-- (a row lock held to commit, so versions commit in order) and inserts one
-- config_changes row per key it touched. A delta from version V is "every key
-- changed after V, resolved against the current state", so older rows for a
-- key that changed again later can be deleted (compaction) without changing
-- any delta, and rows below log_floor are gone (retention): an edge older
-- than log_floor gets a full snapshot.

CREATE TABLE config_state (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    version     bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    log_floor   bigint NOT NULL DEFAULT 0 CHECK (log_floor >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO config_state DEFAULT VALUES;

CREATE TABLE config_changes (
    version     bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('host', 'certificate', 'settings')),
    key         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, kind, key)
);
CREATE INDEX config_changes_key ON config_changes (kind, key, version);
CREATE INDEX config_changes_created ON config_changes (created_at);

CREATE TABLE edges (
    id               uuid PRIMARY KEY,
    name             text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    region           text NOT NULL CHECK (region ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
    token_prefix     text NOT NULL UNIQUE,
    token_hash       bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    last_seen_at     timestamptz,
    applied_version  bigint,
    build            text,
    uptime_secs      bigint,
    hosts            bigint,
    certificates     bigint,
    counters         jsonb NOT NULL DEFAULT '{}',
    rejection        jsonb
);

-- The certificate each domain serves. The private key is sealed with
-- AES-256-GCM under the key named by key_id (PORTICO_ENCRYPTION_KEYS).
CREATE TABLE certificates (
    domain_id    uuid PRIMARY KEY REFERENCES domains (id) ON DELETE CASCADE,
    names        text[] NOT NULL,
    chain_pem    text NOT NULL,
    key_id       text NOT NULL,
    key_sealed   bytea NOT NULL,
    not_after    timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
