//! Standard Webhooks signatures: `v1,` + base64 of HMAC-SHA256 over `"{id}.{timestamp}.{body}"`
//! with the secret's key bytes; during a rotation one signature per valid secret, separated by
//! spaces, so a receiver that knows either secret accepts the message.

use crate::SigningSecret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header names.
pub const HEADER_ID: &str = "webhook-id";
/// The attempt's time, in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// HMAC refused the key (it takes keys of every length, so this does not happen).
#[derive(Debug, thiserror::Error)]
#[error("the signing key was refused")]
pub struct KeyRefused;

/// One signature (`v1,<base64>`).
pub fn signature(
    secret: &SigningSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, KeyRefused> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.bytes()).map_err(|_| KeyRefused)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header value for every secret in `secrets`.
pub fn signature_header(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, KeyRefused> {
    let signatures = secrets
        .iter()
        .map(|secret| signature(secret, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (id, timestamp, body, secret and
        // the signature it gives).
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).expect("sign"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let two = signature_header(
            &[secret.clone(), secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        )
        .expect("sign");
        assert_eq!(two.split(' ').count(), 2);
    }
}
