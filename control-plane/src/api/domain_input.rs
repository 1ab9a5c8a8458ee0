//! Parsing a domain's fields from API input into a [`NewDomain`] or
//! [`DomainChanges`], collecting every field error (with its JSON path) so a
//! caller fixes all of them in one round trip.

use super::error::FieldError;
use crate::db::domains::{DomainChanges, NewDomain};
use crate::db::tenants::Plan;
use crate::hostname::Hostname;
use crate::ids::DomainId;
use crate::settings::Settings;
use crate::target::Target;
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;

pub const MAX_TARGETS: usize = 16;
pub const MAX_METADATA_BYTES: usize = 4096;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    /// The custom hostname, e.g. `shop.example.com`; Unicode is converted to its A-label.
    pub hostname: String,
    /// Upstream(s): `host:port` or `http(s)://host[:port]`; a string or an array of up to 16.
    #[schema(value_type = Vec<String>)]
    pub target: Value,
    /// Talk TLS to the upstream. Defaults to true for `https://` targets, else false.
    #[serde(default)]
    pub target_tls: Option<bool>,
    /// Forward the client's Host header unchanged instead of the target's host.
    #[serde(default)]
    pub keep_host: Option<bool>,
    /// Redirect rules: `to_https`, `www_to_apex`, `apex_to_www` (a string or an array).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub redirect: Option<Value>,
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    /// Any JSON object up to 4 KiB, stored and returned as given.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub custom_metadata: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Issue a certificate on the first HTTPS request (default true).
    pub on_demand: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDomain {
    /// Not changeable: delete the domain and create it again.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub hostname: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub target: Option<Value>,
    #[serde(default)]
    pub target_tls: Option<bool>,
    #[serde(default)]
    pub keep_host: Option<bool>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub redirect: Option<Value>,
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub custom_metadata: Option<Value>,
}

/// Collects field errors under a path prefix (`""` or `items[3].`).
struct Errors<'a> {
    prefix: &'a str,
    list: Vec<FieldError>,
}

impl Errors<'_> {
    fn push(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.list.push(FieldError {
            field: format!("{}{field}", self.prefix),
            code: code.to_string(),
            message: message.into(),
        });
    }
}

pub fn parse_new(
    input: CreateDomain,
    settings: &Settings,
    plan: Plan,
    prefix: &str,
) -> Result<NewDomain, Vec<FieldError>> {
    let mut errors = Errors {
        prefix,
        list: Vec::new(),
    };
    let policy = settings.platform.hostname_policy(plan.allows_wildcards());
    let hostname = match Hostname::parse(&input.hostname, &policy) {
        Ok(h) => Some(h),
        Err(e) => {
            errors.push("hostname", e.code(), e.to_string());
            None
        }
    };
    let targets = parse_targets(&input.target, settings, &mut errors);
    let target_tls = resolve_target_tls(targets.as_deref(), input.target_tls, &mut errors);
    let redirects = input
        .redirect
        .as_ref()
        .map(|r| parse_redirects(r, &mut errors))
        .unwrap_or_default();
    let custom_metadata =
        parse_metadata(input.custom_metadata, &mut errors).unwrap_or_else(|| serde_json::json!({}));
    match (hostname, targets) {
        (Some(hostname), Some(targets)) if errors.list.is_empty() => Ok(NewDomain {
            id: DomainId::generate(),
            hostname: hostname.as_str().to_string(),
            targets: targets.iter().map(Target::to_string).collect(),
            target_tls,
            keep_host: input.keep_host.unwrap_or(false),
            redirects,
            tls_on_demand: input.tls.map(|t| t.on_demand).unwrap_or(true),
            custom_metadata,
            verification_token: new_token(),
        }),
        _ => Err(errors.list),
    }
}

pub fn parse_changes(
    input: UpdateDomain,
    settings: &Settings,
) -> Result<DomainChanges, Vec<FieldError>> {
    let mut errors = Errors {
        prefix: "",
        list: Vec::new(),
    };
    if input.hostname.is_some() {
        errors.push(
            "hostname",
            "immutable",
            "the hostname cannot be changed; delete the domain and add the new name",
        );
    }
    let targets = input
        .target
        .as_ref()
        .and_then(|t| parse_targets(t, settings, &mut errors));
    let target_tls = match (&targets, input.target_tls) {
        (Some(t), explicit) => Some(resolve_target_tls(Some(t), explicit, &mut errors)),
        (None, explicit) => explicit,
    };
    let redirects = input
        .redirect
        .as_ref()
        .map(|r| parse_redirects(r, &mut errors));
    let custom_metadata = parse_metadata(input.custom_metadata, &mut errors);
    if !errors.list.is_empty() {
        return Err(errors.list);
    }
    Ok(DomainChanges {
        targets: targets.map(|t| t.iter().map(Target::to_string).collect()),
        target_tls,
        keep_host: input.keep_host,
        redirects,
        tls_on_demand: input.tls.map(|t| t.on_demand),
        custom_metadata,
    })
}

fn parse_targets(value: &Value, settings: &Settings, errors: &mut Errors) -> Option<Vec<Target>> {
    let items: Vec<(String, &Value)> = match value {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("target[{i}]"), v))
            .collect(),
        other => vec![("target".to_string(), other)],
    };
    if items.is_empty() || items.len() > MAX_TARGETS {
        errors.push(
            "target",
            "target_count",
            format!("give between 1 and {MAX_TARGETS} targets"),
        );
        return None;
    }
    let before = errors.list.len();
    let mut out = Vec::new();
    for (field, v) in items {
        match v
            .as_str()
            .map(|s| Target::parse(s, settings.platform.allow_local_targets))
        {
            Some(Ok(t)) => out.push(t),
            Some(Err(e)) => errors.push(&field, "invalid_target", e.to_string()),
            None => errors.push(
                &field,
                "invalid_type",
                "a target is a string like `app.example.com:443`",
            ),
        }
    }
    (errors.list.len() == before).then_some(out)
}

/// TLS to the upstream: explicit value, else implied by `https://` targets.
/// Mixed `http://` and `https://` targets, or a contradicting explicit value, are errors.
fn resolve_target_tls(
    targets: Option<&[Target]>,
    explicit: Option<bool>,
    errors: &mut Errors,
) -> bool {
    let schemes: Vec<bool> = targets
        .unwrap_or_default()
        .iter()
        .filter_map(Target::scheme_tls)
        .collect();
    let implied = schemes.first().copied();
    if schemes.iter().any(|s| Some(*s) != implied) {
        errors.push(
            "target",
            "mixed_schemes",
            "all targets must use the same scheme",
        );
    }
    match (explicit, implied) {
        (Some(e), Some(i)) if e != i => {
            errors.push(
                "target_tls",
                "conflict",
                format!("target_tls is {e} but the target URL scheme says {i}"),
            );
            e
        }
        (Some(e), _) => e,
        (None, i) => i.unwrap_or(false),
    }
}

const REDIRECT_RULES: [&str; 3] = ["to_https", "www_to_apex", "apex_to_www"];

fn parse_redirects(value: &Value, errors: &mut Errors) -> Vec<String> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    };
    let mut out: Vec<String> = Vec::new();
    for v in items {
        match v.as_str() {
            Some(rule) if REDIRECT_RULES.contains(&rule) => {
                if !out.iter().any(|r| r == rule) {
                    out.push(rule.to_string());
                }
            }
            _ => errors.push(
                "redirect",
                "invalid_redirect",
                format!("redirect rules are {}", REDIRECT_RULES.join(", ")),
            ),
        }
    }
    if out.iter().any(|r| r == "www_to_apex") && out.iter().any(|r| r == "apex_to_www") {
        errors.push(
            "redirect",
            "conflict",
            "www_to_apex and apex_to_www together would loop",
        );
    }
    out
}

fn parse_metadata(value: Option<Value>, errors: &mut Errors) -> Option<Value> {
    let value = value?;
    if !value.is_object() {
        errors.push(
            "custom_metadata",
            "invalid_type",
            "custom_metadata must be a JSON object",
        );
        return None;
    }
    let size = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        errors.push(
            "custom_metadata",
            "too_large",
            format!("custom_metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"),
        );
        return None;
    }
    Some(value)
}

/// The ownership token published in the TXT record: 128 random bits, hex.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}
