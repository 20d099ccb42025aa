//! API and SCIM bearer tokens: random, shown once, stored only as a hash.
//!
//! A token reads `<prefix><id>_<secret>`, for example
//! `cairn_pat_0123456789abcdef01234567_<43 base64url characters>`:
//! - the prefix says what the token is for (and lets secret scanners find leaked tokens);
//! - the id (96 random bits, 24 hex digits) is not secret: the server looks the token up by it;
//! - the secret is 32 random bytes, URL-safe base64 without padding.
//!
//! The server stores the id and the SHA-256 of the whole token. A fast hash is right here because
//! the token has 256 bits of entropy and cannot be guessed; passwords, which can, use argon2 (see
//! [`crate::hash_password`]). Verification looks the row up by id, then compares hashes in
//! constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{SecretsError, os_random, to_hex};

/// Prefix of personal access tokens (API tokens of users and machine users).
pub const PAT_PREFIX: &str = "cairn_pat_";
/// Prefix of SCIM provisioning tokens.
pub const SCIM_PREFIX: &str = "cairn_scim_";
/// Prefix of system tokens (the system API: instances; valid for no instance).
pub const SYSTEM_PREFIX: &str = "cairn_sys_";
/// Number of hex digits in a token id.
pub const TOKEN_ID_LEN: usize = 24;
/// Number of random bytes in a token's secret part.
pub const TOKEN_SECRET_BYTES: usize = 32;
/// Random bytes behind a token id.
const TOKEN_ID_BYTES: usize = TOKEN_ID_LEN / 2;
/// Characters of the secret part: 32 bytes in base64 without padding.
const TOKEN_SECRET_CHARS: usize = 43;
/// Longest accepted prefix.
const MAX_PREFIX_LEN: usize = 32;

/// A freshly issued token: show `plaintext` once, store `id` and `hash`.
///
/// `Debug` shows the id and the hash, never the plaintext.
pub struct IssuedToken {
    /// The whole token, to hand to its owner once and then forget.
    pub plaintext: Zeroizing<String>,
    /// The token id (24 hex digits): the lookup key, not secret.
    pub id: String,
    /// SHA-256 of the whole token, lower-case hex: the only form stored.
    pub hash: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("plaintext", &"[redacted]")
            .field("id", &self.id)
            .field("hash", &self.hash)
            .finish()
    }
}

/// The public parts of a presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParts<'a> {
    /// The prefix, for example [`PAT_PREFIX`].
    pub prefix: &'a str,
    /// The token id to look the stored hash up by.
    pub id: &'a str,
}

/// Issues a token with `prefix` (1 to 32 of `[a-z0-9_]`, ending in `_`, such as [`PAT_PREFIX`]),
/// with randomness from the operating system.
pub fn issue_token(prefix: &str) -> Result<IssuedToken, SecretsError> {
    check_prefix(prefix)?;
    let mut id = [0u8; TOKEN_ID_BYTES];
    let mut secret = Zeroizing::new([0u8; TOKEN_SECRET_BYTES]);
    os_random(&mut id)?;
    os_random(secret.as_mut())?;
    Ok(assemble(prefix, &id, secret.as_ref()))
}

/// Like [`issue_token`] with an injected generator, for deterministic tests.
pub fn issue_token_with<R: CryptoRng + ?Sized>(
    prefix: &str,
    rng: &mut R,
) -> Result<IssuedToken, SecretsError> {
    check_prefix(prefix)?;
    let mut id = [0u8; TOKEN_ID_BYTES];
    let mut secret = Zeroizing::new([0u8; TOKEN_SECRET_BYTES]);
    rng.fill_bytes(&mut id);
    rng.fill_bytes(secret.as_mut());
    Ok(assemble(prefix, &id, secret.as_ref()))
}

fn assemble(prefix: &str, id: &[u8], secret: &[u8]) -> IssuedToken {
    let id = to_hex(id);
    let mut plaintext = Zeroizing::new(String::with_capacity(
        prefix.len() + TOKEN_ID_LEN + 1 + TOKEN_SECRET_CHARS,
    ));
    plaintext.push_str(prefix);
    plaintext.push_str(&id);
    plaintext.push('_');
    URL_SAFE_NO_PAD.encode_string(secret, &mut plaintext);
    let hash = hash_token(&plaintext);
    IssuedToken { plaintext, id, hash }
}

/// SHA-256 of the whole token, lower-case hex (64 characters).
pub fn hash_token(token: &str) -> String {
    to_hex(&Sha256::digest(token.as_bytes()))
}

/// Whether `presented` hashes to `stored_hash`, compared in constant time.
pub fn verify_token(presented: &str, stored_hash: &str) -> bool {
    let computed = hash_token(presented);
    bool::from(computed.as_bytes().ct_eq(stored_hash.as_bytes()))
}

/// Splits a presented token into its prefix and id, or `None` if it is not shaped like a token
/// this crate issues (so a malformed bearer token is rejected before any lookup).
pub fn parse_token(presented: &str) -> Option<TokenParts<'_>> {
    if !presented.is_ascii() {
        return None;
    }
    let secret_start = presented.len().checked_sub(TOKEN_SECRET_CHARS)?;
    let id_start = secret_start.checked_sub(TOKEN_ID_LEN + 1)?;
    let secret = presented.get(secret_start..)?;
    let separator = presented.get(secret_start - 1..secret_start)?;
    let id = presented.get(id_start..secret_start - 1)?;
    let prefix = presented.get(..id_start)?;
    let secret_ok = secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (separator == "_" && secret_ok && id_ok && check_prefix(prefix).is_ok())
        .then_some(TokenParts { prefix, id })
}

fn check_prefix(prefix: &str) -> Result<(), SecretsError> {
    let ok = (2..=MAX_PREFIX_LEN).contains(&prefix.len())
        && prefix.ends_with('_')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SecretsError::InvalidTokenPrefix)
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
