//! Tests of applying deltas: each kind of change, version checks, and that a
//! refused delta leaves the old table exactly as it was.

use portico_protocol::{
    ChallengeAnswer, ChallengeId, Change, ConfigVersion, Delta, EdgeSettings, PROTOCOL_VERSION,
};

use super::tests::{cert, host, is, snapshot};
use super::{HostKnowledge, Lookup, RoutingTable, TableError};

fn delta(from: u64, to: u64, changes: Vec<Change>) -> Delta {
    Delta {
        v: PROTOCOL_VERSION,
        from: ConfigVersion(from),
        to: ConfigVersion(to),
        changes,
    }
}

/// Version 1: one exact host with a certificate, one wildcard host.
fn base() -> RoutingTable {
    RoutingTable::from_snapshot(&snapshot(
        vec![host("a.example.com", "a:1"), host("*.example.com", "w:1")],
        vec![cert(&["a.example.com"])],
    ))
    .unwrap()
}

fn target_of(table: &RoutingTable, name: &str) -> Option<String> {
    table.route(name).route().map(|r| r.targets[0].to_string())
}

#[test]
fn hosts_are_upserted_and_removed() {
    let old = base();
    let new = old
        .apply(&delta(
            1,
            2,
            vec![
                Change::UpsertHost {
                    host: host("a.example.com", "a2:1"),
                },
                Change::UpsertHost {
                    host: host("b.example.org", "b:1"),
                },
                Change::RemoveHost {
                    hostname: "*.example.com".into(),
                },
                Change::RemoveHost {
                    hostname: "never.example.com".into(),
                },
            ],
        ))
        .unwrap();
    assert_eq!(new.version(), ConfigVersion(2));
    assert_eq!(target_of(&new, "a.example.com").as_deref(), Some("a2:1"));
    assert_eq!(target_of(&new, "b.example.org").as_deref(), Some("b:1"));
    assert!(matches!(new.route("x.example.com"), Lookup::Default));
    assert_eq!(new.host_count(), 2);
    // The old table is untouched.
    assert_eq!(old.version(), ConfigVersion(1));
    assert_eq!(target_of(&old, "a.example.com").as_deref(), Some("a:1"));
    assert_eq!(target_of(&old, "x.example.com").as_deref(), Some("w:1"));
}

#[test]
fn certificates_are_upserted_and_removed() {
    let old = base();
    let renewed = cert(&["a.example.com", "*.example.com"]);
    let new = old
        .apply(&delta(
            1,
            5,
            vec![Change::UpsertCertificate {
                certificate: renewed.clone(),
            }],
        ))
        .unwrap();
    assert!(is(&new.certificate("a.example.com").unwrap(), &renewed));
    assert!(is(&new.certificate("z.example.com").unwrap(), &renewed));
    assert_eq!(new.certificate_count(), 1);
    assert_eq!(old.certificate_count(), 1);
    assert!(old.certificate("z.example.com").is_none());

    let removed = new
        .apply(&delta(
            5,
            6,
            vec![Change::RemoveCertificate {
                names: vec!["*.example.com".into()],
            }],
        ))
        .unwrap();
    assert!(removed.certificate("z.example.com").is_none());
    assert!(is(&removed.certificate("a.example.com").unwrap(), &renewed));
    assert_eq!(
        removed.knows("z.example.com"),
        HostKnowledge::KnownNoCertificate
    );
}

#[test]
fn challenges_are_added_and_removed() {
    let alpn = cert(&["new.example.com"]);
    let added = base()
        .apply(&delta(
            1,
            2,
            vec![
                Change::AddChallenge {
                    challenge: ChallengeAnswer::Http01 {
                        token: "tok".into(),
                        key_authorization: "tok.thumb".into(),
                    },
                },
                Change::AddChallenge {
                    challenge: ChallengeAnswer::TlsAlpn01 {
                        hostname: "new.example.com".into(),
                        certificate_pem: alpn.chain_pem.clone(),
                        key_pem: alpn.key_pem.clone(),
                    },
                },
            ],
        ))
        .unwrap();
    assert_eq!(added.http01("tok"), Some("tok.thumb"));
    assert!(is(&added.tls_alpn01("new.example.com").unwrap(), &alpn));

    let removed = added
        .apply(&delta(
            2,
            3,
            vec![
                Change::RemoveChallenge {
                    id: ChallengeId::Http01 {
                        token: "tok".into(),
                    },
                },
                Change::RemoveChallenge {
                    id: ChallengeId::TlsAlpn01 {
                        hostname: "new.example.com".into(),
                    },
                },
            ],
        ))
        .unwrap();
    assert_eq!(removed.http01("tok"), None);
    assert!(removed.tls_alpn01("new.example.com").is_none());
    assert_eq!(added.http01("tok"), Some("tok.thumb"));
}

#[test]
fn settings_are_replaced_and_the_default_certificate_follows() {
    let fallback = cert(&["fallback.portico.dev"]);
    let settings = EdgeSettings {
        default_certificate: Some("fallback.portico.dev".into()),
        on_demand_wait_ms: 1,
        ..EdgeSettings::default()
    };
    let old = base();
    assert!(old.default_certificate().is_none());
    let new = old
        .apply(&delta(
            1,
            2,
            vec![
                Change::Settings {
                    settings: settings.clone(),
                },
                Change::UpsertCertificate {
                    certificate: fallback.clone(),
                },
            ],
        ))
        .unwrap();
    assert_eq!(new.settings(), &settings);
    assert!(is(&new.default_certificate().unwrap(), &fallback));
    let gone = new
        .apply(&delta(
            2,
            3,
            vec![Change::RemoveCertificate {
                names: vec!["fallback.portico.dev".into()],
            }],
        ))
        .unwrap();
    assert!(gone.default_certificate().is_none());
    assert_eq!(old.settings(), &EdgeSettings::default());
}

#[test]
fn unknown_changes_are_skipped_and_counted() {
    let new = base()
        .apply(&delta(
            1,
            2,
            vec![
                Change::Unknown,
                Change::UpsertHost {
                    host: host("c.example.com", "c:1"),
                },
                Change::RemoveChallenge {
                    id: ChallengeId::Unknown,
                },
            ],
        ))
        .unwrap();
    assert_eq!(new.unknown_changes_skipped(), 2);
    assert_eq!(target_of(&new, "c.example.com").as_deref(), Some("c:1"));
    let newer = new.apply(&delta(2, 3, vec![Change::Unknown])).unwrap();
    assert_eq!(newer.unknown_changes_skipped(), 3);
}

#[test]
fn deltas_must_start_at_the_current_version_and_move_forward() {
    let old = base();
    assert_eq!(
        old.apply(&delta(2, 3, vec![])).unwrap_err(),
        TableError::VersionMismatch {
            current: ConfigVersion(1),
            from: ConfigVersion(2)
        }
    );
    for to in [0, 1] {
        let err = old.apply(&delta(1, to, vec![])).unwrap_err();
        assert!(matches!(err, TableError::NotForward { .. }), "{err}");
    }
    assert_eq!(
        old.apply(&delta(1, 9, vec![])).unwrap().version(),
        ConfigVersion(9)
    );
}

#[test]
fn an_invalid_change_refuses_the_whole_delta() {
    let old = base();
    let mut bad_cert = cert(&["a.example.com"]);
    bad_cert.key_pem = cert(&["b.example.com"]).key_pem;
    let bad_changes = [
        Change::UpsertHost {
            host: host("Bad Host", "t:1"),
        },
        Change::UpsertHost {
            host: host("ok.example.com", "no-port"),
        },
        Change::RemoveHost {
            hostname: "UPPER.example.com".into(),
        },
        Change::UpsertCertificate {
            certificate: bad_cert,
        },
    ];
    for bad in bad_changes {
        let d = delta(
            1,
            2,
            vec![
                Change::RemoveHost {
                    hostname: "a.example.com".into(),
                },
                Change::RemoveCertificate {
                    names: vec!["a.example.com".into()],
                },
                bad.clone(),
            ],
        );
        let err = old.apply(&d).unwrap_err();
        assert!(!err.to_string().is_empty(), "{bad:?}");
        assert_eq!(old.version(), ConfigVersion(1));
        assert_eq!(target_of(&old, "a.example.com").as_deref(), Some("a:1"));
        assert_eq!(old.knows("a.example.com"), HostKnowledge::HasCertificate);
        assert_eq!(old.host_count(), 2);
    }
}

#[test]
fn redirect_loops_and_oversize_values_are_refused_whole() {
    use portico_protocol::HostConfig;
    use portico_protocol::Redirect;
    let mut www = HostConfig::new("www.loop.example.com");
    www.targets = vec!["10.0.0.1:80".into()];
    www.redirects = vec![Redirect::WwwToApex];
    let mut apex = HostConfig::new("loop.example.com");
    apex.targets = vec!["10.0.0.1:80".into()];
    apex.redirects = vec![Redirect::ApexToWww];
    let base = RoutingTable::from_snapshot(&portico_protocol::Snapshot {
        v: 1,
        version: ConfigVersion(1),
        hosts: vec![www.clone()],
        certificates: Vec::new(),
        challenges: Vec::new(),
        settings: Default::default(),
    })
    .unwrap();
    let delta = |changes| Delta {
        v: 1,
        from: ConfigVersion(1),
        to: ConfigVersion(2),
        changes,
    };
    let err = base
        .apply(&delta(vec![Change::UpsertHost { host: apex.clone() }]))
        .unwrap_err();
    assert_eq!(
        err,
        TableError::RedirectCycle {
            hostname: "loop.example.com".into()
        }
    );
    let mut both = HostConfig::new("both.example.com");
    both.redirects = vec![Redirect::WwwToApex, Redirect::ApexToWww];
    assert!(matches!(
        base.apply(&delta(vec![Change::UpsertHost { host: both }])),
        Err(TableError::RedirectCycle { .. })
    ));
    let mut wide = HostConfig::new("wide.example.com");
    wide.targets = (0..65).map(|i| format!("10.0.0.{i}:80")).collect();
    assert!(matches!(
        base.apply(&delta(vec![Change::UpsertHost { host: wide }])),
        Err(TableError::TooLarge { .. })
    ));
    // The same apex without the loop-closing rule is fine.
    apex.redirects = vec![Redirect::ToHttps];
    assert!(
        base.apply(&delta(vec![Change::UpsertHost { host: apex }]))
            .is_ok()
    );
}
