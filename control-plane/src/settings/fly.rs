//! Fly Machines settings (`PORTICO_FLY_*`) for the `FlyMachines` infra
//! adapter, documented in `docs/configuration.md` and `docs/infra.md`.
//! Unset `PORTICO_FLY_APP` means no Fly adapter.

use super::{Raw, SettingsError, err, positive};
use crate::infra::fly::EdgePorts;
use crate::secret::Secret;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct FlySettings {
    /// `https://api.machines.dev`, or `http://_api.internal:4280` inside Fly.
    pub api_url: String,
    pub token: Secret<String>,
    pub app: String,
    pub edge_ports: EdgePorts,
    /// One API call's timeout.
    pub timeout: Duration,
    /// How long restart, replace and scale wait for a machine to start.
    pub start_timeout: Duration,
    /// The machine config (`config` of Fly's create call) new edges get
    /// when scaling up; `None` copies the newest machine's.
    pub machine_config: Option<serde_json::Value>,
}

pub(super) fn fly_settings(raw: &Raw) -> Result<Option<FlySettings>, SettingsError> {
    let Some(app) = raw.get("PORTICO_FLY_APP") else {
        if raw.get("PORTICO_FLY_API_TOKEN").is_some() {
            return Err(err(
                "PORTICO_FLY_APP",
                "required with PORTICO_FLY_API_TOKEN",
            ));
        }
        return Ok(None);
    };
    let api_url = raw
        .get("PORTICO_FLY_API_URL")
        .unwrap_or("https://api.machines.dev");
    match url::Url::parse(api_url) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
        _ => {
            return Err(err(
                "PORTICO_FLY_API_URL",
                "must be an https:// (or http://, inside Fly's private network) URL",
            ));
        }
    }
    let token = raw.get("PORTICO_FLY_API_TOKEN").ok_or_else(|| {
        err(
            "PORTICO_FLY_API_TOKEN",
            "required with PORTICO_FLY_APP (`fly tokens create deploy -a APP`)",
        )
    })?;
    Ok(Some(FlySettings {
        api_url: api_url.trim_end_matches('/').to_string(),
        token: Secret::new(token.to_string()),
        app: app.to_string(),
        edge_ports: edge_ports(raw.get("PORTICO_FLY_EDGE_PORTS").unwrap_or("80,443,9180"))
            .map_err(|e| err("PORTICO_FLY_EDGE_PORTS", &e))?,
        timeout: Duration::from_millis(u64::from(positive(raw, "PORTICO_FLY_TIMEOUT_MS", 10_000)?)),
        start_timeout: Duration::from_secs(u64::from(positive(
            raw,
            "PORTICO_FLY_START_TIMEOUT_SECS",
            120,
        )?)),
        machine_config: match raw.get("PORTICO_FLY_MACHINE_CONFIG") {
            None => None,
            Some(path) => {
                Some(machine_config(path).map_err(|e| err("PORTICO_FLY_MACHINE_CONFIG", &e))?)
            }
        },
    }))
}

/// `HTTP,HTTPS,ADMIN`, e.g. `80,443,9180`.
fn edge_ports(s: &str) -> Result<EdgePorts, String> {
    let ports: Vec<u16> = s
        .split(',')
        .map(|p| p.trim().parse::<u16>().ok().filter(|p| *p != 0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{s:?}: give three ports, HTTP,HTTPS,ADMIN, e.g. 80,443,9180"))?;
    match ports[..] {
        [http, https, admin] => Ok(EdgePorts { http, https, admin }),
        _ => Err(format!(
            "{s:?}: give three ports, HTTP,HTTPS,ADMIN, e.g. 80,443,9180"
        )),
    }
}

/// A JSON file holding a Fly machine config object (`{"image": …}`).
fn machine_config(path: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    match value.get("image").and_then(|i| i.as_str()) {
        Some(_) => Ok(value),
        None => Err(format!(
            "{path}: must be a machine config object with an \"image\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use std::collections::HashMap;

    fn fly(pairs: &[(&str, &str)]) -> Result<Settings, super::SettingsError> {
        let env: HashMap<String, String> = [("DATABASE_URL", "x")]
            .iter()
            .chain(pairs)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_sources(env)
    }

    #[test]
    fn fly_is_off_by_default_and_checked_when_on() {
        assert!(fly(&[]).unwrap().fly.is_none());
        let s = fly(&[
            ("PORTICO_FLY_APP", "portico-edges"),
            ("PORTICO_FLY_API_TOKEN", "fm2_sekrit-token"),
        ])
        .unwrap();
        let f = s.fly.as_ref().unwrap();
        assert_eq!(f.api_url, "https://api.machines.dev");
        assert_eq!((f.edge_ports.http, f.edge_ports.admin), (80, 9180));
        assert!(
            !format!("{s:?}").contains("sekrit"),
            "the token is not printed"
        );
        for (pairs, variable) in [
            (&[("PORTICO_FLY_API_TOKEN", "t")][..], "PORTICO_FLY_APP"),
            (&[("PORTICO_FLY_APP", "a")][..], "PORTICO_FLY_API_TOKEN"),
            (
                &[
                    ("PORTICO_FLY_APP", "a"),
                    ("PORTICO_FLY_API_TOKEN", "t"),
                    ("PORTICO_FLY_API_URL", "ftp://x"),
                ][..],
                "PORTICO_FLY_API_URL",
            ),
            (
                &[
                    ("PORTICO_FLY_APP", "a"),
                    ("PORTICO_FLY_API_TOKEN", "t"),
                    ("PORTICO_FLY_EDGE_PORTS", "80,443"),
                ][..],
                "PORTICO_FLY_EDGE_PORTS",
            ),
            (
                &[
                    ("PORTICO_FLY_APP", "a"),
                    ("PORTICO_FLY_API_TOKEN", "t"),
                    ("PORTICO_FLY_MACHINE_CONFIG", "/nonexistent.json"),
                ][..],
                "PORTICO_FLY_MACHINE_CONFIG",
            ),
        ] {
            assert_eq!(fly(pairs).unwrap_err().variable, variable, "{pairs:?}");
        }
    }

    #[test]
    fn a_machine_config_file_is_read_and_needs_an_image() {
        let dir = std::env::temp_dir().join(format!("portico-fly-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("machine.json");
        std::fs::write(
            &good,
            r#"{"image": "registry.fly.io/portico-edge:v1", "guest": {"cpus": 1}}"#,
        )
        .unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"guest": {"cpus": 1}}"#).unwrap();
        let with = |path: &std::path::Path| {
            fly(&[
                ("PORTICO_FLY_APP", "a"),
                ("PORTICO_FLY_API_TOKEN", "t"),
                ("PORTICO_FLY_MACHINE_CONFIG", path.to_str().unwrap()),
            ])
        };
        let s = with(&good).unwrap();
        let config = s.fly.unwrap().machine_config.unwrap();
        assert_eq!(config["image"], "registry.fly.io/portico-edge:v1");
        let e = with(&bad).unwrap_err();
        assert_eq!(e.variable, "PORTICO_FLY_MACHINE_CONFIG");
        assert!(e.message.contains("image"), "{e}");
    }
}
