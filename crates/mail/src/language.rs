//! Choosing a language from a user's preferred-language tag (BCP 47, such as `de-CH`): the exact
//! tag, then its primary subtag (`de`), then English.

/// The language every message has, and the last fallback.
pub const DEFAULT_LANGUAGE: &str = "en";

/// Longest tag considered (BCP 47 tags in practice stay far below).
const MAX_TAG_LEN: usize = 35;

/// The languages to try, in order, for a requested tag: the normalised tag (lower case, `_` read
/// as `-`), its primary subtag, then [`DEFAULT_LANGUAGE`], without repeats. A missing or
/// malformed tag gives only the default. Look overrides up in this order too.
pub fn language_candidates(requested: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(3);
    if let Some(tag) = requested.and_then(normalise) {
        if let Some((primary, _)) = tag.split_once('-') {
            let primary = primary.to_owned();
            out.push(tag);
            out.push(primary);
        } else {
            out.push(tag);
        }
    }
    out.push(DEFAULT_LANGUAGE.to_owned());
    let mut seen: Vec<String> = Vec::with_capacity(out.len());
    out.retain(|l| {
        let new = !seen.contains(l);
        seen.push(l.clone());
        new
    });
    out
}

fn normalise(tag: &str) -> Option<String> {
    let tag = tag.trim().replace('_', "-").to_ascii_lowercase();
    let well_formed = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .split('-')
            .all(|sub| !sub.is_empty() && sub.len() <= 8 && sub.bytes().all(|b| b.is_ascii_alphanumeric()))
        && tag
            .split('-')
            .next()
            .is_some_and(|primary| primary.bytes().all(|b| b.is_ascii_alphabetic()));
    well_formed.then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_primary_then_english() {
        assert_eq!(language_candidates(Some("de-CH")), ["de-ch", "de", "en"]);
        assert_eq!(language_candidates(Some("de_AT")), ["de-at", "de", "en"]);
        assert_eq!(language_candidates(Some("DE")), ["de", "en"]);
        assert_eq!(language_candidates(Some("en-GB")), ["en-gb", "en"]);
        assert_eq!(language_candidates(Some("en")), ["en"]);
        assert_eq!(
            language_candidates(Some("zh-Hant-TW")),
            ["zh-hant-tw", "zh", "en"]
        );
    }

    #[test]
    fn missing_or_malformed_tags_give_english() {
        for tag in [
            None,
            Some(""),
            Some("  "),
            Some("de--CH"),
            Some("../etc"),
            Some("1de"),
        ] {
            assert_eq!(language_candidates(tag), ["en"], "{tag:?}");
        }
    }
}
