//! Password hashing with argon2id, for human-chosen secrets that can be guessed and so must be
//! slow to test. (Tokens are random and use a fast hash; see [`crate::hash_token`].)
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) that carry their own
//! parameters, so the parameters can be raised later: [`verify_password`] reads them from the hash,
//! and [`password_needs_rehash`] tells when to store a new hash after a successful login.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::{SecretsError, os_random};

/// Random bytes in every salt.
const SALT_LEN: usize = 16;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory per hash in KiB.
    pub memory_kib: u32,
    /// Number of passes over the memory.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// OWASP's argon2id recommendation for a small server: 19 MiB, 2 passes, 1 lane (about
    /// 20-40 ms on one core of a 2-core machine, optimised build).
    fn default() -> Self {
        PasswordParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordParams {
    fn hasher(&self) -> Result<Argon2<'static>, SecretsError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None).map_err(|e| {
            SecretsError::PasswordHash {
                reason: e.to_string(),
            }
        })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes `password` with argon2id, the default parameters and a fresh random salt; returns the
/// PHC string to store.
pub fn hash_password(password: &str) -> Result<String, SecretsError> {
    hash_password_with(password, &PasswordParams::default())
}

/// Like [`hash_password`] with explicit parameters.
pub fn hash_password_with(password: &str, params: &PasswordParams) -> Result<String, SecretsError> {
    let hasher = params.hasher()?;
    let mut salt = [0u8; SALT_LEN];
    os_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| SecretsError::PasswordHash {
        reason: e.to_string(),
    })?;
    hasher
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SecretsError::PasswordHash {
            reason: e.to_string(),
        })
}

/// Whether `password` matches the PHC string `phc` (argon2 variants, with the parameters the
/// hash records). A malformed hash never matches. The final comparison is constant-time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Whether a stored hash should be replaced because it is not argon2id with `params`.
pub fn password_needs_rehash(phc: &str, params: &PasswordParams) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let Ok(stored) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed.version != Some(Version::V0x13.into())
        || stored.m_cost() != params.memory_kib
        || stored.t_cost() != params.iterations
        || stored.p_cost() != params.parallelism
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters, so the tests stay fast in unoptimised builds; one test uses the defaults.
    const FAST: PasswordParams = PasswordParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn default_hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!password_needs_rehash(&phc, &PasswordParams::default()));
    }

    #[test]
    fn wrong_passwords_and_malformed_hashes_are_rejected() {
        let phc = hash_password_with("s3cret", &FAST).unwrap();
        assert!(verify_password("s3cret", &phc));
        assert!(!verify_password("S3cret", &phc));
        assert!(!verify_password("", &phc));
        assert!(!verify_password("s3cret", ""));
        assert!(!verify_password("s3cret", "$argon2id$v=19$garbage"));
        assert!(!verify_password("s3cret", "plain text"));
    }

    #[test]
    fn each_hash_has_its_own_salt() {
        let a = hash_password_with("same", &FAST).unwrap();
        let b = hash_password_with("same", &FAST).unwrap();
        assert_ne!(a, b);
        assert!(verify_password("same", &a) && verify_password("same", &b));
    }

    #[test]
    fn rehash_is_needed_when_parameters_change() {
        let phc = hash_password_with("pw", &FAST).unwrap();
        assert!(!password_needs_rehash(&phc, &FAST));
        assert!(password_needs_rehash(&phc, &PasswordParams::default()));
        assert!(password_needs_rehash("not a hash", &FAST));
    }

    #[test]
    fn invalid_parameters_are_an_error() {
        let bad = PasswordParams {
            memory_kib: 1,
            iterations: 0,
            parallelism: 0,
        };
        assert!(matches!(
            hash_password_with("pw", &bad),
            Err(SecretsError::PasswordHash { .. })
        ));
    }

    #[test]
    fn the_password_never_appears_in_the_hash() {
        let phc = hash_password_with("hunter2hunter2", &FAST).unwrap();
        assert!(!phc.contains("hunter2"));
    }
}
