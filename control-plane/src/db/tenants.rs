//! Tenants: the customer accounts that own API keys and domains.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Free,
    Pro,
    Enterprise,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Plan> {
        match s {
            "free" => Some(Plan::Free),
            "pro" => Some(Plan::Pro),
            "enterprise" => Some(Plan::Enterprise),
            _ => None,
        }
    }

    /// Wildcard hostnames (`*.example.com`) are a paid feature.
    pub fn allows_wildcards(self) -> bool {
        self != Plan::Free
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    #[schema(value_type = String, format = Uuid)]
    pub id: TenantId,
    pub name: String,
    pub plan: Plan,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

struct Row {
    id: uuid::Uuid,
    name: String,
    plan: String,
    status: String,
    created_at: DateTime<Utc>,
}

impl From<Row> for Tenant {
    fn from(r: Row) -> Tenant {
        Tenant {
            id: TenantId::from_uuid(r.id),
            name: r.name,
            // The CHECK constraint admits only the three plans.
            plan: Plan::parse(&r.plan).unwrap_or(Plan::Free),
            status: r.status,
            created_at: r.created_at,
        }
    }
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &str,
    plan: Plan,
) -> Result<Tenant, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        "INSERT INTO tenants (id, name, plan) VALUES ($1, $2, $3)
         RETURNING id, name, plan, status, created_at",
        TenantId::generate().as_uuid(),
        name,
        plan.as_str()
    )
    .fetch_one(db)
    .await?;
    Ok(row.into())
}

pub async fn get(db: &PgPool, id: TenantId) -> Result<Option<Tenant>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        "SELECT id, name, plan, status, created_at FROM tenants WHERE id = $1",
        id.as_uuid()
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Tenant::from))
}

/// Locks the tenant row for the rest of the transaction, so that quota checks
/// and the inserts they guard are serialised per tenant.
pub async fn lock(db: impl PgExecutor<'_>, id: TenantId) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM tenants WHERE id = $1 FOR UPDATE",
        id.as_uuid()
    )
    .fetch_optional(db)
    .await?;
    Ok(())
}

/// Sets a tenant's status; returns the tenant and whether it changed.
pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: TenantId,
    status: &str,
) -> Result<Option<(Tenant, bool)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH old AS (SELECT status FROM tenants WHERE id = $1 FOR UPDATE)
           UPDATE tenants t SET status = $2 FROM old WHERE t.id = $1
           RETURNING t.id, t.name, t.plan, t.status, t.created_at, old.status AS "old_status!""#,
        id.as_uuid(),
        status
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        let changed = r.old_status != r.status;
        let tenant = Row {
            id: r.id,
            name: r.name,
            plan: r.plan,
            status: r.status,
            created_at: r.created_at,
        };
        (Tenant::from(tenant), changed)
    }))
}
