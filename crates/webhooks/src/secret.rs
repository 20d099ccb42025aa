//! Signing secrets: 32 random bytes, shown to the administrator once as `whsec_` + base64 (the
//! Standard Webhooks form), stored only sealed by the keyring with the instance and target as
//! associated data.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_secrets::{Keyring, Sealed, SecretsError, target_secret_aad};
use zeroize::Zeroizing;

/// The prefix of the shown form.
pub const PREFIX: &str = "whsec_";

/// A signing secret's key bytes.
#[derive(Clone)]
pub struct SigningSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rng(), bytes.as_mut_slice());
        Self(bytes)
    }

    /// Parses the shown form (`whsec_` + base64; the prefix may be left out).
    pub fn parse(value: &str) -> Option<Self> {
        let b64 = value.strip_prefix(PREFIX).unwrap_or(value);
        let bytes = STANDARD.decode(b64).ok()?;
        (bytes.len() >= 16).then(|| Self(Zeroizing::new(bytes)))
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The form shown once to the administrator.
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{PREFIX}{}", STANDARD.encode(self.0.as_slice())))
    }

    /// Seals the secret for `instance`'s `target`.
    pub fn seal(
        &self,
        keys: &Keyring,
        instance: &[u8; 16],
        target: &[u8; 16],
    ) -> Result<Sealed, SecretsError> {
        keys.encrypt(&self.0, &target_secret_aad(instance, target))
    }

    /// Opens a secret sealed by [`SigningSecret::seal`] for the same instance and target.
    pub fn open(
        keys: &Keyring,
        sealed: &Sealed,
        instance: &[u8; 16],
        target: &[u8; 16],
    ) -> Result<Self, SecretsError> {
        let bytes = keys.decrypt(sealed, &target_secret_aad(instance, target))?;
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shown_form_parses_back_and_a_sealed_secret_opens_only_for_its_target() {
        let secret = SigningSecret::generate();
        let shown = secret.reveal();
        assert!(shown.starts_with(PREFIX));
        let parsed = SigningSecret::parse(&shown).expect("parses");
        assert_eq!(parsed.bytes(), secret.bytes());
        let keys = Keyring::parse(&format!(
            "k1:{}",
            Keyring::generate_key_string().expect("key").as_str()
        ))
        .expect("keyring");
        let sealed = secret.seal(&keys, &[1; 16], &[2; 16]).expect("seal");
        let opened = SigningSecret::open(&keys, &sealed, &[1; 16], &[2; 16]).expect("open");
        assert_eq!(opened.bytes(), secret.bytes());
        assert!(SigningSecret::open(&keys, &sealed, &[1; 16], &[3; 16]).is_err());
        assert!(SigningSecret::parse("whsec_short").is_none());
    }
}
