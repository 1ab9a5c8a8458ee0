-- ACME: challenge answers edges serve while an order is pending, the state
-- of each domain's issuance, the CA accounts and the log the rate budget
-- counts from. Certificates gain where they came from.

ALTER TABLE config_changes DROP CONSTRAINT config_changes_kind_check;
ALTER TABLE config_changes ADD CONSTRAINT config_changes_kind_check
    CHECK (kind IN ('host', 'certificate', 'challenge', 'settings'));

-- One row per answer; id is `http01:<token>` or `tls_alpn01:<hostname>`.
-- The TLS-ALPN-01 key is a throwaway, still sealed like every private key.
CREATE TABLE challenges (
    id                 text PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('http01', 'tls_alpn01')),
    token              text,
    key_authorization  text,
    hostname           text,
    certificate_pem    text,
    key_id             text,
    key_sealed         bytea,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'http01' AND token IS NOT NULL AND key_authorization IS NOT NULL)
        OR (kind = 'tls_alpn01' AND hostname IS NOT NULL AND certificate_pem IS NOT NULL AND key_sealed IS NOT NULL))
);

ALTER TABLE certificates ADD COLUMN issuer text NOT NULL DEFAULT 'unknown';
ALTER TABLE certificates ADD COLUMN not_before timestamptz;
ALTER TABLE certificates ADD COLUMN renew_at timestamptz;

-- Issuance state per domain: at most one order in flight per host (the row
-- is claimed with FOR UPDATE SKIP LOCKED / a lease), retried with backoff.
CREATE TABLE certificate_orders (
    domain_id        uuid PRIMARY KEY REFERENCES domains (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'issuing', 'deferred', 'failed', 'done')),
    reason           text NOT NULL DEFAULT 'new' CHECK (reason IN ('new', 'on_demand', 'renewal', 'forced')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    last_error       text,
    first_failed_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX certificate_orders_due ON certificate_orders (next_attempt_at) WHERE status IN ('queued', 'deferred');

-- ACME accounts, one per directory URL; credentials sealed.
CREATE TABLE acme_accounts (
    directory_url       text PRIMARY KEY,
    key_id              text NOT NULL,
    credentials_sealed  bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Every order and validation outcome, for the CA rate budget.
CREATE TABLE acme_events (
    id                 bigserial PRIMARY KEY,
    directory_url      text NOT NULL,
    hostname           text NOT NULL,
    registered_domain  text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('order', 'issued', 'validation_failed', 'error')),
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acme_events_recent ON acme_events (directory_url, kind, created_at);
CREATE INDEX acme_events_domain ON acme_events (registered_domain, kind, created_at);
