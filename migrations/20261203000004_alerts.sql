-- Ops alerts (issue 7, section 4): one row per incident that pages ops.
-- The row is the source of truth for its two emails (the page and the
-- resolution): `next_email_at` says one is due, the sender leases the row,
-- sends, and records the outcome; a failed send is retried on a schedule.

CREATE TABLE alerts (
    id                     uuid PRIMARY KEY,
    -- What broke: an edge, a domain, or the platform as a whole (no id).
    subject_kind           text NOT NULL CHECK (subject_kind IN ('edge', 'domain', 'platform')),
    subject_id             uuid,
    -- Who raised it, e.g. the repair run id: one open alert per key.
    dedup_key              text NOT NULL CHECK (length(dedup_key) BETWEEN 1 AND 200),
    severity               text NOT NULL DEFAULT 'critical' CHECK (severity IN ('critical', 'warning')),
    title                  text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body                   text NOT NULL CHECK (length(body) <= 10000),
    status                 text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    opened_at              timestamptz NOT NULL DEFAULT now(),
    resolved_at            timestamptz,
    resolution_note        text CHECK (length(resolution_note) <= 10000),
    -- The page email and the resolution email: when each went out, and
    -- how many sends each took (failed ones included).
    page_sent_at           timestamptz,
    page_attempts          integer NOT NULL DEFAULT 0,
    resolution_sent_at     timestamptz,
    resolution_attempts    integer NOT NULL DEFAULT 0,
    -- An email is due at this time; NULL when none is (sent, given up, or
    -- email alerting is not configured).
    next_email_at          timestamptz,
    last_email_error       text,
    last_email_error_at    timestamptz,
    -- The retry schedule ran out for an email.
    email_gave_up_at       timestamptz,
    -- One sender at a time: a sender that dies mid-send loses the lease.
    leased_until           timestamptz,
    -- Whose lease it is: only the holder records the outcome.
    lease_token            uuid,
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK ((subject_kind = 'platform') = (subject_id IS NULL))
);
CREATE UNIQUE INDEX alerts_open_dedup ON alerts (dedup_key) WHERE status = 'open';
CREATE INDEX alerts_email_due ON alerts (next_email_at) WHERE next_email_at IS NOT NULL;
-- The ops listing: open first, newest first.
CREATE INDEX alerts_listing ON alerts ((status = 'open') DESC, id DESC);
