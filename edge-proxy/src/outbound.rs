//! HTTP clients for the calls the edge makes itself (the control plane's
//! config stream and heartbeats, the on-demand certificate source).
//!
//! reqwest gets a rustls `ClientConfig` built here with ring's provider, so
//! no process-wide crypto provider is needed and aws-lc never enters the
//! build. Plain `http://` needs no roots; `https://` trusts the system's
//! roots plus an optional PEM file of extra CAs.

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

/// Which certificate authorities outbound TLS trusts.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// Load the system's roots (needed for any `https://` URL).
    pub system_roots: bool,
    /// Extra CAs, PEM.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Trust {
    /// What `urls` need: system roots if any of them is `https://`.
    pub fn for_urls<'a>(urls: impl IntoIterator<Item = &'a str>, ca_file: Option<&Path>) -> Self {
        Trust {
            system_roots: urls.into_iter().any(|u| u.starts_with("https://")),
            ca_file: ca_file.map(Path::to_path_buf),
        }
    }
}

/// An error and its causes, `: `-separated: reqwest's own message ("error
/// sending request for url (...)") hides the useful part ("connection
/// refused") in its sources.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A reqwest client builder whose TLS uses ring and trusts `tls`'s roots.
pub fn builder(tls: &rustls::ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(tls.clone())
}

/// The rustls client config for `trust`. Fails if a CA file is unreadable
/// or holds no certificate, or if `https://` is needed and no root at all
/// could be loaded.
pub fn tls_config(trust: &Trust) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    if trust.system_roots {
        let found = rustls_native_certs::load_native_certs();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 || !found.errors.is_empty() {
            tracing::debug!(
                added,
                ignored,
                errors = found.errors.len(),
                "system CA roots"
            );
        }
    }
    if let Some(path) = &trust.ca_file {
        let shown = path.display();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow::anyhow!("control_plane_ca_file {shown}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("control_plane_ca_file {shown}: {e}"))?;
        if certs.is_empty() {
            anyhow::bail!("control_plane_ca_file {shown}: holds no certificate");
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("control_plane_ca_file {shown}: {e}"))?;
        }
    }
    if trust.system_roots && roots.is_empty() {
        anyhow::bail!(
            "control_plane: https:// needs CA roots, but none were found on the system \
             and control_plane_ca_file is not set"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS client config: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_described_with_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = std::io::Error::other(io);
        assert_eq!(describe(&outer), "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(describe(&e), "error sending request: connection refused");
    }

    #[test]
    fn plain_http_needs_no_roots() {
        let trust = Trust::for_urls(["http://cp.internal:8080"], None);
        assert!(!trust.system_roots);
        let config = tls_config(&trust).unwrap();
        builder(&config).build().unwrap();
    }

    #[test]
    fn https_asks_for_system_roots_and_a_ca_file_must_hold_certificates() {
        assert!(Trust::for_urls(["http://a", "https://b"], None).system_roots);
        let dir = std::env::temp_dir().join(format!("portico-outbound-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = tls_config(&Trust {
            system_roots: false,
            ca_file: Some(empty.clone()),
        })
        .unwrap_err();
        assert!(err.to_string().contains("holds no certificate"), "{err}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        tls_config(&Trust {
            system_roots: true,
            ca_file: Some(file),
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
