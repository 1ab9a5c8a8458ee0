//! Tests of building a routing table from a snapshot and of its lookups;
//! also the shared helpers (real self-signed certificates from rcgen).

use portico_protocol::{
    CertificateBundle, ChallengeAnswer, ConfigVersion, EdgeSettings, HostConfig, PROTOCOL_VERSION,
    Snapshot,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;

use super::{HostKnowledge, Lookup, RoutingTable, TableError, Target};

/// A self-signed ECDSA P-256 certificate for `names`.
pub(super) fn cert(names: &[&str]) -> CertificateBundle {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.clone()).unwrap();
    CertificateBundle {
        names,
        chain_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        not_after: 1_900_000_000,
    }
}

/// Whether `key` is the certificate of `bundle`.
pub(super) fn is(key: &CertifiedKey, bundle: &CertificateBundle) -> bool {
    let der = CertificateDer::from_pem_slice(bundle.chain_pem.as_bytes()).unwrap();
    key.cert[0] == der
}

pub(super) fn host(name: &str, target: &str) -> HostConfig {
    HostConfig {
        targets: vec![target.to_owned()],
        ..HostConfig::new(name)
    }
}

pub(super) fn snapshot(hosts: Vec<HostConfig>, certificates: Vec<CertificateBundle>) -> Snapshot {
    Snapshot {
        v: PROTOCOL_VERSION,
        version: ConfigVersion(1),
        hosts,
        certificates,
        challenges: Vec::new(),
        settings: EdgeSettings::default(),
    }
}

/// The target of whatever route `host` resolves to, tagged by match kind.
fn routed(table: &RoutingTable, host: &str) -> String {
    match table.route(host) {
        Lookup::Exact(r) => format!("exact {}", r.targets[0]),
        Lookup::Wildcard(r) => format!("wildcard {}", r.targets[0]),
        Lookup::Default => "default".to_owned(),
    }
}

fn build_err(hosts: Vec<HostConfig>) -> TableError {
    RoutingTable::from_snapshot(&snapshot(hosts, vec![])).unwrap_err()
}

#[test]
fn empty_table_misses_everything() {
    let table = RoutingTable::empty();
    assert_eq!(table.version(), ConfigVersion(0));
    assert_eq!(routed(&table, "a.example.com"), "default");
    assert!(table.certificate("a.example.com").is_none());
    assert!(table.default_certificate().is_none());
    assert_eq!(table.knows("a.example.com"), HostKnowledge::Unknown);
    assert_eq!((table.host_count(), table.certificate_count()), (0, 0));
}

#[test]
fn exact_beats_wildcard_and_wildcards_match_one_label() {
    let table = RoutingTable::from_snapshot(&snapshot(
        vec![
            host("*.example.com", "wild:80"),
            host("shop.example.com", "shop:80"),
            host("example.com", "apex:80"),
        ],
        vec![],
    ))
    .unwrap();
    assert_eq!(routed(&table, "shop.example.com"), "exact shop:80");
    assert_eq!(routed(&table, "a.example.com"), "wildcard wild:80");
    assert_eq!(routed(&table, "example.com"), "exact apex:80");
    assert_eq!(routed(&table, "b.a.example.com"), "default");
    assert_eq!(routed(&table, "other.org"), "default");
    assert_eq!(routed(&table, "*.example.com"), "default");
    assert_eq!(routed(&table, ""), "default");
    assert_eq!(routed(&table, ".example.com"), "default");
    assert_eq!(table.host_count(), 3);
}

#[test]
fn wildcard_does_not_match_its_own_apex() {
    let table =
        RoutingTable::from_snapshot(&snapshot(vec![host("*.example.com", "w:1")], vec![])).unwrap();
    assert_eq!(routed(&table, "example.com"), "default");
}

#[test]
fn names_are_normalised_before_lookup() {
    let table = RoutingTable::from_snapshot(&snapshot(
        vec![
            host("shop.example.com", "s:1"),
            host("*.example.com", "w:1"),
        ],
        vec![],
    ))
    .unwrap();
    for name in [
        "SHOP.Example.COM",
        "shop.example.com.",
        "shop.example.com:8443",
        "Shop.Example.Com.:443",
    ] {
        assert_eq!(routed(&table, name), "exact s:1", "{name}");
    }
    assert_eq!(routed(&table, "A.EXAMPLE.com.:80"), "wildcard w:1");
    assert_eq!(routed(&table, "[::1]:8080"), "default");
    assert_eq!(routed(&table, "[::1"), "default");
}

#[test]
fn invalid_hostnames_are_refused_by_name() {
    let long_label = format!("{}.com", "a".repeat(64));
    let too_long = format!("{}.com", ["abcdefghi"; 26].join("."));
    for bad in [
        "",
        "Shop.example.com",
        "shop.example.com.",
        "shop..example.com",
        "-shop.example.com",
        "shop_1.example.com",
        "*.",
        "a.*.example.com",
        "**.example.com",
        "bücher.example",
        long_label.as_str(),
        too_long.as_str(),
    ] {
        let err = build_err(vec![host(bad, "t:1")]);
        assert!(
            matches!(&err, TableError::InvalidHostname { hostname, .. } if hostname == bad),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    RoutingTable::from_snapshot(&snapshot(
        vec![
            host("xn--bcher-kva.example", "t:1"),
            host("localhost", "t:1"),
        ],
        vec![],
    ))
    .unwrap();
}

#[test]
fn duplicate_hosts_are_refused() {
    let err = build_err(vec![
        host("a.example.com", "t:1"),
        host("a.example.com", "u:1"),
    ]);
    assert_eq!(
        err,
        TableError::DuplicateHost {
            hostname: "a.example.com".into()
        }
    );
    let err = build_err(vec![
        host("*.example.com", "t:1"),
        host("*.example.com", "u:1"),
    ]);
    assert!(
        err.to_string()
            .contains("\"*.example.com\" is configured twice")
    );
}

#[test]
fn targets_are_parsed_and_bad_ones_refused() {
    let mut h = HostConfig::new("a.example.com");
    h.targets = vec![
        "10.0.0.1:8080".into(),
        "[::1]:443".into(),
        "svc_1.internal:1".into(),
    ];
    let table = RoutingTable::from_snapshot(&snapshot(vec![h], vec![])).unwrap();
    let route = table.route("a.example.com").route().unwrap();
    assert_eq!(
        route.targets,
        [
            Target {
                host: "10.0.0.1".into(),
                port: 8080
            },
            Target {
                host: "::1".into(),
                port: 443
            },
            Target {
                host: "svc_1.internal".into(),
                port: 1
            },
        ]
    );
    assert_eq!(route.targets[1].to_string(), "[::1]:443");
    for bad in [
        "nohost", ":80", "h:", "h:0", "h:65536", "h:+80", "::1:80", "[::1]", "[zz]:1",
    ] {
        let err = build_err(vec![host("a.example.com", bad)]);
        assert!(
            matches!(&err, TableError::InvalidTarget { target, .. } if target == bad),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("a.example.com"), "{err}");
    }
    let mut h = host("a.example.com", "t:1");
    h.target_sni = Some("10.0.0.1".into());
    assert!(matches!(
        build_err(vec![h]),
        TableError::InvalidTargetSni { .. }
    ));
}

#[test]
fn certificates_resolve_exact_then_wildcard_then_none() {
    let exact = cert(&["shop.example.com"]);
    let wild = cert(&["*.example.com", "example.com"]);
    let table =
        RoutingTable::from_snapshot(&snapshot(vec![], vec![exact.clone(), wild.clone()])).unwrap();
    assert!(is(&table.certificate("shop.example.com").unwrap(), &exact));
    assert!(is(&table.certificate("SHOP.example.com.").unwrap(), &exact));
    assert!(is(&table.certificate("a.example.com").unwrap(), &wild));
    assert!(is(&table.certificate("example.com").unwrap(), &wild));
    assert!(table.certificate("b.a.example.com").is_none());
    assert!(table.certificate("other.org").is_none());
    assert_eq!(table.certificate_count(), 2);
}

#[test]
fn later_expiry_wins_a_shared_name() {
    let mut newer = cert(&["a.example.com"]);
    newer.not_after = 2_000_000_000;
    let older = cert(&["a.example.com", "b.example.com"]);
    let table =
        RoutingTable::from_snapshot(&snapshot(vec![], vec![newer.clone(), older.clone()])).unwrap();
    assert!(is(&table.certificate("a.example.com").unwrap(), &newer));
    assert!(is(&table.certificate("b.example.com").unwrap(), &older));
    assert_eq!(table.certificate_count(), 2);
}

#[test]
fn bad_certificates_are_refused_naming_their_names() {
    let good = cert(&["a.example.com"]);
    let other = cert(&["b.example.com"]);
    let mut garbage = good.clone();
    garbage.chain_pem = "not pem".into();
    let mut corrupt = good.clone();
    corrupt.chain_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
    let mut no_key = good.clone();
    no_key.key_pem = String::new();
    let mut mismatched = good.clone();
    mismatched.key_pem = other.key_pem.clone();
    let mut bad_name = good.clone();
    bad_name.names = vec!["A.example.com".into()];
    let mut nameless = good.clone();
    nameless.names = vec![];
    for (what, bundle) in [
        ("garbage", garbage),
        ("corrupt", corrupt),
        ("no key", no_key),
        ("mismatched", mismatched),
        ("bad name", bad_name),
        ("nameless", nameless),
    ] {
        let err = RoutingTable::from_snapshot(&snapshot(vec![], vec![bundle.clone()])).unwrap_err();
        assert!(
            matches!(&err, TableError::InvalidCertificate { names, .. } if *names == bundle.names),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(&bundle.names.join(", ")), "{err}");
    }
}

#[test]
fn default_certificate_comes_from_settings() {
    let fallback = cert(&["*.portico.dev"]);
    let mut s = snapshot(vec![], vec![fallback.clone()]);
    s.settings.default_certificate = Some("edge.portico.dev".into());
    let table = RoutingTable::from_snapshot(&s).unwrap();
    assert!(is(&table.default_certificate().unwrap(), &fallback));
    s.settings.default_certificate = Some("missing.example.com".into());
    let table = RoutingTable::from_snapshot(&s).unwrap();
    assert!(table.default_certificate().is_none());
}

#[test]
fn knows_every_kind_of_host() {
    let mut on_demand = host("*.customers.example", "t:1");
    on_demand.on_demand_tls = true;
    let s = snapshot(
        vec![
            host("shop.example.com", "t:1"),
            host("plain.example.com", "t:1"),
            on_demand,
        ],
        vec![
            cert(&["shop.example.com"]),
            cert(&["cert-only.example.com"]),
        ],
    );
    let table = RoutingTable::from_snapshot(&s).unwrap();
    assert_eq!(
        table.knows("shop.example.com"),
        HostKnowledge::HasCertificate
    );
    assert_eq!(
        table.knows("Shop.Example.com."),
        HostKnowledge::HasCertificate
    );
    assert_eq!(
        table.knows("cert-only.example.com"),
        HostKnowledge::HasCertificate
    );
    assert_eq!(table.knows("a.customers.example"), HostKnowledge::OnDemand);
    assert_eq!(
        table.knows("plain.example.com"),
        HostKnowledge::KnownNoCertificate
    );
    assert_eq!(table.knows("nobody.example.com"), HostKnowledge::Unknown);
    assert_eq!(table.knows("b.a.customers.example"), HostKnowledge::Unknown);
}

#[test]
fn challenges_are_served_and_validated() {
    let challenge_cert = cert(&["new.example.com"]);
    let mut s = snapshot(vec![], vec![]);
    s.challenges = vec![
        ChallengeAnswer::Http01 {
            token: "tok_EN-1".into(),
            key_authorization: "tok_EN-1.thumb".into(),
        },
        ChallengeAnswer::TlsAlpn01 {
            hostname: "new.example.com".into(),
            certificate_pem: challenge_cert.chain_pem.clone(),
            key_pem: challenge_cert.key_pem.clone(),
        },
        ChallengeAnswer::Unknown,
    ];
    let table = RoutingTable::from_snapshot(&s).unwrap();
    assert_eq!(table.http01("tok_EN-1"), Some("tok_EN-1.thumb"));
    assert_eq!(table.http01("other"), None);
    assert!(is(
        &table.tls_alpn01("NEW.example.com").unwrap(),
        &challenge_cert
    ));
    assert!(table.tls_alpn01("a.new.example.com").is_none());
    assert!(table.certificate("new.example.com").is_none());
    assert_eq!(table.unknown_changes_skipped(), 1);

    s.challenges = vec![ChallengeAnswer::Http01 {
        token: "../etc".into(),
        key_authorization: "x".into(),
    }];
    let err = RoutingTable::from_snapshot(&s).unwrap_err();
    assert!(err.to_string().contains("\"../etc\""), "{err}");
    s.challenges = vec![ChallengeAnswer::TlsAlpn01 {
        hostname: "*.example.com".into(),
        certificate_pem: challenge_cert.chain_pem.clone(),
        key_pem: challenge_cert.key_pem,
    }];
    assert!(matches!(
        RoutingTable::from_snapshot(&s).unwrap_err(),
        TableError::InvalidChallenge { .. }
    ));
}

#[test]
fn a_thousand_hosts_build() {
    let mut hosts: Vec<HostConfig> = (0..1000)
        .map(|i| {
            host(
                &format!("h{i}.example.com"),
                &format!("10.0.{}.{}:80", i / 256, i % 256),
            )
        })
        .collect();
    hosts.push(host("*.example.com", "wild:80"));
    let certs = (0..10)
        .map(|i| cert(&[&format!("h{i}.example.com")]))
        .collect();
    let table = RoutingTable::from_snapshot(&snapshot(hosts, certs)).unwrap();
    assert_eq!(table.host_count(), 1001);
    assert_eq!(table.certificate_count(), 10);
    assert_eq!(routed(&table, "h999.example.com"), "exact 10.0.3.231:80");
    assert_eq!(routed(&table, "h1000.example.com"), "wildcard wild:80");
    assert_eq!(table.knows("h5.example.com"), HostKnowledge::HasCertificate);
    assert_eq!(
        table.knows("h50.example.com"),
        HostKnowledge::KnownNoCertificate
    );
}
