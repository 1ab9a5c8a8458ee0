//! How a locally spawned edge gets its identity in the control plane's
//! registry (`edges` table): reuse the token left by an earlier run if the
//! registry still accepts it, else register a new edge.
//!
//! The token is kept beside the edge's data dir (`edge-N.token`, mode 0600),
//! so restarting `scripts/dev` keeps showing one `local-1` in
//! `GET /v1/ops/edges` instead of a new edge per run. When the name is taken
//! and the token file does not match it (another database, a deleted file),
//! the edge is registered as `local-1-<4 hex>` instead; names are never
//! taken over, since the registry cannot re-issue a token without new SQL.

use super::InfraError;
use crate::api::edges::create_edge;
use crate::api::error::ApiError;
use crate::api_key::{EDGE_SCHEME, PresentedKey};
use crate::db;
use crate::secret::Secret;
use sqlx::PgPool;
use std::io::Write;
use std::path::Path;

/// An edge's registered name and its bearer token.
pub(crate) struct Identity {
    pub name: String,
    pub token: Secret<String>,
}

/// The identity stored in `token_file` if the registry accepts it, else a
/// newly registered `name` (or `name-<4 hex>` when `name` is taken), whose
/// token is then written to `token_file`.
pub(crate) async fn register(
    pool: &PgPool,
    token_file: &Path,
    name: &str,
    region: &str,
) -> Result<Identity, InfraError> {
    if let Some(identity) = reuse(pool, token_file).await? {
        tracing::info!(edge = %identity.name, "reusing the edge registered by an earlier run");
        return Ok(identity);
    }
    let mut candidate = name.to_string();
    let mut attempts = 0;
    let created = loop {
        match create_edge(pool, &candidate, region).await {
            Ok(created) => break created,
            Err(ApiError::Conflict(_)) if attempts < 5 => {
                attempts += 1;
                candidate = format!("{name}-{:04x}", rand::random::<u16>());
            }
            Err(source) => {
                return Err(InfraError::Register {
                    name: candidate,
                    source,
                });
            }
        }
    };
    write_token(token_file, &created.token)?;
    tracing::info!(edge = %created.edge.name, region, "edge registered");
    Ok(Identity {
        name: created.edge.name,
        token: Secret::new(created.token),
    })
}

/// The edge `token_file` names, if the file holds a token the registry
/// still accepts (a missing or malformed file is no identity, not an error).
async fn reuse(pool: &PgPool, token_file: &Path) -> Result<Option<Identity>, InfraError> {
    let text = match std::fs::read_to_string(token_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(InfraError::io(format!("reading {}", token_file.display()))(
                e,
            ));
        }
    };
    let token = text.trim();
    let Ok(presented) = PresentedKey::parse_with(token, EDGE_SCHEME) else {
        return Ok(None);
    };
    let Some(found) = db::edges::find_for_auth(pool, &presented.prefix).await? else {
        return Ok(None);
    };
    Ok(presented.matches(&found.hash).then(|| Identity {
        name: found.name,
        token: Secret::new(token.to_string()),
    }))
}

fn write_token(path: &Path, token: &str) -> Result<(), InfraError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(InfraError::io(format!("writing {}", path.display())))?;
    writeln!(file, "{token}").map_err(InfraError::io(format!("writing {}", path.display())))
}
