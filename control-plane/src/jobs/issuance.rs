//! The issuer loop: wakes on `NOTIFY portico_issue` (an on-demand request
//! is answered in about a second) or every second, claims due certificate
//! orders and runs up to `PORTICO_ISSUE_CONCURRENCY` at once. Every minute it
//! also queues a renewal order for each certificate whose time has come, and
//! asks the CAs for the renewal information (ARI) that is due.

use crate::certs::issue::Issuance;
use crate::db;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a claimed order stays ours if this worker dies.
const LEASE: Duration = Duration::from_secs(300);

/// Builds the configured issuer and runs the loop. A CA that cannot be
/// reached (the ACME account is loaded or created here) is retried with
/// backoff and logged; it never stops the other workers.
pub async fn start(ctx: super::JobContext, stop: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match crate::certs::issuance(&ctx.pool, &ctx.settings).await {
            Ok(Some(issuance)) => return run(issuance, stop).await,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, retry_in_secs = backoff.as_secs(), "certificate issuer unavailable; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

pub async fn run(issuance: Arc<Issuance>, stop: CancellationToken) {
    tokio::spawn(prepare(issuance.clone()));
    let slots = Arc::new(Semaphore::new(issuance.settings.certificates.concurrency));
    let mut listener = PgListener::connect_with(&issuance.pool).await.ok();
    if let Some(l) = listener.as_mut()
        && let Err(e) = l.listen(db::orders::CHANNEL).await
    {
        tracing::warn!(error = %e, "cannot LISTEN for certificate orders; polling");
        listener = None;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut renewals = tokio::time::interval(issuance.settings.certificates.renew_check_every);
    let mut ari = tokio::time::interval(issuance.settings.certificates.ari_check_every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = renewals.tick() => queue_renewals(&issuance).await,
            _ = ari.tick() => check_renewal_info(&issuance).await,
            n = async { match listener.as_mut() { Some(l) => l.try_recv().await.ok().flatten(), None => std::future::pending().await } } => {
                // The LISTEN connection dropped; sqlx reconnects on the next call.
                if n.is_none() { tokio::time::sleep(Duration::from_millis(100)).await; } // allow-sleep: pause before reconnecting
            }
        }
        claim_and_run(&issuance, &slots).await;
    }
}

/// Loads or creates the ACME accounts in the background; a CA that cannot
/// be reached now is tried again by its first order.
async fn prepare(issuance: Arc<Issuance>) {
    for issuer in issuance.issuers() {
        if let Err(e) = issuer.issuer.prepare().await {
            tracing::warn!(issuer = %issuer.name, error = %e, "certificate issuer not ready; its first order will try again");
        }
    }
}

async fn claim_and_run(issuance: &Arc<Issuance>, slots: &Arc<Semaphore>) {
    let free = i64::try_from(slots.available_permits()).unwrap_or(0);
    if free == 0 {
        return;
    }
    let orders = match db::orders::claim(&issuance.pool, free, LEASE).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "claiming certificate orders failed");
            return;
        }
    };
    for order in orders {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let issuance = issuance.clone();
        tokio::spawn(async move {
            if let Err(e) = issuance.run(&order).await {
                tracing::warn!(host = %order.hostname, error = %e, "certificate order interrupted; it will be retried when its lease ends");
            }
            drop(permit);
        });
    }
}

/// Asks the CAs about the certificates whose renewal information is due.
async fn check_renewal_info(issuance: &Issuance) {
    match crate::certs::ari::poll_due(issuance).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(count = n, "ARI checks done"),
        Err(e) => tracing::warn!(error = %e, "ARI checks failed"),
    }
}

async fn queue_renewals(issuance: &Issuance) {
    let result = async {
        let due = db::orders::due_renewals(&issuance.pool, 1000).await?;
        let mut tx = issuance.pool.begin().await?;
        for domain in &due {
            db::orders::request(&mut tx, *domain, "renewal").await?;
        }
        tx.commit().await?;
        anyhow::Ok(due.len())
    }
    .await;
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "renewals queued"),
        Err(e) => tracing::warn!(error = %e, "queueing renewals failed"),
    }
}
