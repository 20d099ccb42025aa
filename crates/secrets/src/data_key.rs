//! Data keys for crypto-shredding: one random AES-256-GCM key per subject (a user), kept only
//! sealed under the [`Keyring`], so that destroying the one stored copy makes everything sealed
//! with it unreadable for good, wherever copies of the ciphertext went (the event table, the
//! stream, backups). The same kind of key, one per instance, keys the blind index that lets
//! unique values (user names) be compared without being stored.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use aes_gcm::aead::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use std::fmt;
use zeroize::Zeroizing;

use crate::keyring::{KEY_LEN, Sealed, gcm_open, gcm_seal};
use crate::{Keyring, SecretsError, os_random};

/// A value sealed with a [`DataKey`]: `{"nonce", "ciphertext"}` (standard base64, the tag
/// appended to the ciphertext). Which key sealed it is known from its context (the subject it
/// belongs to), not stored with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedData {
    /// The 96-bit nonce, base64.
    pub nonce: String,
    /// Ciphertext with the 16-byte tag appended, base64.
    pub ciphertext: String,
}

/// A subject's data key. `Debug` never shows it; the bytes are wiped on drop.
#[derive(Clone)]
pub struct DataKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl DataKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, SecretsError> {
        let mut bytes = Zeroizing::new([0_u8; KEY_LEN]);
        os_random(bytes.as_mut())?;
        Ok(Self::from_bytes(bytes))
    }

    fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let cipher = Aes256Gcm::new(GenericArray::from_slice(bytes.as_ref()));
        Self { bytes, cipher }
    }

    /// The key sealed under the keyring's active key, bound to `aad` (the subject it belongs to),
    /// as it is stored.
    pub fn seal_under(&self, keyring: &Keyring, aad: &[u8]) -> Result<Sealed, SecretsError> {
        keyring.encrypt(self.bytes.as_ref(), aad)
    }

    /// Opens a key stored with [`DataKey::seal_under`] under the same `aad`.
    pub fn open_from(keyring: &Keyring, sealed: &Sealed, aad: &[u8]) -> Result<Self, SecretsError> {
        let plain = keyring.decrypt(sealed, aad)?;
        let bytes: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| SecretsError::MalformedSealed { field: "ciphertext" })?;
        Ok(Self::from_bytes(Zeroizing::new(bytes)))
    }

    /// Encrypts `plaintext` with a fresh random nonce, authenticating `aad`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<SealedData, SecretsError> {
        let (nonce, ciphertext) = gcm_seal(&self.cipher, plaintext, aad)?;
        Ok(SealedData { nonce, ciphertext })
    }

    /// Decrypts a value sealed with [`DataKey::encrypt`] under the same `aad`.
    pub fn decrypt(&self, sealed: &SealedData, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        gcm_open(&self.cipher, &sealed.nonce, &sealed.ciphertext, aad)
    }

    /// A keyed hash (HMAC-SHA256, lower-case hex) of `parts`, each length-prefixed: the same
    /// parts under the same key always give the same digest, and without the key nobody can test
    /// a guess against it. For blind indexes of unique values.
    pub fn blind(&self, parts: &[&[u8]]) -> Result<String, SecretsError> {
        // HMAC takes keys of any length, so this never fails for a data key.
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.bytes.as_ref())
            .map_err(|_| SecretsError::EncryptionFailed)?;
        mac.update(&crate::aad(parts));
        Ok(crate::to_hex(&mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aad;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    fn keyring() -> Keyring {
        Keyring::parse(&format!("k1:{}", STANDARD.encode([7_u8; 32]))).expect("keyring")
    }

    #[test]
    fn a_data_key_round_trips_through_the_keyring_only_with_its_own_context() {
        let ring = keyring();
        let key = DataKey::generate().expect("key");
        let stored = key.seal_under(&ring, &aad(&[b"user", b"u1"])).expect("seal");
        let opened = DataKey::open_from(&ring, &stored, &aad(&[b"user", b"u1"])).expect("open");
        let sealed = key.encrypt(b"Ada Lovelace", b"e1").expect("encrypt");
        assert_eq!(
            opened.decrypt(&sealed, b"e1").expect("decrypt").as_slice(),
            b"Ada Lovelace"
        );
        assert_eq!(
            DataKey::open_from(&ring, &stored, &aad(&[b"user", b"u2"])).err(),
            Some(SecretsError::DecryptionFailed),
            "a key copied to another subject does not open"
        );
        assert_eq!(
            opened.decrypt(&sealed, b"e2").err(),
            Some(SecretsError::DecryptionFailed)
        );
        assert!(!sealed.ciphertext.contains("Ada"));
    }

    #[test]
    fn another_key_does_not_open_and_blind_digests_depend_on_the_key() {
        let (a, b) = (DataKey::generate().expect("a"), DataKey::generate().expect("b"));
        let sealed = a.encrypt(b"x", b"").expect("encrypt");
        assert_eq!(
            b.decrypt(&sealed, b"").err(),
            Some(SecretsError::DecryptionFailed)
        );
        let blind = |k: &DataKey, parts: &[&[u8]]| k.blind(parts).expect("blind");
        assert_eq!(blind(&a, &[b"alice"]), blind(&a, &[b"alice"]));
        assert_ne!(blind(&a, &[b"alice"]), blind(&b, &[b"alice"]));
        assert_ne!(blind(&a, &[b"ab", b"c"]), blind(&a, &[b"a", b"bc"]));
        assert_eq!(blind(&a, &[b"alice"]).len(), 64);
        assert_eq!(format!("{a:?}"), "DataKey(..)");
    }
}
