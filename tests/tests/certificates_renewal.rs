//! Certificates after the first issuance, end to end against a real Pebble
//! through a real edge and a real `portico-control-plane serve`: a
//! short-lived certificate is renewed by the renewal tick and swapped on the
//! edge while clients keep connecting, with no failed request; CA faults
//! (503, 429 with `Retry-After`, `badNonce`) injected by a proxy between the
//! control plane and Pebble are recovered from with a bounded number of
//! orders; and a database dump holds no private key that can be read
//! without the master key.
//!
//! What is real and what is shortened is said in each test.

use anyhow::Context;
use portico_acme::test_util::{Options, verify_chain};
use portico_control_plane::crypto::Keyring;
use portico_e2e::cluster::ENCRYPTION_KEYS;
use portico_e2e::edge::echo_upstream;
use portico_e2e::fault_proxy::Fault;
use portico_e2e::pebble::{
    Challenge, IssuingCluster, Setup, eventually, leaf_der, peer_certificate, stored_chain,
};
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Pebble's certificate lifetime in the renewal test. The control plane
/// renews at about 2/3 of it, so about 20 s after issuance.
const SHORT_VALIDITY: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_with_no_failed_request_during_the_swap()
-> anyhow::Result<()> {
    // Real: Pebble's issuance and validation through the edge, the control
    // plane's renewal point (`renew_at`, 2/3 of the lifetime), its renewal
    // fan-out and the edge's swap through the config stream. Shortened: the
    // lifetime (90 days -> 30 s, Pebble's `certificateValidityPeriod`) and
    // the renewal tick (60 s -> 500 ms, `PORTICO_RENEW_CHECK_MS`).
    let setup = Setup {
        env: &[("PORTICO_RENEW_CHECK_MS", "500")],
        pebble: Options {
            nonce_reject: Some(0),
            certificate_validity: Some(SHORT_VALIDITY),
            ..Options::default()
        },
        ..Setup::default()
    };
    let c = IssuingCluster::start_with(Challenge::Http01, setup).await?;
    let host = "renew.example.com";
    c.add_domain(host, echo_upstream("up").await?, true).await?;
    c.activate(host).await?;
    let root = c.issuing_root().await?;
    let url = format!("https://{host}:{}/", c.edge.https.port());

    let first = c.https_client(&root, host)?.get(&url).send().await?;
    assert_eq!(first.status(), 200);
    let original = peer_certificate(&first)?;
    let lifetime = validity(&original)?;
    assert!(
        lifetime <= SHORT_VALIDITY,
        "Pebble honoured certificateValidityPeriod: {lifetime:?}"
    );

    // Four clients, each a new connection (and handshake) per request,
    // until each has been served the successor a few times.
    let deadline = Instant::now() + SHORT_VALIDITY * 2;
    let clients = (0..4).map(|_| requests_across_the_swap(&c, &root, host, &original, deadline));
    let mut failures = Vec::new();
    let mut requests = 0;
    let mut served = HashSet::new();
    for outcome in futures::future::join_all(clients).await {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => anyhow::bail!("{e:#}; {}", certificate_state(&c, host).await?),
        };
        requests += outcome.requests;
        failures.extend(outcome.failures);
        served.extend(outcome.served);
    }

    eprintln!("{requests} requests, {} certificates served", served.len());
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {failures:?}",
        failures.len()
    );
    let renewed: Vec<_> = served.iter().filter(|der| **der != original).collect();
    assert_eq!(renewed.len(), 1, "exactly one successor was served");
    assert_ne!(serial(renewed[0])?, serial(&original)?);
    let chain = stored_chain(&c, host)
        .await?
        .context("a stored certificate")?;
    verify_chain(&chain, &root, host)?;
    assert_eq!(
        &leaf_der(&chain)?,
        renewed[0],
        "the edge serves the stored one"
    );
    assert_eq!(
        c.orders_at_ca(host).await?,
        2,
        "the first order and one renewal"
    );
    let events = event_types(&c).await?;
    assert!(
        events.contains(&"certificate.renewed".to_string()),
        "{events:?}"
    );
    let reason: String = sqlx::query_scalar(
        "SELECT o.reason FROM certificate_orders o JOIN domains d ON d.id = o.domain_id
         WHERE d.hostname = $1",
    )
    .bind(host)
    .fetch_one(&c.pool)
    .await?;
    assert_eq!(reason, "renewal", "queued by the renewal tick");
    Ok(())
}

/// The stored certificate's timing and the order's state, for a failure.
async fn certificate_state(c: &IssuingCluster, host: &str) -> anyhow::Result<String> {
    let row: Option<String> = sqlx::query_scalar(
        "SELECT format('now %s; certificate not_before %s not_after %s renew_at %s; order %s',
                       now(), c.not_before, c.not_after, c.renew_at, to_jsonb(o))
         FROM domains d LEFT JOIN certificates c ON c.domain_id = d.id
         LEFT JOIN certificate_orders o ON o.domain_id = d.id WHERE d.hostname = $1",
    )
    .bind(host)
    .fetch_optional(&c.pool)
    .await?;
    Ok(row.unwrap_or_else(|| "no such domain".into()))
}

/// What one client saw.
struct Outcome {
    requests: usize,
    failures: Vec<String>,
    served: HashSet<Vec<u8>>,
}

/// Requests over new connections (full handshakes) until the certificate served is not
/// `original` for ten requests in a row, or `deadline`.
async fn requests_across_the_swap(
    c: &IssuingCluster,
    root: &str,
    host: &str,
    original: &[u8],
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let url = format!("https://{host}:{}/", c.edge.https.port());
    let mut outcome = Outcome {
        requests: 0,
        failures: Vec::new(),
        served: HashSet::new(),
    };
    let mut renewed_in_a_row = 0;
    while renewed_in_a_row < 10 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no renewed certificate was served in time (control plane log: {})",
            c.control_plane.log.display()
        );
        outcome.requests += 1;
        // A new client each time: a shared one would resume its TLS session
        // by ticket, and a resumed session reports the certificate of the
        // handshake it resumes, not the one the edge would present now.
        match c.https_client(root, host)?.get(&url).send().await {
            Ok(resp) if resp.status() == 200 => {
                let der = peer_certificate(&resp)?;
                renewed_in_a_row = if der == original {
                    0
                } else {
                    renewed_in_a_row + 1
                };
                outcome.served.insert(der);
            }
            Ok(resp) => outcome.failures.push(format!("HTTP {}", resp.status())),
            Err(e) => outcome.failures.push(format!("{e:?}")),
        }
    }
    Ok(outcome)
}

#[tokio::test]
async fn ca_faults_during_a_window_are_recovered_from_with_bounded_orders() -> anyhow::Result<()> {
    // Real: Pebble behind an HTTPS proxy that answers some POSTs itself, as
    // a real CA does when it is down (503), throttling (429 + Retry-After)
    // or rejecting a nonce (400 badNonce + a fresh Replay-Nonce), and the
    // control plane's classification, backoff and recording of each.
    // Shortened: the backoff. The control plane defers a retryable failure
    // for a minute at least (certs/policy.rs `retry_in`, longer than the
    // CA's Retry-After: 1); after checking that it did, the test makes the
    // deferred orders due again in SQL instead of waiting that minute.
    let setup = Setup {
        fault_proxy: true,
        ..Setup::default()
    };
    let c = IssuingCluster::start_with(Challenge::Http01, setup).await?;
    let proxy = c.fault_proxy.as_ref().expect("started with a fault proxy");
    // The worker creates the ACME account at start; the faults are for orders.
    eventually(30, "the ACME account to be created", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM acme_accounts")
            .fetch_one(&c.pool)
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await?;

    let hosts: Vec<String> = (1..=5).map(|i| format!("site{i}.example.com")).collect();
    let mut ids = Vec::new();
    for host in &hosts {
        let domain = c
            .add_domain(host, echo_upstream("up").await?, false)
            .await?;
        c.activate(host).await?;
        ids.push(domain["id"].as_str().expect("domain id").parse::<Uuid>()?);
    }
    use Fault::{BadNonce, RateLimited, Unavailable};
    // The window: the next nine ACME POSTs, whichever orders they belong to
    // (in practice the five concurrent new-orders and their badNonce
    // retries), and the first finalize, a later step of some order.
    proxy.fail_next(&[
        BadNonce,
        Unavailable,
        BadNonce,
        RateLimited,
        BadNonce,
        BadNonce,
        BadNonce,
        Unavailable,
        RateLimited,
    ]);
    proxy.fail_next_on("finalize", &[Unavailable]);
    // Orders ahead of time, as DNS verification queues them.
    let mut tx = c.pool.begin().await?;
    for id in &ids {
        portico_control_plane::db::orders::request(&mut tx, *id, "new").await?;
    }
    tx.commit().await?;

    // Until every host has a certificate, each deferred order is read (the
    // error recorded, whether its retry is a minute off) and made due now.
    let deferrals = c.recover(hosts.len()).await?;

    let injected = proxy.injected();
    eprintln!("injected {injected:?}; deferred {deferrals:?}");
    assert_eq!(proxy.pending(), 0, "every fault was injected");
    let kinds: HashSet<Fault> = injected.iter().map(|i| i.fault).collect();
    assert_eq!(kinds.len(), 3, "all three kinds: {injected:?}");
    assert!(injected.iter().any(|i| i.path.contains("finalize")));
    // A 503 or a 429 ends that attempt (instant-acme retries only badNonce,
    // twice), so some orders were deferred, with the CA's words recorded
    // and a retry no sooner than the policy's minute (not Retry-After: 1).
    assert!(!deferrals.is_empty(), "no order was deferred: {injected:?}");
    for (host, error, backed_off) in &deferrals {
        assert!(error.contains("injected"), "{host}: recorded {error}");
        assert!(backed_off, "{host}: retry within a minute after {error}");
    }
    let root = c.issuing_root().await?;
    let mut total_orders = 0;
    for host in &hosts {
        verify_chain(
            &stored_chain(&c, host)
                .await?
                .context("a stored certificate")?,
            &root,
            host,
        )?;
        let errors: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM acme_events WHERE hostname = $1 AND kind = 'error'",
        )
        .bind(host)
        .fetch_one(&c.pool)
        .await?;
        let deferred = deferrals.iter().filter(|(h, _, _)| h == host).count();
        assert_eq!(
            errors,
            i64::try_from(deferred)?,
            "{host}: each failure logged once"
        );
        // Each failed attempt cost one order; nothing else re-ordered.
        let orders = c.orders_at_ca(host).await?;
        assert_eq!(orders, 1 + errors, "{host}: orders");
        total_orders += orders;
    }
    // Every order beyond the first per host answers one injected fault (a
    // badNonce that instant-acme's own retry absorbed costs none). A fixed
    // bound per host would depend on how the concurrent orders happened to
    // meet the faults.
    let bound = i64::try_from(hosts.len() + injected.len())?;
    assert!(
        total_orders <= bound,
        "{total_orders} orders, at most {bound}"
    );
    let issuer: Vec<String> = sqlx::query_scalar("SELECT DISTINCT issuer FROM certificates")
        .fetch_all(&c.pool)
        .await?;
    assert_eq!(
        issuer,
        std::slice::from_ref(&proxy.directory_url),
        "ordered through the proxy"
    );
    assert!(proxy.forwarded() > 0);
    Ok(())
}

#[tokio::test]
async fn a_database_dump_does_not_reveal_a_key_without_the_master_key() -> anyhow::Result<()> {
    // Real: an issued certificate's key and the ACME account's key as the
    // control plane stored them. The "dump" is every row of every table read
    // as text (`SELECT t::text`: bytea comes out as hex, as in pg_dump).
    let c = IssuingCluster::start(Challenge::Http01, &[]).await?;
    let host = "vault.example.com";
    c.add_domain(host, echo_upstream("up").await?, true).await?;
    c.activate(host).await?;
    let root = c.issuing_root().await?;
    let url = format!("https://{host}:{}/", c.edge.https.port());
    let resp = c.https_client(&root, host)?.get(&url).send().await?;
    assert_eq!(resp.status(), 200);
    let served = peer_certificate(&resp)?;

    let keys = Keyring::parse(ENCRYPTION_KEYS).map_err(anyhow::Error::msg)?;
    let (domain_id, key_id, key_sealed): (Uuid, String, Vec<u8>) = sqlx::query_as(
        "SELECT c.domain_id, c.key_id, c.key_sealed FROM certificates c
         JOIN domains d ON d.id = c.domain_id WHERE d.hostname = $1",
    )
    .bind(host)
    .fetch_one(&c.pool)
    .await?;
    let key_pem = keys.open(&key_id, &key_sealed, domain_id.as_bytes())?;
    let key_pem = String::from_utf8(key_pem.expose().clone())?;
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?
        .secret_der()
        .to_vec();
    // The master key opens the key of the certificate the edge serves.
    let public =
        rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::from_pem(&key_pem)?);
    let (_, leaf) = x509_parser::parse_x509_certificate(&served)?;
    assert_eq!(public, leaf.tbs_certificate.subject_pki.raw);

    let (directory, account_key_id, account_sealed): (String, String, Vec<u8>) =
        sqlx::query_as("SELECT directory_url, key_id, credentials_sealed FROM acme_accounts")
            .fetch_one(&c.pool)
            .await?;
    let account = keys.open(&account_key_id, &account_sealed, directory.as_bytes())?;
    let account: serde_json::Value = serde_json::from_slice(account.expose())?;
    let account_key = account["key_pkcs8"]
        .as_str()
        .expect("the account key in the credentials")
        .to_string();
    let account_der = base64_decode(&account_key)?;

    let dump = dump(&c.pool).await?;
    // PEM and JSON break base64 into lines; compare without the breaks.
    let flat = dump.replace("\\n", "").replace('\n', "");
    assert!(
        dump.contains(&hex(&key_sealed)),
        "the dump has the sealed key"
    );
    assert!(!dump.contains("PRIVATE KEY"));
    for (what, der) in [("certificate", &key_der), ("account", &account_der)] {
        assert!(!dump.contains(&hex(der)), "the {what} key's DER in hex");
        assert!(
            !flat.contains(&base64_body(der)),
            "the {what} key's DER in base64"
        );
        assert!(
            !dump.contains(&hex(&der[der.len() - 32..])),
            "the {what} key's last 32 bytes"
        );
    }
    assert!(
        !dump.contains(&account_key),
        "the account key as stored in the JSON"
    );

    // Another master key, under the same id or another, opens neither.
    for other in [
        "test1:HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=",
        "other:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ] {
        let wrong = Keyring::parse(other).map_err(anyhow::Error::msg)?;
        assert!(
            wrong
                .open(&key_id, &key_sealed, domain_id.as_bytes())
                .is_err()
        );
        assert!(
            wrong
                .open(&account_key_id, &account_sealed, directory.as_bytes())
                .is_err()
        );
    }
    // Nor does the right key for another row (the row id is bound in).
    assert!(
        keys.open(&key_id, &key_sealed, Uuid::nil().as_bytes())
            .is_err()
    );
    Ok(())
}

/// Every row of every table in the public schema, as text.
async fn dump(pool: &sqlx::PgPool) -> anyhow::Result<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await?;
    assert!(tables.iter().any(|t| t == "certificates"));
    assert!(tables.iter().any(|t| t == "acme_accounts"));
    let mut text = String::new();
    for table in tables {
        // `table` comes from the catalogue; quote_ident keeps it an identifier.
        let sql = format!(
            "SELECT t::text FROM public.\"{}\" t",
            table.replace('"', "\"\"")
        );
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await?;
        for row in rows {
            text.push_str(&row);
            text.push('\n');
        }
    }
    Ok(text)
}

fn serial(der: &[u8]) -> anyhow::Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)?;
    Ok(cert.raw_serial_as_string())
}

/// notAfter - notBefore of a DER certificate.
fn validity(der: &[u8]) -> anyhow::Result<Duration> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)?;
    let v = cert.validity();
    let secs = v.not_after.timestamp() - v.not_before.timestamp();
    Ok(Duration::from_secs(u64::try_from(secs)?))
}

async fn event_types(c: &IssuingCluster) -> anyhow::Result<Vec<String>> {
    let (status, page) = c.api(Method::GET, "/v1/events?limit=200", None).await?;
    anyhow::ensure!(status == 200, "GET /v1/events: {status} {page}");
    Ok(page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 without line breaks, as a PEM body holds it.
fn base64_body(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    // Without padding, so a match does not depend on where the value ends.
    out
}

/// Decodes base64 in either alphabet, padded or not.
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'-' => 62,
            b'_' => 63,
            _ => B64
                .iter()
                .position(|x| *x == c)
                .ok_or_else(|| anyhow::anyhow!("not base64: {c}"))?,
        };
        bits = (bits << 6) | u32::try_from(v)?;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff)?);
        }
    }
    Ok(out)
}
