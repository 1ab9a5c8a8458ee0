-- Webhooks (issue 8): endpoints with sealed signing secrets, one durable
-- message per (event, endpoint), one row per delivery attempt.

-- The dispatcher marks each outbox event once it has become messages.
-- Events from before webhooks existed are not sent.
ALTER TABLE events ADD COLUMN webhooks_dispatched_at timestamptz;
UPDATE events SET webhooks_dispatched_at = created_at;
CREATE INDEX events_undispatched ON events (id) WHERE webhooks_dispatched_at IS NULL;

-- Wakes the dispatcher as soon as an outbox row commits (it also polls).
CREATE FUNCTION portico_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portico_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION portico_events_notify();

CREATE TABLE webhook_endpoints (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                         text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description                 text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    -- Empty: every event type.
    event_types                 text[] NOT NULL DEFAULT '{}',
    enabled                     boolean NOT NULL DEFAULT true,
    disabled_reason             text CHECK (disabled_reason IN ('manual', 'gone', 'failing')),
    secret_key_id               text NOT NULL,
    secret_sealed               bytea NOT NULL,
    -- The secret before the last rotation keeps signing until it expires.
    previous_secret_key_id      text,
    previous_secret_sealed      bytea,
    previous_secret_expires_at  timestamptz,
    -- Start of the current run of failed attempts; NULL after a success.
    failing_since               timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE webhook_messages (
    -- Also the `webhook-id` header (`msg_` + simple form), stable across retries.
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id           uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id              uuid NOT NULL,
    event_type            text NOT NULL,
    event_created_at      timestamptz NOT NULL,
    data                  jsonb NOT NULL,
    status                text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts              integer NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz,
    -- A claimed message belongs to one deliver_webhook job until the lease ends;
    -- a worker that dies mid-send loses the lease and the message is sent again.
    leased_until          timestamptz,
    lease_token           uuid,
    -- The dispatcher that leased it: each caps what it has in flight.
    leased_by             uuid,
    last_response_status  integer,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, id);
CREATE INDEX webhook_messages_leased ON webhook_messages (leased_by)
    WHERE status = 'pending' AND leased_by IS NOT NULL;

CREATE TABLE webhook_attempts (
    id               uuid PRIMARY KEY,
    message_id       uuid NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    started_at       timestamptz NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    response_status  integer,
    latency_ms       integer NOT NULL,
    response_body    text,
    error            text,
    next_attempt_at  timestamptz
);
CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id, id);
