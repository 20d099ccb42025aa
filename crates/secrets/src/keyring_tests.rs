use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::*;

fn key() -> String {
    Keyring::generate_key_string().unwrap().to_string()
}

fn ring(config: &str) -> Keyring {
    Keyring::parse(config).unwrap()
}

const AAD: &[u8] = b"instance-1/user-1/email-code";

#[test]
fn round_trip_returns_the_plaintext() {
    let ring = ring(&format!("k1:{}", key()));
    let sealed = ring.encrypt(b"123456", AAD).unwrap();
    assert_eq!(sealed.key_id, "k1");
    assert_eq!(STANDARD.decode(&sealed.nonce).unwrap().len(), NONCE_LEN);
    assert_eq!(STANDARD.decode(&sealed.ciphertext).unwrap().len(), 6 + TAG_LEN);
    assert_eq!(ring.decrypt(&sealed, AAD).unwrap().as_slice(), b"123456");
    assert_eq!(
        ring.decrypt_string(&ring.encrypt_str("pässwörd", AAD).unwrap(), AAD)
            .unwrap()
            .as_str(),
        "pässwörd"
    );
}

#[test]
fn every_encryption_uses_a_fresh_nonce() {
    let ring = ring(&format!("k1:{}", key()));
    let a = ring.encrypt(b"same", AAD).unwrap();
    let b = ring.encrypt(b"same", AAD).unwrap();
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn sealed_serializes_to_the_event_payload_shape() {
    let sealed = Sealed {
        key_id: "k1".into(),
        nonce: "bm9uY2U=".into(),
        ciphertext: "Y3Q=".into(),
    };
    let json = serde_json::to_value(&sealed).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"keyId": "k1", "nonce": "bm9uY2U=", "ciphertext": "Y3Q="})
    );
    assert_eq!(serde_json::from_value::<Sealed>(json).unwrap(), sealed);
}

#[test]
fn rotation_encrypts_with_the_new_key_and_old_ciphertexts_still_decrypt() {
    let (k1, k2) = (key(), key());
    let old_ring = ring(&format!("k1:{k1}"));
    let old = old_ring.encrypt(b"old secret", AAD).unwrap();

    // New key first: it becomes active, k1 still decrypts.
    let rotated = ring(&format!("k2:{k2},k1:{k1}"));
    assert_eq!(rotated.active_key_id(), "k2");
    let new = rotated.encrypt(b"new secret", AAD).unwrap();
    assert_eq!(new.key_id, "k2");
    assert_eq!(rotated.decrypt(&old, AAD).unwrap().as_slice(), b"old secret");
    assert_eq!(rotated.decrypt(&new, AAD).unwrap().as_slice(), b"new secret");
    assert!(rotated.needs_reseal(&old));
    assert!(!rotated.needs_reseal(&new));
    let resealed = rotated.reseal(&old, AAD).unwrap();
    assert_eq!(resealed.key_id, "k2");
    assert_eq!(rotated.decrypt(&resealed, AAD).unwrap().as_slice(), b"old secret");

    // The old ring does not know k2.
    assert_eq!(
        old_ring.decrypt(&new, AAD).unwrap_err(),
        SecretsError::UnknownKeyId { key_id: "k2".into() }
    );
}

#[test]
fn an_explicit_active_key_encrypts() {
    let config = format!("k1:{},k2:{},active=k2", key(), key());
    let ring = ring(&config);
    assert_eq!(ring.active_key_id(), "k2");
    assert_eq!(ring.encrypt(b"x", AAD).unwrap().key_id, "k2");
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k1", "k2"]);
    let ring = ring.with_active("k1").unwrap();
    assert_eq!(ring.encrypt(b"x", AAD).unwrap().key_id, "k1");
    assert!(ring.contains("k2") && !ring.contains("k3"));
    assert_eq!(
        ring.with_active("k3").unwrap_err(),
        SecretsError::UnknownActiveKey { key_id: "k3".into() }
    );
}

#[test]
fn unknown_key_id_is_a_typed_error() {
    let ring = ring(&format!("k1:{}", key()));
    let mut sealed = ring.encrypt(b"x", AAD).unwrap();
    sealed.key_id = "gone".into();
    assert_eq!(
        ring.decrypt(&sealed, AAD).unwrap_err(),
        SecretsError::UnknownKeyId {
            key_id: "gone".into()
        }
    );
}

fn flip_byte(b64: &str, index: usize) -> String {
    let mut bytes = STANDARD.decode(b64).unwrap();
    bytes[index] ^= 0x01;
    STANDARD.encode(bytes)
}

#[test]
fn tampering_with_ciphertext_nonce_or_aad_is_detected() {
    let ring = ring(&format!("k1:{}", key()));
    let sealed = ring.encrypt(b"123456", AAD).unwrap();
    let ct_len = STANDARD.decode(&sealed.ciphertext).unwrap().len();

    for i in 0..ct_len {
        let tampered = Sealed {
            ciphertext: flip_byte(&sealed.ciphertext, i),
            ..sealed.clone()
        };
        assert_eq!(
            ring.decrypt(&tampered, AAD).unwrap_err(),
            SecretsError::DecryptionFailed,
            "ciphertext byte {i}"
        );
    }
    for i in 0..NONCE_LEN {
        let tampered = Sealed {
            nonce: flip_byte(&sealed.nonce, i),
            ..sealed.clone()
        };
        assert_eq!(
            ring.decrypt(&tampered, AAD).unwrap_err(),
            SecretsError::DecryptionFailed,
            "nonce byte {i}"
        );
    }
    let mut bad_aad = AAD.to_vec();
    bad_aad[0] ^= 0x01;
    assert_eq!(
        ring.decrypt(&sealed, &bad_aad).unwrap_err(),
        SecretsError::DecryptionFailed
    );
    // Truncated ciphertext.
    let truncated = Sealed {
        ciphertext: STANDARD.encode(&STANDARD.decode(&sealed.ciphertext).unwrap()[..ct_len - 1]),
        ..sealed.clone()
    };
    assert_eq!(
        ring.decrypt(&truncated, AAD).unwrap_err(),
        SecretsError::DecryptionFailed
    );
}

#[test]
fn a_code_sealed_for_one_user_does_not_open_for_another() {
    let ring = ring(&format!("k1:{}", key()));
    let for_alice = aad(&[b"email-code", b"instance-1", b"alice"]);
    let for_bob = aad(&[b"email-code", b"instance-1", b"bob"]);
    let other_purpose = aad(&[b"smtp-password", b"instance-1", b"alice"]);
    let sealed = ring.encrypt(b"123456", &for_alice).unwrap();
    assert_eq!(
        ring.decrypt(&sealed, &for_bob).unwrap_err(),
        SecretsError::DecryptionFailed
    );
    assert_eq!(
        ring.decrypt(&sealed, &other_purpose).unwrap_err(),
        SecretsError::DecryptionFailed
    );
    assert_eq!(ring.decrypt(&sealed, &for_alice).unwrap().as_slice(), b"123456");
}

#[test]
fn aad_parts_are_unambiguous() {
    assert_ne!(aad(&[b"ab", b"c"]), aad(&[b"a", b"bc"]));
    assert_ne!(aad(&[b"abc"]), aad(&[b"abc", b""]));
    assert_eq!(aad(&[b"a", b"b"]), aad(&[b"a", b"b"]));
}

#[test]
fn malformed_sealed_fields_are_named() {
    let ring = ring(&format!("k1:{}", key()));
    let sealed = ring.encrypt(b"x", AAD).unwrap();
    let bad_nonce = Sealed {
        nonce: "not base64!".into(),
        ..sealed.clone()
    };
    assert_eq!(
        ring.decrypt(&bad_nonce, AAD).unwrap_err(),
        SecretsError::MalformedSealed { field: "nonce" }
    );
    let short_nonce = Sealed {
        nonce: STANDARD.encode([0u8; 8]),
        ..sealed.clone()
    };
    assert_eq!(
        ring.decrypt(&short_nonce, AAD).unwrap_err(),
        SecretsError::MalformedSealed { field: "nonce" }
    );
    let bad_ct = Sealed {
        ciphertext: "%%%".into(),
        ..sealed
    };
    assert_eq!(
        ring.decrypt(&bad_ct, AAD).unwrap_err(),
        SecretsError::MalformedSealed { field: "ciphertext" }
    );
}

#[test]
fn configuration_errors_name_the_problem_without_key_material() {
    let good = key();
    let short = STANDARD.encode([7u8; 16]);
    let cases: Vec<(String, SecretsError)> = vec![
        (String::new(), SecretsError::EmptyKeyring),
        ("  ".into(), SecretsError::EmptyKeyring),
        (good.clone(), SecretsError::MalformedKeyEntry { position: 1 }),
        (
            format!("k1:{good},{good}"),
            SecretsError::MalformedKeyEntry { position: 2 },
        ),
        (format!(":{good}"), SecretsError::InvalidKeyId { position: 1 }),
        (format!("k 1:{good}"), SecretsError::InvalidKeyId { position: 1 }),
        (
            format!("k1:{good},k1:{good}"),
            SecretsError::DuplicateKeyId { key_id: "k1".into() },
        ),
        (
            "k1:not*base64".into(),
            SecretsError::KeyNotBase64 { key_id: "k1".into() },
        ),
        (
            format!("k1:{short}"),
            SecretsError::WrongKeyLength {
                key_id: "k1".into(),
                len: 16,
            },
        ),
        (
            format!("k1:{good},active=k9"),
            SecretsError::UnknownActiveKey { key_id: "k9".into() },
        ),
        (
            format!("k1:{good},active=k1,active=k1"),
            SecretsError::MalformedKeyEntry { position: 3 },
        ),
        ("active=k1".into(), SecretsError::EmptyKeyring),
    ];
    for (config, expected) in cases {
        let err = Keyring::parse(&config).unwrap_err();
        assert_eq!(err, expected, "config {config:?}");
        let message = err.to_string();
        assert!(!message.contains(&good), "{message}");
        assert!(!message.contains(&short), "{message}");
    }
}

#[test]
fn keys_parse_with_whitespace_and_without_padding() {
    let k = key();
    let unpadded = k.trim_end_matches('=');
    let ring: Keyring = format!(" k1 : {unpadded} , k2:{k} ").parse().unwrap();
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k1", "k2"]);
}

#[test]
fn debug_shows_key_ids_but_no_key() {
    let k = key();
    let ring = ring(&format!("k1:{k}"));
    let debug = format!("{ring:?}");
    assert!(debug.contains("k1"), "{debug}");
    assert!(!debug.contains(&k), "{debug}");
    assert!(!debug.contains(k.trim_end_matches('=')), "{debug}");
}

#[test]
fn generated_keys_are_32_random_bytes() {
    let a = key();
    let b = key();
    assert_eq!(STANDARD.decode(&a).unwrap().len(), KEY_LEN);
    assert_ne!(a, b);
}

#[test]
fn keyring_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Keyring>();
}
