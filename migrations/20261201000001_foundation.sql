-- Tenants, API keys, domains, the events outbox and idempotency records.
-- Text columns with CHECK constraints rather than enum types: adding a state
-- later is a one-line constraint change, and sqlx maps them to String.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    plan        text NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix        text NOT NULL UNIQUE,
    hash          bytea NOT NULL,
    name          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE domains (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hostname            text NOT NULL UNIQUE,
    targets             text[] NOT NULL,
    target_tls          boolean NOT NULL DEFAULT false,
    keep_host           boolean NOT NULL DEFAULT false,
    redirects           text[] NOT NULL DEFAULT '{}',
    tls_on_demand       boolean NOT NULL DEFAULT true,
    custom_metadata     jsonb NOT NULL DEFAULT '{}',
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'active', 'misconfigured', 'moved', 'deleting', 'stale')),
    tls_status          text NOT NULL DEFAULT 'none'
                        CHECK (tls_status IN ('none', 'pending', 'issuing', 'active', 'renewing', 'failed')),
    verification_token  text NOT NULL,
    dns_diagnosis       jsonb,
    dns_checked_at      timestamptz,
    consecutive_wrong   integer NOT NULL DEFAULT 0,
    check_attempts      integer NOT NULL DEFAULT 0,
    next_check_at       timestamptz NOT NULL DEFAULT now(),
    verified_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX domains_tenant ON domains (tenant_id, id);
CREATE INDEX domains_tenant_hostname ON domains (tenant_id, hostname text_pattern_ops);
CREATE INDEX domains_due ON domains (next_check_at);

-- The outbox: every state change of interest to someone outside, written in
-- the same transaction as the change. Delivery (webhooks) reads from here.
CREATE TABLE events (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type        text NOT NULL,
    subject_id  uuid NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant ON events (tenant_id, id);

-- Idempotency-Key records, scoped by a hash of the caller's credential.
CREATE TABLE idempotency_keys (
    scope          bytea NOT NULL,
    key            text NOT NULL,
    request_hash   bytea NOT NULL,
    status_code    integer,
    content_type   text,
    body           bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
