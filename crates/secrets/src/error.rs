//! The one error type of this crate. Messages name what is wrong (a key id, an entry's position, a
//! field) and never contain key material, a code, a token or a password.

use thiserror::Error;

/// What went wrong with a secret operation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretsError {
    /// The keyring configuration holds no key.
    #[error("keyring has no keys: expected `id:base64key[,id:base64key...]`")]
    EmptyKeyring,
    /// An entry of the keyring configuration is not `id:base64key` (1-based position).
    #[error("keyring entry {position} is not of the form `id:base64key`")]
    MalformedKeyEntry {
        /// 1-based position of the entry in the comma-separated list.
        position: usize,
    },
    /// A key id is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("keyring entry {position} has an invalid key id: use 1 to 64 of [A-Za-z0-9._-]")]
    InvalidKeyId {
        /// 1-based position of the entry in the comma-separated list.
        position: usize,
    },
    /// Two entries use the same key id.
    #[error("keyring key id `{key_id}` appears more than once")]
    DuplicateKeyId {
        /// The repeated key id.
        key_id: String,
    },
    /// A key is not valid base64.
    #[error("keyring key `{key_id}` is not valid base64")]
    KeyNotBase64 {
        /// The key's id.
        key_id: String,
    },
    /// A key does not decode to 32 bytes.
    #[error("keyring key `{key_id}` is {len} bytes long; AES-256 needs exactly 32")]
    WrongKeyLength {
        /// The key's id.
        key_id: String,
        /// The decoded length.
        len: usize,
    },
    /// The active key named explicitly is not in the keyring, or `active=` appears twice.
    #[error("keyring active key `{key_id}` is not one of the configured keys")]
    UnknownActiveKey {
        /// The named active key id.
        key_id: String,
    },
    /// A sealed value names a key id the keyring does not hold (removed too early after rotation?).
    #[error("no key with id `{key_id}` in the keyring")]
    UnknownKeyId {
        /// The key id the sealed value names.
        key_id: String,
    },
    /// A field of a sealed value is not well-formed (not base64, wrong length).
    #[error("sealed value has a malformed `{field}`")]
    MalformedSealed {
        /// `nonce` or `ciphertext`.
        field: &'static str,
    },
    /// Authentication failed: the ciphertext, nonce or associated data was changed, or the wrong
    /// key or context was used. Deliberately says no more.
    #[error("decryption failed: ciphertext, nonce or associated data do not authenticate")]
    DecryptionFailed,
    /// A decrypted value expected to be text is not UTF-8.
    #[error("decrypted value is not UTF-8")]
    NotUtf8,
    /// Encryption failed (only possible for absurdly large inputs).
    #[error("encryption failed")]
    EncryptionFailed,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator is unavailable")]
    RandomUnavailable,
    /// A verification-code specification is invalid.
    #[error("invalid verification code spec: {reason}")]
    InvalidCodeSpec {
        /// What is wrong, without any code.
        reason: String,
    },
    /// A token prefix is invalid.
    #[error("invalid token prefix: use 1 to 32 of [a-z0-9_] ending in `_`")]
    InvalidTokenPrefix,
    /// Password hashing failed, or its parameters are invalid.
    #[error("password hashing failed: {reason}")]
    PasswordHash {
        /// What failed, from the argon2 crate; never the password.
        reason: String,
    },
}
