//! Tests of writing a table back as a snapshot: after deltas (removals
//! included) and on-demand certificates, `from_snapshot(to_snapshot(t))`
//! looks up exactly like `t`, and removed names stay removed.

use std::collections::BTreeMap;

use portico_protocol::{
    CertificateBundle, ChallengeAnswer, ChallengeId, Change, ConfigVersion, Delta, EdgeSettings,
    PROTOCOL_VERSION,
};
use rustls::sign::CertifiedKey;

use super::tests::{cert, host, is, snapshot};
use super::{HostKnowledge, RoutingTable};

fn delta(from: u64, to: u64, changes: Vec<Change>) -> Delta {
    Delta {
        v: PROTOCOL_VERSION,
        from: ConfigVersion(from),
        to: ConfigVersion(to),
        changes,
    }
}

/// Every name the tests ask about.
const NAMES: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "c.example.com",
    "x.example.com",
    "example.com",
    "shop.example.org",
    "new.example.org",
    "fallback.portico.dev",
    "nothing.example.net",
];

/// What the table answers for every name in [`NAMES`]: route, certificate
/// (as the DER of its end-entity certificate), knowledge, TLS-ALPN-01.
fn lookups(t: &RoutingTable) -> BTreeMap<String, String> {
    let der = |k: Option<std::sync::Arc<CertifiedKey>>| k.map(|k| format!("{:?}", k.cert[0]));
    let mut out = BTreeMap::new();
    for name in NAMES {
        let route = t.route(name).route().map(|r| format!("{:?}", r.config));
        out.insert(
            (*name).to_owned(),
            format!(
                "{route:?} {:?} {:?} {:?}",
                der(t.certificate(name)),
                t.knows(name),
                der(t.tls_alpn01(name)),
            ),
        );
    }
    out.insert(
        "default".into(),
        format!("{:?}", der(t.default_certificate())),
    );
    out.insert("http01".into(), format!("{:?}", t.http01("tok")));
    out.insert("settings".into(), format!("{:?}", t.settings()));
    out.insert(
        "counts".into(),
        format!(
            "{} {} {}",
            t.version(),
            t.host_count(),
            t.certificate_count()
        ),
    );
    out
}

fn round_trip(t: &RoutingTable) -> RoutingTable {
    RoutingTable::from_snapshot(&t.to_snapshot()).unwrap()
}

fn alpn(name: &str, bundle: &CertificateBundle) -> ChallengeAnswer {
    ChallengeAnswer::TlsAlpn01 {
        hostname: name.into(),
        certificate_pem: bundle.chain_pem.clone(),
        key_pem: bundle.key_pem.clone(),
    }
}

#[test]
fn a_fresh_table_round_trips() {
    let shared = cert(&["a.example.com", "*.example.com", "example.com"]);
    let mut s = snapshot(
        vec![host("a.example.com", "a:1"), host("*.example.com", "w:1")],
        vec![shared.clone(), cert(&["shop.example.org"])],
    );
    s.challenges = vec![
        ChallengeAnswer::Http01 {
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        },
        alpn("new.example.org", &cert(&["new.example.org"])),
    ];
    s.settings.default_certificate = Some("shop.example.org".into());
    let table = RoutingTable::from_snapshot(&s).unwrap();
    let again = round_trip(&table);
    assert_eq!(lookups(&again), lookups(&table));
    assert_eq!(again.to_snapshot(), table.to_snapshot());
    // One bundle per certificate, not one per name.
    assert_eq!(table.to_snapshot().certificates.len(), 2);
    assert!(is(&again.certificate("x.example.com").unwrap(), &shared));
}

#[test]
fn deltas_removals_and_on_demand_certificates_survive_a_round_trip() {
    let shared = cert(&["a.example.com", "b.example.com", "*.example.com"]);
    let renewed_b = cert(&["b.example.com"]);
    let on_demand = cert(&["shop.example.org"]);
    let fallback = cert(&["fallback.portico.dev"]);
    let base = RoutingTable::from_snapshot(&snapshot(
        vec![host("a.example.com", "a:1"), host("*.example.com", "w:1")],
        vec![shared.clone()],
    ))
    .unwrap();
    let changes = vec![
        Change::UpsertHost {
            host: host("shop.example.org", "s:1"),
        },
        Change::RemoveHost {
            hostname: "*.example.com".into(),
        },
        // A newer bundle takes one name of the shared one over...
        Change::UpsertCertificate {
            certificate: renewed_b.clone(),
        },
        // ...and another name of it is removed outright.
        Change::RemoveCertificate {
            names: vec!["*.example.com".into()],
        },
        Change::UpsertCertificate {
            certificate: fallback.clone(),
        },
        Change::AddChallenge {
            challenge: ChallengeAnswer::Http01 {
                token: "tok".into(),
                key_authorization: "tok.thumb".into(),
            },
        },
        Change::AddChallenge {
            challenge: alpn("new.example.org", &cert(&["new.example.org"])),
        },
        Change::Settings {
            settings: EdgeSettings {
                default_certificate: Some("fallback.portico.dev".into()),
                ..EdgeSettings::default()
            },
        },
    ];
    let t = base.apply(&delta(1, 2, changes)).unwrap();
    let t = t
        .apply(&delta(
            2,
            3,
            vec![Change::RemoveChallenge {
                id: ChallengeId::Http01 {
                    token: "tok".into(),
                },
            }],
        ))
        .unwrap();
    let t = t.with_certificate(&on_demand).unwrap();

    let again = round_trip(&t);
    assert_eq!(lookups(&again), lookups(&t));
    assert_eq!(again.to_snapshot(), t.to_snapshot());
    assert_eq!(again.version(), ConfigVersion(3));
    assert!(
        again.certificate("x.example.com").is_none(),
        "removed name came back"
    );
    assert!(is(&again.certificate("a.example.com").unwrap(), &shared));
    assert!(is(&again.certificate("b.example.com").unwrap(), &renewed_b));
    assert!(is(
        &again.certificate("shop.example.org").unwrap(),
        &on_demand
    ));
    assert!(is(&again.default_certificate().unwrap(), &fallback));
    assert!(again.tls_alpn01("new.example.org").is_some());
    assert_eq!(again.http01("tok"), None);

    // The shared bundle is written with only the name it still serves.
    let snap = t.to_snapshot();
    let written = snap
        .certificates
        .iter()
        .find(|b| b.chain_pem == shared.chain_pem)
        .unwrap();
    assert_eq!(written.names, vec!["a.example.com".to_owned()]);
}

#[test]
fn a_bundle_without_names_left_is_dropped() {
    let only = cert(&["a.example.com"]);
    let t = RoutingTable::from_snapshot(&snapshot(vec![], vec![only]))
        .unwrap()
        .apply(&delta(
            1,
            2,
            vec![Change::RemoveCertificate {
                names: vec!["a.example.com".into()],
            }],
        ))
        .unwrap();
    let snap = t.to_snapshot();
    assert!(snap.certificates.is_empty());
    let again = round_trip(&t);
    assert_eq!(again.knows("a.example.com"), HostKnowledge::Unknown);
    assert_eq!(again.certificate_count(), 0);
}

#[test]
fn duplicate_names_in_a_bundle_are_written_once() {
    let mut twice = cert(&["a.example.com"]);
    twice.names.push("a.example.com".into());
    let t = RoutingTable::from_snapshot(&snapshot(vec![], vec![twice])).unwrap();
    assert_eq!(
        t.to_snapshot().certificates[0].names,
        vec!["a.example.com".to_owned()]
    );
}

#[test]
fn the_empty_table_is_an_empty_snapshot() {
    let snap = RoutingTable::empty().to_snapshot();
    assert_eq!(snap.version, ConfigVersion(0));
    assert!(snap.hosts.is_empty() && snap.certificates.is_empty() && snap.challenges.is_empty());
    assert_eq!(snap.v, PROTOCOL_VERSION);
}
