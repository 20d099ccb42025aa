//! AES-256-GCM encryption at rest under named keys, so keys can be rotated without re-encrypting
//! history: the active key encrypts, every key in the ring decrypts, and each [`Sealed`] value names
//! the key that sealed it.
//!
//! Configuration is one string, `k1:BASE64KEY,k2:BASE64KEY`, optionally with an `active=k2` entry;
//! without it the first key is active. To rotate: add a new key in front (or name it `active`),
//! keep the old ones until nothing sealed under them is still needed, then remove them.
//!
//! Nonces are 96 random bits from the operating system's CSPRNG for every encryption. With random
//! nonces a key should seal fewer than 2^32 values; rotate well before that.

use std::fmt;
use std::str::FromStr;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{SecretsError, os_random};

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce in bytes (96 bits).
pub const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag appended to every ciphertext.
const TAG_LEN: usize = 16;
/// Longest accepted key id.
const MAX_KEY_ID_LEN: usize = 64;

/// Standard base64 that accepts keys with or without padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An encrypted value as it is stored in event payloads and tables:
/// `{"keyId": "k1", "nonce": "<base64>", "ciphertext": "<base64>"}`.
///
/// The ciphertext includes the GCM tag. Standard base64 with padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sealed {
    /// Id of the key that sealed the value.
    pub key_id: String,
    /// The 96-bit nonce, base64.
    pub nonce: String,
    /// Ciphertext with the 16-byte tag appended, base64.
    pub ciphertext: String,
}

/// AES-256-GCM with a fresh random nonce: the nonce and the ciphertext (tag appended), base64.
/// The one encryption of this crate, for keyring keys and data keys alike.
pub(crate) fn gcm_seal(
    cipher: &Aes256Gcm,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<(String, String), SecretsError> {
    let mut nonce = [0u8; NONCE_LEN];
    os_random(&mut nonce)?;
    let ciphertext = cipher
        .encrypt(&GenericArray::from(nonce), Payload { msg: plaintext, aad })
        .map_err(|_| SecretsError::EncryptionFailed)?;
    Ok((STANDARD.encode(nonce), STANDARD.encode(ciphertext)))
}

/// The inverse of [`gcm_seal`]: any change to the nonce, the ciphertext or `aad` fails.
pub(crate) fn gcm_open(
    cipher: &Aes256Gcm,
    nonce: &str,
    ciphertext: &str,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let (nonce, ciphertext) = decode_sealed(nonce, ciphertext)?;
    cipher
        .decrypt(
            &GenericArray::from(nonce),
            Payload {
                msg: &ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SecretsError::DecryptionFailed)
}

/// The nonce and the ciphertext (tag appended) of a stored seal, from their base64.
fn decode_sealed(nonce: &str, ciphertext: &str) -> Result<([u8; NONCE_LEN], Vec<u8>), SecretsError> {
    let nonce: [u8; NONCE_LEN] = STANDARD
        .decode(nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or(SecretsError::MalformedSealed { field: "nonce" })?;
    let ciphertext = STANDARD
        .decode(ciphertext)
        .ok()
        .filter(|c| c.len() >= TAG_LEN)
        .ok_or(SecretsError::MalformedSealed { field: "ciphertext" })?;
    Ok((nonce, ciphertext))
}

/// Builds associated data from context parts, unambiguously: each part is prefixed with its length,
/// so `["ab", "c"]` and `["a", "bc"]` differ. Use the same parts to encrypt and to decrypt, for
/// example `aad(&[b"email-code", instance_id, user_id])`.
pub fn aad(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A set of AES-256-GCM keys by id, one of them active for encryption.
///
/// `Debug` shows the key ids and which one is active, never a key.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Aes256Gcm)>,
    active: usize,
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key...][,active=id]`. Keys are standard base64 (padding
    /// optional) of exactly 32 bytes; key ids are 1 to 64 of `[A-Za-z0-9._-]`. Without an
    /// `active=` entry the first key encrypts. Errors name the entry or key id at fault and never
    /// contain key material.
    pub fn parse(config: &str) -> Result<Self, SecretsError> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        let mut active: Option<String> = None;
        if config.trim().is_empty() {
            return Err(SecretsError::EmptyKeyring);
        }
        for (index, entry) in config.split(',').enumerate() {
            let position = index + 1;
            let entry = entry.trim();
            if let Some(named) = entry.strip_prefix("active=") {
                let named = named.trim();
                if !valid_key_id(named) {
                    return Err(SecretsError::InvalidKeyId { position });
                }
                if active.is_some() {
                    return Err(SecretsError::MalformedKeyEntry { position });
                }
                active = Some(named.to_owned());
                continue;
            }
            let Some((id, key)) = entry.split_once(':') else {
                return Err(SecretsError::MalformedKeyEntry { position });
            };
            let (id, key) = (id.trim(), key.trim());
            if !valid_key_id(id) {
                return Err(SecretsError::InvalidKeyId { position });
            }
            if keys.iter().any(|(existing, _)| existing == id) {
                return Err(SecretsError::DuplicateKeyId {
                    key_id: id.to_owned(),
                });
            }
            let bytes =
                Zeroizing::new(
                    LENIENT_BASE64
                        .decode(key)
                        .map_err(|_| SecretsError::KeyNotBase64 {
                            key_id: id.to_owned(),
                        })?,
                );
            if bytes.len() != KEY_LEN {
                return Err(SecretsError::WrongKeyLength {
                    key_id: id.to_owned(),
                    len: bytes.len(),
                });
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SecretsError::WrongKeyLength {
                key_id: id.to_owned(),
                len: bytes.len(),
            })?;
            keys.push((id.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(SecretsError::EmptyKeyring);
        }
        let ring = Keyring { keys, active: 0 };
        match active {
            Some(id) => ring.with_active(&id),
            None => Ok(ring),
        }
    }

    /// Makes `key_id` the key that encrypts, for configurations that name it separately.
    pub fn with_active(mut self, key_id: &str) -> Result<Self, SecretsError> {
        self.active = self
            .index_of(key_id)
            .ok_or_else(|| SecretsError::UnknownActiveKey {
                key_id: key_id.to_owned(),
            })?;
        Ok(self)
    }

    /// A fresh random 32-byte key as standard base64, for scripts and tests:
    /// put it in the configuration as `k1:<this>`.
    pub fn generate_key_string() -> Result<Zeroizing<String>, SecretsError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        os_random(key.as_mut())?;
        Ok(Zeroizing::new(STANDARD.encode(key.as_ref())))
    }

    /// The id of the key that encrypts.
    pub fn active_key_id(&self) -> &str {
        self.keys
            .get(self.active)
            .map(|(id, _)| id.as_str())
            .unwrap_or_default()
    }

    /// Every key id in the ring, in configuration order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Whether the ring holds a key with this id.
    pub fn contains(&self, key_id: &str) -> bool {
        self.index_of(key_id).is_some()
    }

    /// Encrypts `plaintext` under the active key with a fresh random nonce, authenticating `aad`
    /// (which is not stored: the same bytes must be given to [`Keyring::decrypt`]).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SecretsError> {
        let (key_id, cipher) = self.keys.get(self.active).ok_or(SecretsError::EmptyKeyring)?;
        let (nonce, ciphertext) = gcm_seal(cipher, plaintext, aad)?;
        Ok(Sealed {
            key_id: key_id.clone(),
            nonce,
            ciphertext,
        })
    }

    /// Decrypts a sealed value with the key it names, checking `aad`. Any change to the nonce,
    /// the ciphertext or the associated data gives [`SecretsError::DecryptionFailed`].
    pub fn decrypt(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let cipher = self
            .index_of(&sealed.key_id)
            .and_then(|i| self.keys.get(i))
            .map(|(_, cipher)| cipher)
            .ok_or_else(|| SecretsError::UnknownKeyId {
                key_id: sealed.key_id.clone(),
            })?;
        gcm_open(cipher, &sealed.nonce, &sealed.ciphertext, aad)
    }

    /// Encrypts a UTF-8 secret (a code, an SMTP password).
    pub fn encrypt_str(&self, plaintext: &str, aad: &[u8]) -> Result<Sealed, SecretsError> {
        self.encrypt(plaintext.as_bytes(), aad)
    }

    /// Decrypts a value sealed with [`Keyring::encrypt_str`].
    pub fn decrypt_string(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<String>, SecretsError> {
        let mut bytes = self.decrypt(sealed, aad)?;
        let owned = std::mem::take(&mut *bytes);
        String::from_utf8(owned).map(Zeroizing::new).map_err(|e| {
            // Wipe the bytes that failed to convert before reporting.
            drop(Zeroizing::new(e.into_bytes()));
            SecretsError::NotUtf8
        })
    }

    /// Whether `sealed` was sealed under a key other than the active one, so a rotation job
    /// should [`Keyring::reseal`] it.
    pub fn needs_reseal(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.active_key_id()
    }

    /// Decrypts `sealed` and encrypts it again under the active key, with the same `aad`.
    pub fn reseal(&self, sealed: &Sealed, aad: &[u8]) -> Result<Sealed, SecretsError> {
        let plaintext = self.decrypt(sealed, aad)?;
        self.encrypt(&plaintext, aad)
    }

    fn index_of(&self, key_id: &str) -> Option<usize> {
        self.keys.iter().position(|(id, _)| id == key_id)
    }
}

impl FromStr for Keyring {
    type Err = SecretsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Keyring::parse(s)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active_key_id())
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
#[path = "keyring_tests.rs"]
mod tests;
