-- Health and self-repair (issue 7): traffic reported by edges, check state
-- with hysteresis, escalation runs and their steps, and the notifications
-- that drive the ops dashboard's live updates.

-- Per-host traffic of one edge in one window (10 s), as the edge reported it
-- (protocol `StatsWindow`). Written by the `ingest_report` job; an edge that
-- re-sends a window (a retried POST) overwrites it, so ingesting is
-- idempotent. `domain_id` is resolved from `host` at ingest (NULL for a host
-- no domain has any more). Pruned after `PORTICO_TRAFFIC_RETENTION`.
CREATE TABLE traffic_windows (
    host                       text NOT NULL,
    window_start               timestamptz NOT NULL,
    edge_id                    uuid NOT NULL REFERENCES edges (id) ON DELETE CASCADE,
    domain_id                  uuid REFERENCES domains (id) ON DELETE SET NULL,
    secs                       integer NOT NULL CHECK (secs BETWEEN 1 AND 3600),
    requests                   bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
    status_2xx                 bigint NOT NULL DEFAULT 0 CHECK (status_2xx >= 0),
    status_3xx                 bigint NOT NULL DEFAULT 0 CHECK (status_3xx >= 0),
    status_4xx                 bigint NOT NULL DEFAULT 0 CHECK (status_4xx >= 0),
    status_5xx                 bigint NOT NULL DEFAULT 0 CHECK (status_5xx >= 0),
    upstream_connect_failures  bigint NOT NULL DEFAULT 0 CHECK (upstream_connect_failures >= 0),
    tls_handshake_failures     bigint NOT NULL DEFAULT 0 CHECK (tls_handshake_failures >= 0),
    -- Upper bounds (ms, ascending) and counts, index for index.
    latency_bounds_ms          integer[] NOT NULL DEFAULT '{}',
    latency_counts             bigint[] NOT NULL DEFAULT '{}',
    received_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, window_start, edge_id)
);
CREATE INDEX traffic_windows_domain ON traffic_windows (domain_id, window_start) WHERE domain_id IS NOT NULL;
CREATE INDEX traffic_windows_edge ON traffic_windows (edge_id, window_start);
CREATE INDEX traffic_windows_start ON traffic_windows (window_start);

-- What the health checks last concluded about one (subject, check kind),
-- with hysteresis: `failing` flips on after `fail_threshold` consecutive
-- failures and off after `pass_threshold` consecutive passes.
CREATE TABLE health_states (
    subject_kind          text NOT NULL CHECK (subject_kind IN ('edge', 'domain')),
    subject_id            uuid NOT NULL,
    kind                  text NOT NULL CHECK (kind IN ('edge_unreachable', 'certificate', 'upstream', 'dns')),
    failing               boolean NOT NULL DEFAULT false,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    consecutive_passes    integer NOT NULL DEFAULT 0,
    -- The last check: when, whether it passed, and what it saw (words and data).
    checked_at            timestamptz NOT NULL DEFAULT now(),
    last_passed           boolean NOT NULL DEFAULT true,
    last_detail           text NOT NULL DEFAULT '',
    last_data             jsonb NOT NULL DEFAULT '{}',
    -- When `failing` last changed.
    changed_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_kind, subject_id, kind)
);
CREATE INDEX health_states_failing ON health_states (subject_kind, kind) WHERE failing;

-- One escalation: the ladder for `kind` climbing for one subject. At most
-- one run per (subject, kind) is not closed.
CREATE TABLE repair_runs (
    id               uuid PRIMARY KEY,
    subject_kind     text NOT NULL CHECK (subject_kind IN ('edge', 'domain')),
    subject_id       uuid NOT NULL,
    -- The tenant owning the domain (NULL for edges): who may read the run.
    tenant_id        uuid REFERENCES tenants (id) ON DELETE CASCADE,
    -- A label for people: the edge's name or the domain's hostname.
    subject_name     text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('edge_unreachable', 'certificate', 'upstream', 'dns')),
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paused', 'closed')),
    -- Why it opened: the failing check's words.
    reason           text NOT NULL,
    -- The next rung of the ladder to run (0-based), and when.
    next_rung        integer NOT NULL DEFAULT 0 CHECK (next_rung >= 0),
    next_step_at     timestamptz,
    -- How it ended: `recovered` (a re-check passed), `closed_by_operator`,
    -- `subject_gone` (the edge or domain was deleted), `stale` (the DNS
    -- ladder's last word: the customer's choice, nobody paged).
    outcome          text CHECK (outcome IN ('recovered', 'closed_by_operator', 'subject_gone', 'stale')),
    outcome_note     text,
    -- The page this run raised, if it reached the ladder's top.
    alert_id         uuid REFERENCES alerts (id) ON DELETE SET NULL,
    -- When the tenant was told (`health.degraded`); a recovery is then told too.
    tenant_notified_at timestamptz,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    closed_at        timestamptz,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CHECK ((status = 'closed') = (outcome IS NOT NULL))
);
CREATE UNIQUE INDEX repair_runs_one_open ON repair_runs (subject_kind, subject_id, kind) WHERE status <> 'closed';
CREATE INDEX repair_runs_subject ON repair_runs (subject_kind, subject_id, id DESC);
CREATE INDEX repair_runs_tenant ON repair_runs (tenant_id, subject_id, id DESC) WHERE tenant_id IS NOT NULL;
CREATE INDEX repair_runs_due ON repair_runs (next_step_at) WHERE status = 'open';
CREATE INDEX repair_runs_listing ON repair_runs ((status <> 'closed') DESC, id DESC);

-- One rung executed for one run: the re-check, then (if still failing) the
-- repair. A step without `finished_at` is in flight; the worker running it
-- touches `alive_at` while it works. A worker that dies stops touching it,
-- and once it is older than the step lease the next worker records the step
-- as `interrupted` and runs the rung again (repairs are idempotent).
CREATE TABLE repair_steps (
    id            uuid PRIMARY KEY,
    run_id        uuid NOT NULL REFERENCES repair_runs (id) ON DELETE CASCADE,
    rung          integer NOT NULL CHECK (rung >= 0),
    -- The repair this rung runs (`probe`, `resync`, `restart`, `replace`,
    -- `page`, `repush_certificate`, `recheck_dns`, `reissue`, `fallback_issuer`,
    -- `notify_tenant`, `reprobe_upstream`, `mark_degraded`, `mark_misconfigured`,
    -- `mark_stale`).
    action        text NOT NULL,
    -- What the re-check looked at and what it saw.
    checked       text NOT NULL DEFAULT '',
    check_passed  boolean,
    -- What the repair did and how it went.
    did           text NOT NULL DEFAULT '',
    result        text NOT NULL DEFAULT 'running'
                  CHECK (result IN ('running', 'recovered', 'done', 'failed', 'skipped', 'interrupted')),
    -- Who started it: `ladder`, or `operator` for a retry from the API or dashboard.
    started_by    text NOT NULL DEFAULT 'ladder',
    started_at    timestamptz NOT NULL DEFAULT now(),
    alive_at      timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX repair_steps_run ON repair_steps (run_id, started_at);
-- At most one step of a run in flight: a second worker cannot start the
-- same run's repair while the first runs it.
CREATE UNIQUE INDEX repair_steps_one_running ON repair_steps (run_id) WHERE finished_at IS NULL;

-- Live updates for the ops dashboard: one notification per changed row on
-- channel `portico_ops`, payload `{"table": ..., "id": ...}`. Listeners
-- coalesce; the payload only says what to re-read.
CREATE FUNCTION portico_ops_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_id text;
BEGIN
    IF TG_TABLE_NAME = 'health_states' THEN
        row_id := NEW.subject_id::text;
    ELSIF TG_TABLE_NAME = 'repair_steps' THEN
        row_id := NEW.run_id::text;
    ELSE
        row_id := NEW.id::text;
    END IF;
    PERFORM pg_notify('portico_ops', json_build_object('table', TG_TABLE_NAME, 'id', row_id)::text);
    RETURN NULL;
END;
$$;
-- Only real changes notify: a check that confirms what was known, or a
-- heartbeat, would otherwise wake every dashboard thousands of times a second.
CREATE TRIGGER repair_runs_ops_notify AFTER INSERT OR UPDATE ON repair_runs
    FOR EACH ROW EXECUTE FUNCTION portico_ops_notify();
CREATE TRIGGER repair_steps_ops_notify AFTER INSERT OR UPDATE ON repair_steps
    FOR EACH ROW EXECUTE FUNCTION portico_ops_notify();
CREATE TRIGGER health_states_ops_notify_insert AFTER INSERT ON health_states
    FOR EACH ROW EXECUTE FUNCTION portico_ops_notify();
CREATE TRIGGER health_states_ops_notify_update AFTER UPDATE ON health_states
    FOR EACH ROW WHEN (OLD.failing IS DISTINCT FROM NEW.failing OR OLD.last_passed IS DISTINCT FROM NEW.last_passed)
    EXECUTE FUNCTION portico_ops_notify();
CREATE TRIGGER alerts_ops_notify_insert AFTER INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION portico_ops_notify();
CREATE TRIGGER alerts_ops_notify_update AFTER UPDATE ON alerts
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION portico_ops_notify();
-- Edges notify on every heartbeat (the dashboard shows heartbeat age and
-- config lag); there are few edges and one heartbeat per edge per interval.
CREATE TRIGGER edges_ops_notify AFTER INSERT OR UPDATE ON edges
    FOR EACH ROW EXECUTE FUNCTION portico_ops_notify();
CREATE TRIGGER domains_ops_notify_insert AFTER INSERT ON domains
    FOR EACH ROW EXECUTE FUNCTION portico_ops_notify();
CREATE TRIGGER domains_ops_notify_update AFTER UPDATE ON domains
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.tls_status IS DISTINCT FROM NEW.tls_status)
    EXECUTE FUNCTION portico_ops_notify();

-- The health fan-out's schedule: when each domain and edge is checked next.
-- New domains are checked at once; after that each keeps a fixed phase
-- within the interval (from a hash of its id), so checks spread evenly.
ALTER TABLE domains ADD COLUMN next_health_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX domains_health_due ON domains (next_health_at) WHERE status IN ('active', 'misconfigured', 'moved');
ALTER TABLE edges ADD COLUMN next_health_at timestamptz NOT NULL DEFAULT now();
-- A full config resync asked for by a repair: the edge's next (or current)
-- config stream starts with a snapshot, whatever version it says it has.
ALTER TABLE edges ADD COLUMN resync_requested_at timestamptz;
-- Hosts in the edge's table that have no certificate (from its heartbeat,
-- at most 100): a domain with a stored certificate listed here is missing it.
ALTER TABLE edges ADD COLUMN hosts_missing_certificate text[] NOT NULL DEFAULT '{}';
