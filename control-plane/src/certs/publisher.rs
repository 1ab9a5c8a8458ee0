//! The control plane's [`ChallengePublisher`]: an answer is stored (and so
//! published to every edge through the config stream), then we wait until
//! every edge that is up has acknowledged that version, bounded, before
//! telling the CA to validate. Withdrawing deletes it (published likewise).

use crate::crypto::Keyring;
use crate::db;
use crate::db::challenges::NewChallenge;
use async_trait::async_trait;
use portico_acme::{Challenge, ChallengePublisher, PublishError};
use sqlx::PgPool;
use std::time::{Duration, Instant};

pub struct EdgePublisher {
    pub pool: PgPool,
    pub keys: Keyring,
    /// Edges silent for longer than this are not waited for.
    pub edge_fresh: Duration,
    /// The longest wait for acknowledgements.
    pub ack_wait: Duration,
}

fn id_of(answer: &Challenge) -> String {
    match answer {
        Challenge::Http01 { token, .. } => format!("http01:{token}"),
        Challenge::TlsAlpn01 { hostname, .. } => format!("tls_alpn01:{hostname}"),
    }
}

#[async_trait]
impl ChallengePublisher for EdgePublisher {
    async fn publish(&self, answer: &Challenge) -> Result<(), PublishError> {
        let fail = |e: &dyn std::fmt::Display| {
            PublishError::new(format!("storing the challenge answer: {e}"))
        };
        let mut tx = self.pool.begin().await.map_err(|e| fail(&e))?;
        let new = match answer {
            Challenge::Http01 {
                token,
                key_authorization,
                ..
            } => NewChallenge::Http01 {
                token,
                key_authorization,
            },
            Challenge::TlsAlpn01 {
                hostname,
                certificate_pem,
                key_pem,
            } => NewChallenge::TlsAlpn01 {
                hostname,
                certificate_pem,
                key_pem: key_pem.expose(),
            },
        };
        let version = db::challenges::put(&mut tx, &self.keys, &new)
            .await
            .map_err(|e| fail(&e))?;
        tx.commit().await.map_err(|e| fail(&e))?;
        let Some(version) = version else {
            return Ok(());
        };
        self.wait_for_edges(version).await;
        Ok(())
    }

    async fn withdraw(&self, answer: &Challenge) {
        let id = id_of(answer);
        let result = async {
            let mut tx = self.pool.begin().await?;
            db::challenges::remove(&mut tx, &id).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(challenge = %id, error = %e, "withdrawing a challenge answer failed");
        }
    }
}

impl EdgePublisher {
    /// Polls the edges' acknowledged versions until none that is up lags.
    async fn wait_for_edges(&self, version: u64) {
        let deadline = Instant::now() + self.ack_wait;
        let v = db::config::as_i64(version);
        loop {
            match db::edges::behind(&self.pool, v, self.edge_fresh.as_secs_f64()).await {
                Ok(0) => return,
                Ok(n) if Instant::now() >= deadline => {
                    tracing::warn!(
                        version,
                        lagging = n,
                        "edges did not acknowledge the challenge in time; validating anyway"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read edge acknowledgements");
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await, // allow-sleep: polling with a deadline
            }
        }
    }
}
