//! Secrets at rest: private keys are sealed with AES-256-GCM (ring) under a
//! named key from `PORTICO_ENCRYPTION_KEYS` (`id:base64key,...`, the first is
//! used to seal, all of them open). The key id is stored beside the
//! ciphertext, so keys rotate by putting a new one first and keeping the old
//! one until nothing is sealed with it.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("no encryption key is configured (set PORTICO_ENCRYPTION_KEYS)")]
    NoKey,
    #[error("sealed with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("ciphertext does not open: wrong key or corrupted data")]
    Corrupt,
}

/// The configured keys; cheap to clone.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Arc<Vec<(String, LessSafeKey)>>,
}

/// A sealed value: which key, and nonce ‖ ciphertext ‖ tag.
#[derive(Debug)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl Keyring {
    /// Parses `id:base64(32 bytes)` entries separated by commas.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry
                .split_once(':')
                .ok_or("each entry is `id:base64key`")?;
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("key id {id:?} must be 1-32 letters or digits"));
            }
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| format!("key {id:?} is not base64"))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| format!("key {id:?} must be 32 bytes (openssl rand -base64 32)"))?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("key id {id:?} appears twice"));
            }
            keys.push((id.to_string(), LessSafeKey::new(unbound)));
        }
        Ok(Keyring {
            keys: Arc::new(keys),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `plaintext` under the first key; `context` is bound as
    /// associated data (e.g. the domain id), so a row can't be swapped.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Sealed, CryptoError> {
        let (id, key) = self.keys.first().ok_or(CryptoError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CryptoError::Corrupt)?;
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut buf,
        )
        .map_err(|_| CryptoError::Corrupt)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&buf);
        Ok(Sealed {
            key_id: id.clone(),
            bytes,
        })
    }

    pub fn open(
        &self,
        key_id: &str,
        sealed: &[u8],
        context: &[u8],
    ) -> Result<Secret<Vec<u8>>, CryptoError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_string()))?;
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Corrupt)?;
        let mut buf = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| CryptoError::Corrupt)?;
        Ok(Secret::new(plain.to_vec()))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn seals_and_opens_with_rotation() {
        let old = Keyring::parse(K1).unwrap();
        let sealed = old.seal(b"private key", b"domain-1").unwrap();
        assert_eq!(sealed.key_id, "k1");
        let rotated = Keyring::parse(&format!("{K2},{K1}")).unwrap();
        let plain = rotated.open("k1", &sealed.bytes, b"domain-1").unwrap();
        assert_eq!(plain.expose(), b"private key");
        assert_eq!(rotated.seal(b"x", b"c").unwrap().key_id, "k2");
    }

    #[test]
    fn wrong_context_key_or_bytes_do_not_open() {
        let ring = Keyring::parse(K1).unwrap();
        let sealed = ring.seal(b"secret", b"domain-1").unwrap();
        assert_eq!(
            ring.open("k1", &sealed.bytes, b"domain-2").unwrap_err(),
            CryptoError::Corrupt
        );
        let mut flipped = sealed.bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(
            ring.open("k1", &flipped, b"domain-1").unwrap_err(),
            CryptoError::Corrupt
        );
        assert_eq!(
            ring.open("k9", &sealed.bytes, b"domain-1").unwrap_err(),
            CryptoError::UnknownKey("k9".into())
        );
        assert_eq!(
            ring.open("k1", &[1, 2], b"").unwrap_err(),
            CryptoError::Corrupt
        );
        assert_eq!(
            Keyring::default().seal(b"x", b"").unwrap_err(),
            CryptoError::NoKey
        );
    }

    #[test]
    fn bad_specs_are_explained() {
        for bad in [
            "k1",
            "k1:notbase64!",
            "k1:AAAA",
            "bad id:AAAA",
            &format!("{K1},{K1}"),
        ] {
            assert!(Keyring::parse(bad).is_err(), "{bad}");
        }
        assert!(Keyring::parse("").unwrap().is_empty());
        assert!(!format!("{:?}", Keyring::parse(K1).unwrap()).contains("AAEC"));
    }
}
