//! Typed identifiers. Each wraps a UUID (v7, so ids sort by creation time,
//! which cursor pagination relies on) and can only be built by generating a
//! new one or parsing one.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn generate() -> Self {
                $name(Uuid::now_v7())
            }

            pub fn from_uuid(id: Uuid) -> Self {
                $name(id)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

id_type!(
    /// A customer account.
    TenantId
);
id_type!(
    /// One custom domain (virtual host) of a tenant.
    DomainId
);
id_type!(
    /// One API key of a tenant.
    ApiKeyId
);
id_type!(
    /// One registered edge proxy.
    EdgeId
);
id_type!(
    /// One row of the events outbox.
    EventId
);
