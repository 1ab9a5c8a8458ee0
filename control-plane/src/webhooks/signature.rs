//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the
//! secret is `whsec_` + base64 of random bytes; a message is signed with
//! HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` keyed by the
//! decoded bytes, sent as `v1,<base64>`. During a secret rotation the
//! `webhook-signature` header carries one signature per secret, separated by
//! spaces; a receiver accepts the message when any of them verifies.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of randomness in a new secret (the format asks for at least 24).
pub const SECRET_BYTES: usize = 32;

/// A signing secret; `Debug` never shows it.
#[derive(Clone, Debug)]
pub struct SigningSecret(Secret<Vec<u8>>);

impl SigningSecret {
    pub fn generate() -> SigningSecret {
        SigningSecret(Secret::new(rand::random::<[u8; SECRET_BYTES]>().to_vec()))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> SigningSecret {
        SigningSecret(Secret::new(bytes))
    }

    /// Parses the `whsec_...` form.
    pub fn parse(s: &str) -> Option<SigningSecret> {
        let b64 = s.strip_prefix(SECRET_PREFIX)?;
        STANDARD
            .decode(b64)
            .ok()
            .filter(|b| !b.is_empty())
            .map(SigningSecret::from_bytes)
    }

    /// The form shown to the customer once (creation, rotation).
    pub fn to_whsec(&self) -> Secret<String> {
        Secret::new(format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(self.0.expose())
        ))
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.expose()
    }
}

/// `v1,<base64 HMAC-SHA256>` of one message under one secret.
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(msg_id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether any `v1` signature in `header` was made with `secret`
/// (constant-time comparison). What a receiver does; tests use it.
pub fn verify(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.bytes());
    let mut signed = Vec::with_capacity(msg_id.len() + body.len() + 24);
    signed.extend_from_slice(msg_id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    header.split(' ').any(|part| {
        part.strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|tag| hmac::verify(&key, &signed, &tag).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification and its libraries' tests.
    #[test]
    fn matches_the_reference_vector() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_header_verifies_with_either_secret_only() {
        let (old, new, other) = (
            SigningSecret::generate(),
            SigningSecret::generate(),
            SigningSecret::generate(),
        );
        let header = signature_header(&[new.clone(), old.clone()], "msg_1", 42, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, "msg_1", 42, b"{}", &header));
        assert!(verify(&new, "msg_1", 42, b"{}", &header));
        assert!(!verify(&other, "msg_1", 42, b"{}", &header));
        assert!(!verify(&new, "msg_1", 43, b"{}", &header));
        assert!(!verify(&new, "msg_2", 42, b"{}", &header));
        assert!(!verify(&new, "msg_1", 42, b"{ }", &header));
    }

    #[test]
    fn secrets_round_trip_and_never_print() {
        let s = SigningSecret::generate();
        let shown = s.to_whsec();
        assert!(shown.expose().starts_with("whsec_"));
        let back = SigningSecret::parse(shown.expose()).unwrap();
        assert_eq!(back.bytes(), s.bytes());
        assert_eq!(back.bytes().len(), SECRET_BYTES);
        assert!(!format!("{s:?}").contains(&shown.expose()[6..12]));
        assert!(SigningSecret::parse("whsec_").is_none());
        assert!(SigningSecret::parse("nope").is_none());
    }
}
