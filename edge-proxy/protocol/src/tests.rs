//! Tests of the wire contract: round trips, forward compatibility (unknown
//! fields, ops, types and variants) and a frozen v1 snapshot.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::*;

const SECRET: &str = "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n";

/// A v1 snapshot as the first control plane wrote it. Never edit this
/// literal: if it stops decoding, an edge upgrade broke old control planes.
const FROZEN_V1_SNAPSHOT: &str = r#"{
  "type": "snapshot",
  "v": 1,
  "version": 42,
  "hosts": [
    {
      "hostname": "shop.example.com",
      "targets": ["10.0.0.5:8080", "backend.internal:443"],
      "target_tls": true,
      "target_sni": "backend.internal",
      "verify_target_tls": false,
      "keep_host": true,
      "redirects": ["to_https", "www_to_apex"],
      "on_demand_tls": false,
      "bin_capture": {"bin_id": "bin_123"},
      "status_page": true
    },
    {"hostname": "*.example.com", "targets": ["[::1]:9000"], "on_demand_tls": true}
  ],
  "certificates": [
    {"names": ["shop.example.com"], "chain_pem": "CHAIN", "key_pem": "KEY", "not_after": 1767225600}
  ],
  "challenges": [
    {"kind": "http01", "token": "tok", "key_authorization": "tok.thumb"},
    {"kind": "tls_alpn01", "hostname": "new.example.com", "certificate_pem": "C", "key_pem": "K"}
  ],
  "settings": {"default_certificate": "shop.example.com", "on_demand_wait_ms": 5000, "max_request_body_bytes": 1048576}
}"#;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, value, "round trip of {json}");
}

fn bundle() -> CertificateBundle {
    CertificateBundle {
        names: vec!["shop.example.com".into(), "*.shop.example.com".into()],
        chain_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        key_pem: SECRET.into(),
        not_after: 1_767_225_600,
    }
}

fn full_host() -> HostConfig {
    HostConfig {
        hostname: "shop.example.com".into(),
        targets: vec!["10.0.0.5:8080".into()],
        target_tls: true,
        target_sni: Some("backend.internal".into()),
        verify_target_tls: false,
        keep_host: true,
        redirects: vec![Redirect::ToHttps, Redirect::WwwToApex, Redirect::ApexToWww],
        on_demand_tls: true,
        bin_capture: Some(BinCapture {
            bin_id: "bin_1".into(),
        }),
        status_page: true,
    }
}

fn alpn_challenge() -> ChallengeAnswer {
    ChallengeAnswer::TlsAlpn01 {
        hostname: "new.example.com".into(),
        certificate_pem: "CERT".into(),
        key_pem: SECRET.into(),
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        v: PROTOCOL_VERSION,
        version: ConfigVersion(7),
        hosts: vec![full_host(), HostConfig::new("*.example.com")],
        certificates: vec![bundle()],
        challenges: vec![
            ChallengeAnswer::Http01 {
                token: "tok".into(),
                key_authorization: "tok.thumb".into(),
            },
            alpn_challenge(),
        ],
        settings: EdgeSettings {
            default_certificate: Some("shop.example.com".into()),
            ..EdgeSettings::default()
        },
    }
}

fn every_change() -> Vec<Change> {
    vec![
        Change::UpsertHost { host: full_host() },
        Change::RemoveHost {
            hostname: "old.example.com".into(),
        },
        Change::UpsertCertificate {
            certificate: bundle(),
        },
        Change::RemoveCertificate {
            names: vec!["old.example.com".into()],
        },
        Change::AddChallenge {
            challenge: alpn_challenge(),
        },
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
        Change::Settings {
            settings: EdgeSettings::default(),
        },
    ]
}

#[test]
fn every_type_round_trips() {
    round_trip(&ConfigVersion(u64::MAX));
    round_trip(&full_host());
    round_trip(&HostConfig::new("a.example.com"));
    round_trip(&bundle());
    round_trip(&alpn_challenge());
    round_trip(&EdgeSettings::default());
    round_trip(&snapshot());
    for change in every_change() {
        round_trip(&change);
    }
    let delta = Delta {
        v: 1,
        from: ConfigVersion(7),
        to: ConfigVersion(8),
        changes: every_change(),
    };
    round_trip(&delta);
    round_trip(&Frame::Snapshot(snapshot()));
    round_trip(&Frame::Delta(delta));
    round_trip(&Frame::KeepAlive { v: 1 });
    let s = snapshot();
    round_trip(&Frame::SnapshotBegin(SnapshotBegin {
        v: 1,
        version: s.version,
        settings: s.settings.clone(),
    }));
    round_trip(&Frame::SnapshotChunk(SnapshotChunk {
        v: 1,
        hosts: s.hosts.clone(),
        certificates: s.certificates.clone(),
        challenges: s.challenges.clone(),
    }));
    round_trip(&Frame::SnapshotEnd(SnapshotEnd {
        v: 1,
        version: s.version,
        hosts: 2,
        certificates: 1,
        challenges: 2,
    }));
    round_trip(&CertificateRequest {
        hostname: "shop.example.com".into(),
    });
    round_trip(&heartbeat());
    round_trip(&report());
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        v: 1,
        edge_id: "edge-fra-1".into(),
        build: "0.1.0+abc".into(),
        applied_version: ConfigVersion(9),
        uptime_secs: 3600,
        counters: BTreeMap::from([("unknown_changes_skipped".to_string(), 2)]),
        hosts: 3,
        certificates: 1,
        rejection: Some(Rejection {
            version: ConfigVersion(10),
            reason: "private key does not match the certificate".into(),
            at_unix: 1_767_225_600,
        }),
        hosts_missing_certificate: vec!["new.example.com".into()],
    }
}

fn report() -> Report {
    Report {
        v: 1,
        edge_id: "edge-fra-1".into(),
        windows: vec![StatsWindow {
            host: "shop.example.com".into(),
            start_unix: 1_700_000_000,
            secs: 60,
            requests: 10,
            status_2xx: 6,
            status_3xx: 1,
            status_4xx: 2,
            status_5xx: 1,
            upstream_connect_failures: 1,
            tls_handshake_failures: 0,
            latency_buckets_ms: vec![(10, 4), (100, 5), (u32::MAX, 1)],
        }],
        dropped: 3,
        events_dropped: 0,
    }
}

#[test]
fn frames_encode_as_one_line_and_decode_back() {
    let frame = Frame::Snapshot(snapshot());
    let line = encode_frame(&frame).unwrap();
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(decode_frame(&line).unwrap(), frame);
}

#[test]
fn frozen_v1_snapshot_still_decodes() {
    let Frame::Snapshot(s) = decode_frame(FROZEN_V1_SNAPSHOT.as_bytes()).unwrap() else {
        panic!("not a snapshot");
    };
    assert_eq!((s.v, s.version), (1, ConfigVersion(42)));
    assert_eq!(s.hosts.len(), 2);
    let shop = &s.hosts[0];
    assert_eq!(shop.targets, ["10.0.0.5:8080", "backend.internal:443"]);
    assert!(shop.target_tls && !shop.verify_target_tls && shop.keep_host && shop.status_page);
    assert_eq!(shop.redirects, [Redirect::ToHttps, Redirect::WwwToApex]);
    assert_eq!(shop.bin_capture.as_ref().unwrap().bin_id, "bin_123");
    let wildcard = &s.hosts[1];
    assert!(wildcard.on_demand_tls && wildcard.verify_target_tls && !wildcard.target_tls);
    assert_eq!(s.certificates[0].not_after, 1_767_225_600);
    assert!(matches!(&s.challenges[0], ChallengeAnswer::Http01 { token, .. } if token == "tok"));
    assert!(
        matches!(&s.challenges[1], ChallengeAnswer::TlsAlpn01 { hostname, .. }
        if hostname == "new.example.com")
    );
    assert_eq!(s.settings.on_demand_wait_ms, 5000);
    assert_eq!(s.settings.max_request_body_bytes, 1_048_576);
}

#[test]
fn missing_fields_take_defaults() {
    let line = br#"{"type":"snapshot","v":1,"version":1,"hosts":[{"hostname":"a.example.com"}]}"#;
    let Frame::Snapshot(s) = decode_frame(line).unwrap() else {
        panic!("not a snapshot");
    };
    assert_eq!(s.hosts, [HostConfig::new("a.example.com")]);
    assert!(s.hosts[0].verify_target_tls);
    assert_eq!(s.settings, EdgeSettings::default());
    assert_eq!(s.settings.on_demand_wait_ms, 10_000);
    assert_eq!(s.settings.max_request_body_bytes, 10 * 1024 * 1024);
    let settings: EdgeSettings = serde_json::from_str(r#"{"on_demand_wait_ms":1}"#).unwrap();
    assert_eq!(settings.max_request_body_bytes, 10 * 1024 * 1024);
}

#[test]
fn unknown_fields_are_ignored_everywhere() {
    let line = br#"{"type":"delta","v":1,"from":1,"to":2,"future":{"x":[1]},"changes":[
        {"op":"upsert_host","extra":1,"host":{"hostname":"a.example.com","new_knob":true}},
        {"op":"add_challenge","challenge":{"kind":"http01","token":"t","key_authorization":"k","ttl":5}},
        {"op":"settings","settings":{"on_demand_wait_ms":1,"brand_new":"x"}}
    ]}"#;
    let Frame::Delta(d) = decode_frame(line).unwrap() else {
        panic!("not a delta");
    };
    assert_eq!(d.changes.len(), 3);
    assert_eq!(
        d.changes[0],
        Change::UpsertHost {
            host: HostConfig::new("a.example.com")
        }
    );
    let hb: Heartbeat = serde_json::from_str(
        r#"{"v":1,"edge_id":"e","build":"b","applied_version":3,"region":"fra"}"#,
    )
    .unwrap();
    assert_eq!(hb.applied_version, ConfigVersion(3));
}

#[test]
fn unknown_op_decodes_to_change_unknown() {
    let line = br#"{"type":"delta","v":1,"from":1,"to":2,"changes":[
        {"op":"rotate_moon","phase":3,"nested":{"a":[1,2]}},
        {"op":"remove_host","hostname":"a.example.com"}
    ]}"#;
    let Frame::Delta(d) = decode_frame(line).unwrap() else {
        panic!("not a delta");
    };
    assert_eq!(d.changes[0], Change::Unknown);
    assert!(
        matches!(&d.changes[1], Change::RemoveHost { hostname } if hostname == "a.example.com")
    );
}

#[test]
fn unknown_frame_type_decodes_to_frame_unknown() {
    let frame = decode_frame(br#"{"type":"hologram","v":9,"payload":[1,2,3]}"#).unwrap();
    assert_eq!(frame, Frame::Unknown);
    assert_eq!(frame.protocol_version(), None);
}

#[test]
fn unknown_redirect_and_challenge_kinds_decode_to_unknown() {
    let host: HostConfig =
        serde_json::from_str(r#"{"hostname":"a.b","redirects":["to_https","to_mars"]}"#).unwrap();
    assert_eq!(host.redirects, [Redirect::ToHttps, Redirect::Unknown]);
    let answer: ChallengeAnswer = serde_json::from_str(r#"{"kind":"dns01","record":"x"}"#).unwrap();
    assert_eq!(answer, ChallengeAnswer::Unknown);
    let id: ChallengeId = serde_json::from_str(r#"{"kind":"dns01","name":"x"}"#).unwrap();
    assert_eq!(id, ChallengeId::Unknown);
}

#[test]
fn debug_never_prints_private_keys() {
    let outputs = [
        format!("{:?}", bundle()),
        format!("{:#?}", alpn_challenge()),
        format!("{:?}", snapshot()),
        format!("{:?}", Frame::Snapshot(snapshot())),
        format!("{:?}", every_change()),
    ];
    for out in outputs {
        assert!(!out.contains("SECRETKEYMATERIAL"), "leaked: {out}");
        assert!(out.contains("[redacted]"), "{out}");
    }
}

#[test]
fn newer_protocol_versions_are_refused() {
    let err = decode_frame(br#"{"type":"keep_alive","v":2}"#).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::UnsupportedVersion {
            got: 2,
            supported: 1
        }
    ));
    assert!(err.to_string().contains("version 2"), "{err}");
    assert_eq!(
        decode_frame(b"{\"type\":\"keep_alive\",\"v\":1}\r\n").unwrap(),
        Frame::KeepAlive { v: 1 }
    );
}

#[test]
fn oversized_lines_are_rejected_before_parsing() {
    let line = vec![b' '; MAX_FRAME_BYTES + 1];
    let err = decode_frame(&line).unwrap_err();
    assert!(matches!(err, ProtocolError::TooLarge { .. }));
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let deep = "[".repeat(100_000);
    let inputs: [&[u8]; 9] = [
        b"",
        b"\n",
        b"null",
        b"{}",
        b"{\"type\":\"snapshot\"}",
        b"{\"type\":\"delta\",\"v\":1,\"from\":-1,\"to\":2}",
        b"\xff\xfe\x00",
        b"{\"type\":\"snapshot\",\"v\":1,\"version\":1,\"hosts\":[{}]}",
        deep.as_bytes(),
    ];
    for input in inputs {
        let err = decode_frame(input).unwrap_err();
        assert!(matches!(err, ProtocolError::Json(_)), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
