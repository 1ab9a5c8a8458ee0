//! API keys: `ptk_<prefix>_<secret>`. The prefix (10 random base32 chars) is
//! public and indexes the key row; the secret (32 random bytes, base64url) is
//! shown once and stored only as its SHA-256 hash. Keys carry 256 bits of
//! entropy, so a fast hash is the right tool: there is nothing to brute-force.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const SCHEME: &str = "ptk";
/// Edge tokens have the same shape with their own scheme, so that one can
/// never be mistaken for the other.
pub const EDGE_SCHEME: &str = "pte";
const PREFIX_LEN: usize = 10;
const PREFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A freshly generated key: the full token is shown to its owner once.
pub struct NewApiKey {
    pub prefix: String,
    pub token: Secret<String>,
    pub hash: Vec<u8>,
}

/// A token as presented in `Authorization: Bearer ...`, split but unverified.
#[derive(Debug)]
pub struct PresentedKey {
    pub prefix: String,
    secret: Secret<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the API key is malformed; expected `ptk_<prefix>_<secret>` as issued")]
pub struct MalformedKey;

impl NewApiKey {
    pub fn generate() -> Self {
        Self::generate_with(SCHEME)
    }

    /// A token of another scheme (e.g. [`EDGE_SCHEME`]).
    pub fn generate_with(scheme: &str) -> Self {
        let mut rng = rand::rng();
        let prefix: String = (0..PREFIX_LEN)
            .map(|_| char::from(PREFIX_ALPHABET[rng.random_range(0..PREFIX_ALPHABET.len())]))
            .collect();
        let bytes: [u8; 32] = rng.random();
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        NewApiKey {
            hash: hash_secret(&secret),
            token: Secret::new(format!("{scheme}_{prefix}_{secret}")),
            prefix,
        }
    }
}

impl PresentedKey {
    pub fn parse(token: &str) -> Result<Self, MalformedKey> {
        Self::parse_with(token, SCHEME)
    }

    /// Parses a token of another scheme (e.g. [`EDGE_SCHEME`]).
    pub fn parse_with(token: &str, scheme: &str) -> Result<Self, MalformedKey> {
        let rest = token
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(MalformedKey)?;
        let (prefix, secret) = rest.split_once('_').ok_or(MalformedKey)?;
        let prefix_ok =
            prefix.len() == PREFIX_LEN && prefix.bytes().all(|b| PREFIX_ALPHABET.contains(&b));
        let secret_ok = secret.len() == 43 && URL_SAFE_NO_PAD.decode(secret).is_ok();
        if !(prefix_ok && secret_ok) {
            return Err(MalformedKey);
        }
        Ok(PresentedKey {
            prefix: prefix.to_string(),
            secret: Secret::new(secret.to_string()),
        })
    }

    /// Constant-time comparison against the stored hash.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        hash_secret(self.secret.expose()).ct_eq(stored_hash).into()
    }
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_their_hash() {
        let key = NewApiKey::generate();
        let presented = PresentedKey::parse(key.token.expose()).unwrap();
        assert_eq!(presented.prefix, key.prefix);
        assert!(presented.matches(&key.hash));
        let other = NewApiKey::generate();
        assert!(!presented.matches(&other.hash));
    }

    #[test]
    fn schemes_do_not_mix() {
        let edge = NewApiKey::generate_with(EDGE_SCHEME);
        assert!(edge.token.expose().starts_with("pte_"));
        assert!(PresentedKey::parse_with(edge.token.expose(), EDGE_SCHEME).is_ok());
        assert_eq!(
            PresentedKey::parse(edge.token.expose()).unwrap_err(),
            MalformedKey
        );
        let api = NewApiKey::generate();
        assert!(PresentedKey::parse_with(api.token.expose(), EDGE_SCHEME).is_err());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in [
            "",
            "ptk_",
            "ptk_abc_def",
            "sk_live_x",
            "ptk_ABCDEFGHIJ_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ] {
            assert_eq!(PresentedKey::parse(bad).unwrap_err(), MalformedKey, "{bad}");
        }
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let key = NewApiKey::generate();
        let presented = PresentedKey::parse(key.token.expose()).unwrap();
        let secret_part = key.token.expose().rsplit('_').next().unwrap().to_string();
        assert!(!format!("{presented:?}").contains(&secret_part));
    }
}
