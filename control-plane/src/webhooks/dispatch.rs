//! The dispatcher: outbox events → messages. Each batch locks undispatched
//! events (`SKIP LOCKED`, so replicas share the work), inserts one message per
//! matching enabled endpoint (unique per event and endpoint: a batch
//! interrupted and run again creates nothing twice) and marks the events
//! dispatched, in one transaction.

use crate::db;
use crate::db::webhook_messages::NewMessage;
use sqlx::PgPool;
use uuid::Uuid;

const BATCH: i64 = 500;

/// Dispatches every pending event; returns how many messages were created.
pub async fn dispatch(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut created = 0;
    loop {
        let mut tx = pool.begin().await?;
        let events = db::webhook_messages::claim_undispatched(&mut tx, BATCH).await?;
        if events.is_empty() {
            return Ok(created);
        }
        let mut tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let endpoints = db::webhooks::enabled_for_tenants(&mut *tx, &tenants).await?;
        let messages: Vec<NewMessage> = events
            .iter()
            .flat_map(|event| {
                endpoints
                    .iter()
                    .filter(|e| e.tenant_id == event.tenant_id && e.wants(&event.event_type))
                    .map(|e| NewMessage {
                        id: Uuid::now_v7(),
                        tenant_id: event.tenant_id,
                        endpoint_id: e.id,
                        event_id: event.id,
                        event_type: event.event_type.clone(),
                        event_created_at: event.created_at,
                        data: event.data.clone(),
                    })
            })
            .collect();
        if !messages.is_empty() {
            created += db::webhook_messages::insert(&mut tx, &messages, false).await?;
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        db::webhook_messages::mark_dispatched(&mut tx, &ids).await?;
        tx.commit().await?;
        if (events.len() as i64) < BATCH {
            return Ok(created);
        }
    }
}
