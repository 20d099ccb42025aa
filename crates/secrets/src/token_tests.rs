use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

#[test]
fn issued_tokens_have_prefix_id_and_256_bit_secret() {
    let token = issue_token(PAT_PREFIX).unwrap();
    let plaintext = token.plaintext.as_str();
    assert!(plaintext.starts_with("cairn_pat_"), "{plaintext}");
    assert_eq!(
        plaintext.len(),
        PAT_PREFIX.len() + TOKEN_ID_LEN + 1 + TOKEN_SECRET_CHARS
    );
    let parts = parse_token(plaintext).unwrap();
    assert_eq!(parts.prefix, PAT_PREFIX);
    assert_eq!(parts.id, token.id);
    let secret = &plaintext[plaintext.len() - TOKEN_SECRET_CHARS..];
    assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), TOKEN_SECRET_BYTES);
    assert_eq!(token.hash.len(), 64);
    assert_eq!(token.hash, hash_token(plaintext));
}

#[test]
fn tokens_are_unique() {
    let a = issue_token(SCIM_PREFIX).unwrap();
    let b = issue_token(SCIM_PREFIX).unwrap();
    assert_ne!(a.plaintext, b.plaintext);
    assert_ne!(a.id, b.id);
    assert_ne!(a.hash, b.hash);
    assert!(a.plaintext.starts_with("cairn_scim_"));
}

#[test]
fn injected_rng_makes_tokens_reproducible() {
    let a = issue_token_with(PAT_PREFIX, &mut StdRng::seed_from_u64(1)).unwrap();
    let b = issue_token_with(PAT_PREFIX, &mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(a.plaintext, b.plaintext);
}

#[test]
fn hash_is_sha256_hex_of_the_whole_token() {
    // SHA-256("abc") from FIPS 180-2.
    assert_eq!(
        hash_token("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn verify_accepts_the_token_and_rejects_anything_else() {
    let token = issue_token(PAT_PREFIX).unwrap();
    assert!(verify_token(&token.plaintext, &token.hash));
    let mut altered = token.plaintext.to_string();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(!verify_token(&altered, &token.hash));
    assert!(!verify_token("", &token.hash));
    assert!(!verify_token(&token.plaintext, ""));
    assert!(!verify_token(&token.plaintext, &token.hash[..63]));
    let other = issue_token(PAT_PREFIX).unwrap();
    assert!(!verify_token(&other.plaintext, &token.hash));
}

#[test]
fn malformed_tokens_do_not_parse() {
    let token = issue_token(PAT_PREFIX).unwrap();
    let t = token.plaintext.as_str();
    assert!(parse_token(t).is_some());
    assert!(parse_token("").is_none());
    assert!(parse_token("cairn_pat_").is_none());
    assert!(
        parse_token(&t[PAT_PREFIX.len()..]).is_none(),
        "a prefix is required"
    );
    assert!(
        parse_token(&format!("cairn-{}", &t[6..])).is_none(),
        "prefix charset"
    );
    assert!(parse_token(&t[..t.len() - 1]).is_none());
    assert!(parse_token(&format!("{t}x")).is_none());
    assert!(parse_token(&t.replacen("cairn_pat_", "Cairn_pat_", 1)).is_none());
    assert!(parse_token(&format!("{}ü", &t[..t.len() - 2])).is_none());
    let bad_id = format!("{PAT_PREFIX}{}_{}", "g".repeat(24), "A".repeat(43));
    assert!(parse_token(&bad_id).is_none());
    let good = format!("{PAT_PREFIX}{}_{}", "a".repeat(24), "-_".repeat(21) + "A");
    assert_eq!(
        parse_token(&good),
        Some(TokenParts {
            prefix: PAT_PREFIX,
            id: &"a".repeat(24)
        })
    );
}

#[test]
fn invalid_prefixes_are_rejected() {
    for prefix in ["", "_", "cairn", "Cairn_", "cairn-pat_", &"a_".repeat(17)] {
        assert_eq!(
            issue_token(prefix).unwrap_err(),
            SecretsError::InvalidTokenPrefix,
            "{prefix:?}"
        );
    }
}

#[test]
fn debug_never_shows_the_plaintext() {
    let token = issue_token(PAT_PREFIX).unwrap();
    let debug = format!("{token:?}");
    assert!(!debug.contains(token.plaintext.as_str()), "{debug}");
    let secret = &token.plaintext[token.plaintext.len() - TOKEN_SECRET_CHARS..];
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("[redacted]"));
    assert!(debug.contains(&token.id));
}
