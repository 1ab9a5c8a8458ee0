//! End-to-end DNS diagnosis: a real `DnsChecker` asking an in-process
//! `TestDns` server, one server per test, one test (at least) per reason.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use portico_control_plane::dns::{Diagnosis, DnsChecker, DnsSettings, Expected, Reason, Verdict};
use portico_e2e::dns_server::{TestDns, TestRecord};

const HOST: &str = "shop.bobs.io";
const APEX: &str = "bobs.io";
const TARGET: &str = "edge.portico.test";
const TOKEN: &str = "portico-verify=abc123";
const EDGE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const EDGE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 0x10);
const ELSEWHERE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const ELSEWHERE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 1);

/// A running server and a checker pointed at it.
struct World {
    dns: TestDns,
    checker: DnsChecker,
}

impl World {
    async fn start() -> anyhow::Result<World> {
        let dns = TestDns::start().await?;
        let checker = DnsChecker::new(&DnsSettings {
            nameservers: vec![dns.addr()],
            timeout: Duration::from_millis(500),
            attempts: 1,
        })?;
        // The platform's own zone.
        dns.add(TARGET, TestRecord::A(EDGE_V4));
        dns.add(TARGET, TestRecord::Aaaa(EDGE_V6));
        Ok(World { dns, checker })
    }

    /// `HOST` correctly CNAMEd to the platform.
    fn route_host(&self) {
        self.dns.add(HOST, TestRecord::Cname(TARGET.to_owned()));
    }

    /// The right ownership TXT record for `host`.
    fn own(&self, host: &str) {
        self.dns
            .add(&txt_name(host), TestRecord::Txt(TOKEN.to_owned()));
    }

    async fn check(&self, expected: &Expected) -> Diagnosis {
        let diagnosis = self.checker.check(&expected.hostname, APEX, expected).await;
        println!("{diagnosis:#?}");
        diagnosis
    }
}

fn txt_name(host: &str) -> String {
    format!("_portico-challenge.{host}")
}

fn expected(host: &str) -> Expected {
    let is_apex = host == APEX;
    Expected {
        hostname: host.to_owned(),
        is_apex,
        cname_target: (!is_apex).then(|| TARGET.to_owned()),
        a: vec![EDGE_V4],
        aaaa: vec![EDGE_V6],
        txt_name: txt_name(host),
        txt_value: TOKEN.to_owned(),
        ca_identities: vec!["letsencrypt.org".to_owned()],
    }
}

fn caa(tag: &str, value: &str) -> TestRecord {
    TestRecord::Caa {
        tag: tag.to_owned(),
        value: value.to_owned(),
    }
}

#[tokio::test]
async fn cname_ok_and_txt_ok_verify_the_domain() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.route_host();
    world.own(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Ok);
    assert_eq!((d.routing, d.ownership), (Verdict::Ok, Verdict::Ok));
    assert_eq!(d.reasons, vec![Reason::CnameOk, Reason::TxtOk]);
    assert!(
        d.found
            .iter()
            .any(|r| r.record_type == "CNAME" && r.name == HOST && r.value == TARGET)
    );
    assert!(
        d.found
            .iter()
            .any(|r| r.record_type == "TXT" && r.value == TOKEN)
    );
    assert_eq!(d.expected, expected(HOST).records());
    Ok(())
}

#[tokio::test]
async fn cname_chain_through_an_alias_reaches_the_target() -> anyhow::Result<()> {
    let world = World::start().await?;
    world
        .dns
        .add(HOST, TestRecord::Cname("alias.bobs.io.".to_owned()));
    world.dns.add(
        "ALIAS.bobs.io",
        TestRecord::Cname("Edge.Portico.Test.".to_owned()),
    );
    world.own(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Ok);
    assert_eq!(d.reasons, vec![Reason::CnameOk, Reason::TxtOk]);
    Ok(())
}

#[tokio::test]
async fn a_ok_verifies_an_apex() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.dns.add(APEX, TestRecord::A(EDGE_V4));
    world.dns.add(APEX, TestRecord::Aaaa(EDGE_V6));
    world.own(APEX);

    let d = world.check(&expected(APEX)).await;

    assert_eq!(d.verdict, Verdict::Ok);
    assert_eq!(d.reasons, vec![Reason::AOk, Reason::TxtOk]);
    assert!(
        d.found
            .iter()
            .any(|r| r.record_type == "A" && r.value == EDGE_V4.to_string())
    );
    Ok(())
}

#[tokio::test]
async fn txt_ok_is_reported_even_when_routing_is_wrong() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.dns.add(HOST, TestRecord::A(ELSEWHERE_V4));
    world.own(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!((d.routing, d.ownership), (Verdict::Wrong, Verdict::Ok));
    assert!(d.reasons.contains(&Reason::TxtOk));
    Ok(())
}

#[tokio::test]
async fn wrong_cname_target_names_the_actual_target() -> anyhow::Result<()> {
    let world = World::start().await?;
    world
        .dns
        .add(HOST, TestRecord::Cname("x.herokudns.com".to_owned()));
    world
        .dns
        .add("x.herokudns.com", TestRecord::A(ELSEWHERE_V4));
    world.own(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!(d.routing, Verdict::Wrong);
    assert_eq!(d.reasons, vec![Reason::WrongCnameTarget, Reason::TxtOk]);
    assert_eq!(
        d.hint,
        "Your CNAME points to x.herokudns.com; change it to edge.portico.test."
    );
    Ok(())
}

#[tokio::test]
async fn wrong_cname_target_that_does_not_resolve() -> anyhow::Result<()> {
    let world = World::start().await?;
    world
        .dns
        .add(HOST, TestRecord::Cname("gone.example.net".to_owned()));
    world.own(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!(d.reasons, vec![Reason::WrongCnameTarget, Reason::TxtOk]);
    Ok(())
}

#[tokio::test]
async fn wrong_a_on_a_subdomain() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.dns.add(HOST, TestRecord::A(ELSEWHERE_V4));
    world.own(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!(d.reasons, vec![Reason::WrongA, Reason::TxtOk]);
    assert!(d.hint.contains("198.51.100.7"), "{}", d.hint);
    assert!(d.hint.contains(TARGET), "{}", d.hint);
    Ok(())
}

#[tokio::test]
async fn aaaa_elsewhere_makes_routing_wrong() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.dns.add(APEX, TestRecord::A(EDGE_V4));
    world.dns.add(APEX, TestRecord::Aaaa(ELSEWHERE_V6));
    world.own(APEX);

    let d = world.check(&expected(APEX)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!(d.routing, Verdict::Wrong);
    assert_eq!(
        d.reasons,
        vec![Reason::AOk, Reason::AaaaElsewhere, Reason::TxtOk]
    );
    assert!(d.hint.contains("2001:db8:bad::1"), "{}", d.hint);
    Ok(())
}

#[tokio::test]
async fn nxdomain_when_nothing_exists() -> anyhow::Result<()> {
    let world = World::start().await?;

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!((d.routing, d.ownership), (Verdict::Wrong, Verdict::Wrong));
    assert_eq!(d.reasons, vec![Reason::Nxdomain, Reason::TxtMissing]);
    assert!(d.found.is_empty());
    Ok(())
}

#[tokio::test]
async fn no_records_when_only_the_txt_exists() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.own(HOST); // makes HOST an empty non-terminal

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!(d.reasons, vec![Reason::NoRecords, Reason::TxtOk]);
    Ok(())
}

#[tokio::test]
async fn txt_missing_tells_what_to_add() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.route_host();

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!((d.routing, d.ownership), (Verdict::Ok, Verdict::Wrong));
    assert_eq!(d.reasons, vec![Reason::CnameOk, Reason::TxtMissing]);
    assert_eq!(
        d.hint,
        "Add a TXT record _portico-challenge.shop.bobs.io with value portico-verify=abc123."
    );
    Ok(())
}

#[tokio::test]
async fn txt_mismatch_names_the_value_found() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.route_host();
    world.dns.add(
        &txt_name(HOST),
        TestRecord::Txt("portico-verify=old".to_owned()),
    );

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!(d.ownership, Verdict::Wrong);
    assert_eq!(d.reasons, vec![Reason::CnameOk, Reason::TxtMismatch]);
    assert!(d.hint.contains("portico-verify=old"), "{}", d.hint);
    assert!(d.hint.contains(TOKEN), "{}", d.hint);
    Ok(())
}

#[tokio::test]
async fn caa_forbids_when_the_registrable_domain_allows_another_ca() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.route_host();
    world.own(HOST);
    world.dns.add(APEX, caa("issue", "digicert.com"));

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Wrong);
    assert_eq!((d.routing, d.ownership), (Verdict::Ok, Verdict::Ok));
    assert_eq!(
        d.reasons,
        vec![Reason::CnameOk, Reason::TxtOk, Reason::CaaForbids]
    );
    assert!(d.hint.contains("letsencrypt.org"), "{}", d.hint);
    assert!(
        d.found
            .iter()
            .any(|r| r.record_type == "CAA" && r.name == APEX)
    );
    Ok(())
}

#[tokio::test]
async fn caa_allowing_our_ca_is_fine() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.route_host();
    world.own(HOST);
    world.dns.add(APEX, caa("issue", "digicert.com"));
    world.dns.add(
        APEX,
        caa(
            "issue",
            "letsencrypt.org; accounturi=https://acme.example/1",
        ),
    );

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Ok);
    Ok(())
}

#[tokio::test]
async fn servfail_is_unknown_never_wrong() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.own(HOST);
    world.dns.servfail(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Unknown);
    assert_eq!(d.routing, Verdict::Unknown);
    assert_eq!(d.ownership, Verdict::Ok);
    assert_eq!(d.reasons, vec![Reason::Servfail, Reason::TxtOk]);
    assert!(d.hint.contains("SERVFAIL"), "{}", d.hint);
    Ok(())
}

#[tokio::test]
async fn servfail_on_the_txt_name_makes_ownership_unknown() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.route_host();
    world.dns.servfail(&txt_name(HOST));

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Unknown);
    assert_eq!((d.routing, d.ownership), (Verdict::Ok, Verdict::Unknown));
    assert_eq!(d.reasons, vec![Reason::CnameOk, Reason::Servfail]);
    Ok(())
}

#[tokio::test]
async fn timeout_is_unknown_never_wrong() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.own(HOST);
    world.dns.silent(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Unknown);
    assert_eq!(d.routing, Verdict::Unknown);
    assert_eq!(d.reasons, vec![Reason::Timeout, Reason::TxtOk]);
    assert_eq!(
        d.hint,
        "DNS lookup timed out; we will retry — nothing changes until we get an answer."
    );
    Ok(())
}

#[tokio::test]
async fn caa_timeout_makes_an_otherwise_good_domain_unknown() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.route_host();
    world.own(HOST);
    world.dns.silent(APEX); // only the CAA lookup at the apex asks for it

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Unknown);
    assert_eq!((d.routing, d.ownership), (Verdict::Ok, Verdict::Ok));
    assert_eq!(
        d.reasons,
        vec![Reason::CnameOk, Reason::TxtOk, Reason::Timeout]
    );
    Ok(())
}

#[tokio::test]
async fn answers_are_not_cached_between_checks() -> anyhow::Result<()> {
    let world = World::start().await?;
    world
        .dns
        .add(HOST, TestRecord::Cname("x.herokudns.com".to_owned()));

    let before = world.check(&expected(HOST)).await;
    world.dns.clear(HOST);
    world.route_host();
    world.own(HOST);
    let after = world.check(&expected(HOST)).await;

    assert_eq!(
        before.reasons,
        vec![Reason::WrongCnameTarget, Reason::TxtMissing]
    );
    assert_eq!(after.verdict, Verdict::Ok);
    Ok(())
}

#[tokio::test]
async fn truncated_answers_are_retried_over_tcp() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.route_host();
    for i in 0..24 {
        let filler = format!("filler-{i}-{}", "x".repeat(180));
        world.dns.add(&txt_name(HOST), TestRecord::Txt(filler));
    }
    world.own(HOST);

    let d = world.check(&expected(HOST)).await;

    assert_eq!(d.verdict, Verdict::Ok, "{:?}", d.reasons);
    Ok(())
}
