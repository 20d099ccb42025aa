//! The associated data of each kind of sealed value, in one place, so the service that seals a
//! value and the service that opens it (command-api and the notifier) cannot drift apart.

use crate::aad;

/// The AAD that binds an email verification code to its instance and user (their UUID bytes):
/// a sealed code copied to another user or instance does not decrypt.
pub fn email_code_aad(instance: &[u8; 16], user: &[u8; 16]) -> Vec<u8> {
    aad(&[b"email-code", instance, user])
}

/// The AAD that binds an instance's SMTP password to the instance (its UUID bytes).
pub fn smtp_password_aad(instance: &[u8; 16]) -> Vec<u8> {
    aad(&[b"smtp-password", instance])
}

/// The AAD that binds a stored data key to its instance, its purpose (`user` for a user's
/// personal data, `index` for an instance's blind index) and its subject (UUID bytes): a sealed key
/// copied to another subject does not open.
pub fn data_key_aad(instance: &[u8; 16], purpose: &str, subject: &[u8; 16]) -> Vec<u8> {
    aad(&[b"data-key", instance, purpose.as_bytes(), subject])
}

/// The AAD that binds a user's sealed personal data to its instance, user and the record that
/// holds it (an event id, or a snapshot's sequence): ciphertext moved to another event does not
/// open.
pub fn personal_data_aad(instance: &[u8; 16], subject: &[u8; 16], record: &[u8]) -> Vec<u8> {
    aad(&[b"personal-data", instance, subject, record])
}

/// The AAD that binds an actions target's signing secret to its instance and target (UUID bytes).
pub fn target_secret_aad(instance: &[u8; 16], target: &[u8; 16]) -> Vec<u8> {
    aad(&[b"target-secret", instance, target])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_owners_give_distinct_aad() {
        let (a, b) = ([1_u8; 16], [2_u8; 16]);
        assert_ne!(email_code_aad(&a, &b), email_code_aad(&b, &a));
        assert_ne!(smtp_password_aad(&a), smtp_password_aad(&b));
        assert_eq!(email_code_aad(&a, &b), aad(&[b"email-code".as_slice(), &a, &b]));
    }
}
