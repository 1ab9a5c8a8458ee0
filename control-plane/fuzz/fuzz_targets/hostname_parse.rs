//! Fuzzes `Hostname::parse`: it must never panic, and whatever it accepts must be
//! canonical (re-parsing gives the same value) and within DNS limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_control_plane::hostname::{Hostname, HostnameError, HostnamePolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let strict = HostnamePolicy::default();
    let permissive = HostnamePolicy {
        reserved_suffixes: vec!["portico.test".into(), "edge.portico.dev".into()],
        allow_wildcard: true,
    };
    let strict_result = check(input, &strict);
    let permissive_result = check(input, &permissive);
    // Loosening the policy never rejects a name the strict policy accepted,
    // except for the reserved suffixes only the permissive policy has.
    if let Ok(h) = strict_result {
        match permissive_result {
            Ok(p) => assert_eq!(h, p),
            Err(e) => assert!(
                matches!(e, HostnameError::Reserved { .. }),
                "{input:?}: {e}"
            ),
        }
    }
});

fn check(input: &str, policy: &HostnamePolicy) -> Result<Hostname, HostnameError> {
    let result = Hostname::parse(input, policy);
    match &result {
        Ok(h) => check_accepted(input, h, policy),
        Err(e) => {
            assert!(!e.code().is_empty());
            assert!(e.to_string().len() < 400, "error message too long: {e}");
        }
    }
    result
}

fn check_accepted(input: &str, h: &Hostname, policy: &HostnamePolicy) {
    let s = h.as_str();
    assert_eq!(
        Hostname::parse(s, policy).as_ref(),
        Ok(h),
        "not idempotent: {input:?} -> {s:?}"
    );
    assert!(s.len() <= 253, "too long: {s:?}");
    let base = match s.strip_prefix("*.") {
        Some(base) => {
            assert!(policy.allow_wildcard && h.is_wildcard());
            base
        }
        None => s,
    };
    for label in base.split('.') {
        assert!(!label.is_empty() && label.len() <= 63, "bad label in {s:?}");
    }
    assert!(
        base.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
        "non-LDH output {s:?}"
    );
    assert!(base.ends_with(h.registrable_domain()));
    let _ = h.is_apex();
}
