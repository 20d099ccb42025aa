//! Everything secret in Cairn, in one pure library (no I/O), so that the rules of DESIGN.md
//! guarantee 9 live in one place and are tested once:
//!
//! - [`Keyring`]: AES-256-GCM encryption at rest (verification codes, SMTP passwords) under a key
//!   id, so keys can be rotated: one active key encrypts, every configured key decrypts. Associated
//!   data ([`aad`]; per purpose [`email_code_aad`], [`smtp_password_aad`]) binds a ciphertext to
//!   its context, so a sealed code cannot be replayed for another user or purpose.
//! - [`generate_code`] and [`codes_match`]: verification codes drawn from a CSPRNG without modulo
//!   bias, compared in constant time.
//! - [`issue_token`], [`hash_token`], [`verify_token`]: high-entropy API and SCIM tokens, shown
//!   once and stored only as SHA-256 hashes.
//! - [`hash_password`] and [`verify_password`]: argon2id for human-chosen passwords.
//! - [`DataKey`]: a random key per subject, stored only sealed under the keyring, for personal
//!   data that must be erasable by destroying the key (crypto-shredding), and blind indexes.
//! - [`Redacted`]: a wrapper whose `Debug` and `Display` never show the value, for configuration.
//!
//! Secrets leave this crate in [`zeroize::Zeroizing`] containers where the caller holds them, and
//! no error or `Debug` output of this crate contains key material, a code, a token or a password.

mod code;
mod data_key;
mod error;
mod keyring;
mod password;
mod purpose;
mod redacted;
mod token;

pub use code::{CodeSpec, DEFAULT_CODE_ALPHABET, DEFAULT_CODE_LENGTH, codes_match, generate_code};
pub use data_key::{DataKey, SealedData};
pub use error::SecretsError;
pub use keyring::{KEY_LEN, Keyring, NONCE_LEN, Sealed, aad};
pub use password::{
    PasswordParams, hash_password, hash_password_with, password_needs_rehash, verify_password,
};
pub use purpose::{data_key_aad, email_code_aad, personal_data_aad, smtp_password_aad, target_secret_aad};
pub use redacted::{Redacted, SecretString};
pub use token::{
    IssuedToken, PAT_PREFIX, SCIM_PREFIX, SYSTEM_PREFIX, TOKEN_ID_LEN, TOKEN_SECRET_BYTES, TokenParts,
    hash_token, issue_token, issue_token_with, parse_token, verify_token,
};
pub use zeroize::Zeroizing;

/// Fills `buf` from the operating system's CSPRNG, reporting (not panicking on) its failure.
pub(crate) fn os_random(buf: &mut [u8]) -> Result<(), SecretsError> {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|_| SecretsError::RandomUnavailable)
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
