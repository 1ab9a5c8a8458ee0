//! [`DevCa`]: a local certificate authority for development mode, so that
//! Portico serves HTTPS with no network and no ACME server. Its root lives in
//! a directory (`dev-ca.pem`, and `dev-ca.key` readable by the owner only),
//! created on first use and loaded afterwards; leaves are signed directly.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer as RcgenIssuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};

use crate::certificate::{self, CertificateId};
use crate::challenge::ChallengePublisher;
use crate::error::Error;
use crate::issuer::{IssueRequest, Issued, Issuer, PrivateKeyPem};

/// Root certificate file name inside the CA directory.
pub const CERT_FILE: &str = "dev-ca.pem";
/// Root key file name inside the CA directory (mode 0600).
pub const KEY_FILE: &str = "dev-ca.key";

const ROOT_LIFETIME_DAYS: i64 = 3650;
const LEAF_LIFETIME_DAYS: i64 = 90;
/// Leaves start a little in the past so that a skewed clock still accepts them.
const BACKDATE_MINUTES: i64 = 5;

/// A development CA; see the module documentation.
pub struct DevCa {
    issuer: RcgenIssuer<'static, KeyPair>,
    root_pem: String,
    dir: PathBuf,
}

impl DevCa {
    /// Open the CA stored in `dir`, creating the directory, key and root as
    /// needed. A key without a root gets a new root; a root without its key
    /// is an error (nothing could be signed), as is a key that does not
    /// match the root.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if cert_path.exists() && !key_path.exists() {
            return Err(Error::Config(format!(
                "{} exists without {}; remove it to start a new dev CA",
                cert_path.display(),
                key_path.display()
            )));
        }
        let key = load_or_create_key(&key_path)?;
        let root_pem = if cert_path.exists() {
            fs::read_to_string(&cert_path).map_err(|e| io_error("reading", &cert_path, e))?
        } else {
            let pem = new_root_pem(&key, Utc::now())?;
            write_file(&cert_path, pem.as_bytes(), 0o644)?;
            tracing::info!(path = %cert_path.display(), "created a development CA");
            pem
        };
        check_key_matches(&root_pem, &key, &cert_path)?;
        let issuer = RcgenIssuer::from_ca_cert_pem(&root_pem, key)
            .map_err(|e| Error::Config(format!("{} is not a CA: {e}", cert_path.display())))?;
        Ok(Self {
            issuer,
            root_pem,
            dir,
        })
    }

    /// The root certificate (PEM), for dev mode to print or install.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The directory the CA lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sign a 90-day ECDSA P-256 leaf for `names`, valid from `now`.
    pub fn sign(&self, names: &[String], now: DateTime<Utc>) -> Result<Issued, Error> {
        let key = certificate::new_leaf_key()?;
        let not_before = now - TimeDelta::minutes(BACKDATE_MINUTES);
        let not_after = not_before + TimeDelta::days(LEAF_LIFETIME_DAYS);
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| Error::InvalidRequest(format!("names {names:?}: {e}")))?;
        let mut subject = DistinguishedName::new();
        if let Some(first) = names.first() {
            subject.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = subject;
        params.not_before = offset(not_before)?;
        params.not_after = offset(not_after)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::Internal(format!("signing a dev certificate: {e}")))?;
        let chain_pem = cert.pem();
        Ok(Issued {
            certificate_id: CertificateId::from_leaf_der(cert.der()),
            chain_pem,
            key_pem: PrivateKeyPem::new(key.serialize_pem()),
            not_before: trunc_secs(not_before),
            not_after: trunc_secs(not_after),
            ari_window: None,
        })
    }
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Issuer for DevCa {
    /// Signs at once: no challenge is published.
    async fn issue(
        &self,
        req: &IssueRequest,
        _publisher: &dyn ChallengePublisher,
    ) -> Result<Issued, Error> {
        req.validate()?;
        self.sign(&req.names, Utc::now())
    }
}

fn load_or_create_key(path: &Path) -> Result<KeyPair, Error> {
    if path.exists() {
        let pem = fs::read_to_string(path).map_err(|e| io_error("reading", path, e))?;
        return KeyPair::from_pem(&pem)
            .map_err(|e| Error::Config(format!("{} is not a private key: {e}", path.display())));
    }
    let key = certificate::new_leaf_key()?;
    write_file(path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(key)
}

fn new_root_pem(key: &KeyPair, now: DateTime<Utc>) -> Result<String, Error> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "Portico");
    subject.push(DnType::CommonName, "Portico development CA");
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(now - TimeDelta::hours(1))?;
    params.not_after = offset(now + TimeDelta::days(ROOT_LIFETIME_DAYS))?;
    let cert = params
        .self_signed(key)
        .map_err(|e| Error::Internal(format!("creating the dev CA root: {e}")))?;
    Ok(cert.pem())
}

fn check_key_matches(root_pem: &str, key: &KeyPair, cert_path: &Path) -> Result<(), Error> {
    let root = certificate::parse_leaf(root_pem)
        .map_err(|e| Error::Config(format!("{}: {e}", cert_path.display())))?;
    if root.public_key_der != key.subject_public_key_info() {
        return Err(Error::Config(format!(
            "{} does not belong to {KEY_FILE} in the same directory",
            cert_path.display()
        )));
    }
    Ok(())
}

/// Write through a temporary file and rename, so a crash leaves either the
/// old file or the whole new one. `mode` applies on Unix.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(&tmp)
        .map_err(|e| io_error("creating", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_error("renaming", path, e))
}

fn offset(at: DateTime<Utc>) -> Result<time::OffsetDateTime, Error> {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp())
        .map_err(|e| Error::Internal(format!("time out of range: {e}")))
}

fn trunc_secs(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

fn io_error(action: &str, path: &Path, err: std::io::Error) -> Error {
    Error::Config(format!("{action} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_90_day_p256_certificates_for_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::open(dir.path()).unwrap();
        let now = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let issued = ca
            .sign(&["a.localhost".into(), "b.localhost".into()], now)
            .unwrap();
        assert_eq!(issued.not_after - issued.not_before, TimeDelta::days(90));
        assert!(issued.not_before <= now);
        assert!(issued.certificate_id.is_some());
        assert!(issued.key_pem.expose().contains("BEGIN PRIVATE KEY"));
        let leaf = certificate::parse_leaf(&issued.chain_pem).unwrap();
        assert_eq!(leaf.not_after, issued.not_after);
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        DevCa::open(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_lost_root_is_recreated_from_the_key_but_a_lost_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevCa::open(dir.path()).unwrap().root_pem().to_owned();
        fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let second = DevCa::open(dir.path()).unwrap().root_pem().to_owned();
        assert_ne!(first, second);
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(DevCa::open(dir.path()), Err(Error::Config(_))));
    }

    #[test]
    fn a_key_from_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        DevCa::open(dir.path()).unwrap();
        let other = KeyPair::generate().unwrap().serialize_pem();
        fs::write(dir.path().join(KEY_FILE), other).unwrap();
        assert!(matches!(DevCa::open(dir.path()), Err(Error::Config(_))));
    }
}
