//! Parsing webhook-endpoint requests into typed changes, with one
//! [`FieldError`] per bad field. The address check (DNS, SSRF) is async
//! and runs in the handler after this.

use super::error::FieldError;
use crate::db::events::EventType;
use crate::db::webhooks::EndpointChanges;
use crate::webhooks::ssrf;
use serde::Deserialize;

pub const MAX_DESCRIPTION: usize = 500;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// `https://` URL that receives the events (at most 2,048 characters).
    pub url: String,
    /// Free text for people, at most 500 characters.
    pub description: Option<String>,
    /// Event types to send; absent or empty means every type.
    pub event_types: Option<Vec<String>>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub description: Option<String>,
    /// Replaces the filter; `[]` means every type.
    pub event_types: Option<Vec<String>>,
    /// `true` re-enables a disabled endpoint (its failure run starts over).
    pub enabled: Option<bool>,
}

/// A create request, checked field by field (all errors at once).
pub fn parse_new(
    input: CreateEndpoint,
    allow_http: bool,
) -> Result<(url::Url, EndpointChanges), Vec<FieldError>> {
    let update = UpdateEndpoint {
        url: Some(input.url),
        description: input.description,
        event_types: input.event_types,
        enabled: input.enabled,
    };
    let (url, changes) = parse_changes(update, allow_http)?;
    match url {
        Some(url) => Ok((url, changes)),
        None => Err(vec![field("url", "missing_field", "is required")]),
    }
}

/// A PATCH, checked field by field; the URL comes back parsed for the
/// address check.
pub fn parse_changes(
    input: UpdateEndpoint,
    allow_http: bool,
) -> Result<(Option<url::Url>, EndpointChanges), Vec<FieldError>> {
    let mut errors = Vec::new();
    let url = match input.url.as_deref().map(|u| ssrf::parse_url(u, allow_http)) {
        None => None,
        Some(Ok(url)) => Some(url),
        Some(Err(e)) => {
            errors.push(field("url", e.code, &e.message));
            None
        }
    };
    if let Some(d) = &input.description {
        errors.extend(check_description(d));
    }
    if let Some(types) = &input.event_types {
        errors.extend(check_event_types(types));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let changes = EndpointChanges {
        url: url.as_ref().map(|u| u.to_string()),
        description: input.description,
        event_types: input.event_types,
        enabled: input.enabled,
    };
    Ok((url, changes))
}

fn check_description(d: &str) -> Option<FieldError> {
    if d.chars().count() > MAX_DESCRIPTION {
        Some(field(
            "description",
            "too_long",
            &format!("at most {MAX_DESCRIPTION} characters"),
        ))
    } else if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        Some(field(
            "description",
            "control_characters",
            "must not contain control characters",
        ))
    } else {
        None
    }
}

fn check_event_types(types: &[String]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if types.len() > EventType::ALL.len() {
        errors.push(field(
            "event_types",
            "too_many",
            &format!("at most {} types", EventType::ALL.len()),
        ));
        return errors;
    }
    for (i, t) in types.iter().enumerate() {
        let path = format!("event_types[{i}]");
        if EventType::parse(t).is_none() {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            let shown: String = t.chars().take(60).collect();
            errors.push(field(
                &path,
                "unknown_event_type",
                &format!(
                    "{shown:?} is not an event type; known: {}",
                    known.join(", ")
                ),
            ));
        } else if types[..i].contains(t) {
            errors.push(field(&path, "duplicate", "listed twice"));
        }
    }
    errors
}

fn field(path: &str, code: &str, message: &str) -> FieldError {
    FieldError {
        field: path.to_string(),
        code: code.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(v: serde_json::Value) -> Result<(url::Url, EndpointChanges), Vec<FieldError>> {
        parse_new(serde_json::from_value(v).unwrap(), false)
    }

    #[test]
    fn a_good_request_parses() {
        let (url, c) = create(serde_json::json!({
            "url": "https://hooks.example.com/in", "description": "ops",
            "event_types": ["domain.created", "certificate.failed"]
        }))
        .unwrap();
        assert_eq!(url.as_str(), "https://hooks.example.com/in");
        assert_eq!(c.event_types.unwrap().len(), 2);
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let errors = create(serde_json::json!({
            "url": "http://hooks.example.com", "description": "x".repeat(501),
            "event_types": ["domain.created", "nope", "domain.created"]
        }))
        .unwrap_err();
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("url", "https_required"),
                ("description", "too_long"),
                ("event_types[1]", "unknown_event_type"),
                ("event_types[2]", "duplicate"),
            ]
        );
        let errors =
            create(serde_json::json!({"url": "https://h.example.com", "description": "a\u{7}b"}))
                .unwrap_err();
        assert_eq!(errors[0].code, "control_characters");
    }
}
