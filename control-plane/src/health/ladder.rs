//! Escalation ladders as data: for each failure kind, the rungs a repair
//! run climbs. Each rung is "re-check; if still failing, do this; wait this
//! long; go up". Past the top rung the run stays open and only re-checks
//! (at the top rung's wait) until the check passes or an operator closes it.
//! `docs/health.md` shows the same tables.

use std::time::Duration;

/// What failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An edge is silent (no heartbeat), down, lagging or refusing config.
    EdgeUnreachable,
    /// A domain's certificate is missing on an edge, expiring, or failing handshakes.
    Certificate,
    /// A domain's upstream answers 5xx or refuses connections.
    Upstream,
    /// A domain's DNS no longer points at the edges.
    Dns,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::EdgeUnreachable,
        Kind::Certificate,
        Kind::Upstream,
        Kind::Dns,
    ];
    /// The kinds a domain's check looks at.
    pub const DOMAIN: [Kind; 3] = [Kind::Certificate, Kind::Upstream, Kind::Dns];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::EdgeUnreachable => "edge_unreachable",
            Kind::Certificate => "certificate",
            Kind::Upstream => "upstream",
            Kind::Dns => "dns",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// `edge` or `domain`: what this kind is about.
    pub fn subject_kind(self) -> &'static str {
        match self {
            Kind::EdgeUnreachable => "edge",
            _ => "domain",
        }
    }

    /// Whether reaching the top of the ladder wakes a person. DNS that moved
    /// away is the customer's choice: nobody is paged.
    pub fn pages(self) -> bool {
        ladder(self).iter().any(|r| r.action == Action::Page)
    }
}

/// A repair a rung runs after its re-check failed. Every action is safe to
/// run twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the edge's machine directly whether it serves (infra probe).
    Probe,
    /// Make the edge take a full snapshot on its config stream.
    Resync,
    /// Restart the edge's machine through `Infra`.
    Restart,
    /// Put a fresh machine in its place through `Infra`.
    Replace,
    /// Page ops: an alert row and an email, once per run.
    Page,
    /// Publish the domain's certificate to every edge again.
    RepushCertificate,
    /// Run the DNS check again now (CAA included).
    RecheckDns,
    /// Queue a new certificate order (the CA budget still applies).
    Reissue,
    /// Queue an order that goes to the fallback CA.
    FallbackIssuer,
    /// Tell the tenant: a `health.degraded` event.
    NotifyTenant,
    /// Connect to the domain's upstream from the control plane.
    ReprobeUpstream,
    /// The run is degraded for the tenant: `health.degraded`.
    MarkDegraded,
    /// The domain's DNS is wrong: `health.degraded` for the tenant.
    MarkMisconfigured,
    /// The DNS stayed away: the run ends as `stale`, nobody is paged.
    MarkStale,
    /// Past the top rung: re-check only.
    Recheck,
}

/// Every action's name, for settings and the API.
pub const ACTIONS: [&str; 15] = [
    "probe",
    "resync",
    "restart",
    "replace",
    "page",
    "repush_certificate",
    "recheck_dns",
    "reissue",
    "fallback_issuer",
    "notify_tenant",
    "reprobe_upstream",
    "mark_degraded",
    "mark_misconfigured",
    "mark_stale",
    "recheck",
];

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Probe => "probe",
            Action::Resync => "resync",
            Action::Restart => "restart",
            Action::Replace => "replace",
            Action::Page => "page",
            Action::RepushCertificate => "repush_certificate",
            Action::RecheckDns => "recheck_dns",
            Action::Reissue => "reissue",
            Action::FallbackIssuer => "fallback_issuer",
            Action::NotifyTenant => "notify_tenant",
            Action::ReprobeUpstream => "reprobe_upstream",
            Action::MarkDegraded => "mark_degraded",
            Action::MarkMisconfigured => "mark_misconfigured",
            Action::MarkStale => "mark_stale",
            Action::Recheck => "recheck",
        }
    }
}

/// One rung: the repair, then how long to wait before the next re-check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rung {
    pub action: Action,
    pub wait: Duration,
}

const fn rung(action: Action, wait_secs: u64) -> Rung {
    Rung {
        action,
        wait: Duration::from_secs(wait_secs),
    }
}

const EDGE: [Rung; 5] = [
    rung(Action::Probe, 10),
    rung(Action::Resync, 30),
    rung(Action::Restart, 60),
    rung(Action::Replace, 120),
    rung(Action::Page, 300),
];

const CERTIFICATE: [Rung; 6] = [
    rung(Action::RepushCertificate, 30),
    rung(Action::RecheckDns, 60),
    rung(Action::Reissue, 600),
    rung(Action::FallbackIssuer, 1800),
    rung(Action::NotifyTenant, 0),
    rung(Action::Page, 3600),
];

const UPSTREAM: [Rung; 3] = [
    rung(Action::ReprobeUpstream, 30),
    rung(Action::MarkDegraded, 900),
    rung(Action::Page, 3600),
];

/// `mark_misconfigured` waits the DNS stale period (a setting), not this.
const DNS: [Rung; 3] = [
    rung(Action::RecheckDns, 60),
    rung(Action::MarkMisconfigured, 0),
    rung(Action::MarkStale, 0),
];

/// The ladder for `kind`, bottom rung first.
pub fn ladder(kind: Kind) -> &'static [Rung] {
    match kind {
        Kind::EdgeUnreachable => &EDGE,
        Kind::Certificate => &CERTIFICATE,
        Kind::Upstream => &UPSTREAM,
        Kind::Dns => &DNS,
    }
}

/// The rung a run at `index` climbs: a ladder rung, or past the top a
/// re-check at the top rung's wait.
pub fn rung_at(kind: Kind, index: usize) -> Rung {
    let ladder = ladder(kind);
    match ladder.get(index) {
        Some(r) => *r,
        None => Rung {
            action: Action::Recheck,
            wait: ladder.last().map_or(Duration::from_secs(300), |r| r.wait),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_named_once() {
        let all = [
            Action::Probe,
            Action::Resync,
            Action::Restart,
            Action::Replace,
            Action::Page,
            Action::RepushCertificate,
            Action::RecheckDns,
            Action::Reissue,
            Action::FallbackIssuer,
            Action::NotifyTenant,
            Action::ReprobeUpstream,
            Action::MarkDegraded,
            Action::MarkMisconfigured,
            Action::MarkStale,
            Action::Recheck,
        ];
        let names: Vec<&str> = all.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, ACTIONS);
    }

    #[test]
    fn ladders_end_where_the_issue_says() {
        assert_eq!(
            ladder(Kind::EdgeUnreachable)
                .iter()
                .map(|r| r.action)
                .collect::<Vec<_>>(),
            [
                Action::Probe,
                Action::Resync,
                Action::Restart,
                Action::Replace,
                Action::Page
            ]
        );
        assert!(Kind::EdgeUnreachable.pages());
        assert!(Kind::Certificate.pages());
        assert!(Kind::Upstream.pages());
        assert!(
            !Kind::Dns.pages(),
            "DNS moved away is the customer's choice"
        );
    }

    #[test]
    fn past_the_top_only_rechecks() {
        let top = rung_at(Kind::Upstream, 7);
        assert_eq!(top.action, Action::Recheck);
        assert_eq!(top.wait, Duration::from_secs(3600));
        assert_eq!(rung_at(Kind::Upstream, 0).action, Action::ReprobeUpstream);
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("nope"), None);
    }
}
