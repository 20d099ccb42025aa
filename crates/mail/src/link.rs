//! The verification link: the instance's URL template with `{{userId}}`, `{{code}}` and
//! `{{orgId}}` replaced by percent-encoded values in one pass. No template engine is involved, so
//! a value can neither inject template syntax nor break out of its URL component.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::MailError;

/// Everything but RFC 3986 unreserved characters is encoded, so a value is safe in a path
/// segment and in a query value alike.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest URL template accepted.
const MAX_URL_TEMPLATE_LEN: usize = 2048;

/// Renders the link for a user from `url_template`, or explains why the template is invalid: it
/// must start with `https://` or `http://`, hold no whitespace, control characters or characters
/// a URL never holds (`"<>\^`{|}`) outside placeholders, and use no placeholder but
/// `{{userId}}`, `{{code}}` and `{{orgId}}` (spaces inside the braces allowed).
pub fn render_link(url_template: &str, user_id: &str, code: &str, org_id: &str) -> Result<String, MailError> {
    let invalid = |reason: &str| MailError::InvalidUrlTemplate {
        reason: reason.to_owned(),
    };
    if url_template.len() > MAX_URL_TEMPLATE_LEN {
        return Err(invalid("longer than 2048 bytes"));
    }
    let lower = url_template.get(..8).unwrap_or(url_template).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(invalid("must start with https:// or http://"));
    }
    let mut out = String::with_capacity(url_template.len() + code.len() + 64);
    let mut rest = url_template;
    while let Some(start) = rest.find("{{") {
        out.push_str(literal(rest.get(..start).unwrap_or_default())?);
        let after = rest.get(start + 2..).unwrap_or_default();
        let Some(end) = after.find("}}") else {
            return Err(invalid("a `{{` is not closed by `}}`"));
        };
        let value = match after.get(..end).unwrap_or_default().trim() {
            "userId" => user_id,
            "code" => code,
            "orgId" => org_id,
            _ => {
                return Err(invalid(
                    "unknown placeholder: use {{userId}}, {{code}} or {{orgId}}",
                ));
            }
        };
        out.extend(utf8_percent_encode(value, COMPONENT));
        rest = after.get(end + 2..).unwrap_or_default();
    }
    if rest.contains("}}") {
        return Err(invalid("a `}}` has no opening `{{`"));
    }
    out.push_str(literal(rest)?);
    Ok(out)
}

/// A literal stretch of the template: no whitespace, control characters or characters that
/// RFC 3986 never allows in a URL (`"<>\^`{|}`).
fn literal(part: &str) -> Result<&str, MailError> {
    if part
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"<>\\^`{|}".contains(c))
    {
        return Err(MailError::InvalidUrlTemplate {
            reason: "must not contain whitespace, control characters or any of \"<>\\^`{|}".to_owned(),
        });
    }
    Ok(part)
}

/// Checks a URL template when it is set, so an invalid one is refused instead of being left out
/// of every message later.
pub fn validate_url_template(url_template: &str) -> Result<(), MailError> {
    render_link(url_template, "user-id", "code", "org-id").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_with_encoded_values() {
        let link = render_link(
            "https://id.example.com/verify/{{userId}}?code={{ code }}&org={{orgId}}",
            "u 1/../x",
            "12&34=5",
            "org#1",
        )
        .unwrap();
        assert_eq!(
            link,
            "https://id.example.com/verify/u%201%2F..%2Fx?code=12%2634%3D5&org=org%231"
        );
    }

    #[test]
    fn values_that_look_like_placeholders_are_not_expanded() {
        let link = render_link("https://x.test/{{userId}}/{{code}}", "{{code}}", "123456", "o").unwrap();
        assert_eq!(link, "https://x.test/%7B%7Bcode%7D%7D/123456");
    }

    #[test]
    fn a_template_without_placeholders_is_returned_as_is() {
        assert_eq!(
            render_link("https://x.test/verify", "u", "c", "o").unwrap(),
            "https://x.test/verify"
        );
    }

    #[test]
    fn invalid_templates_are_rejected() {
        for template in [
            "javascript:alert(1)//{{code}}",
            "ftp://x.test/{{code}}",
            "/relative/{{code}}",
            "https://x.test/{{code}",
            "https://x.test/{{password}}",
            "https://x.test/}}",
            "https://x.test/a b",
            "https://x.test/\n",
            "https://x.test/\"onmouseover=\"x",
            "https://x.test/<script>",
            "https://x.test/{code}",
        ] {
            assert!(
                matches!(
                    validate_url_template(template),
                    Err(MailError::InvalidUrlTemplate { .. })
                ),
                "{template:?}"
            );
        }
        assert!(validate_url_template("HTTPS://X.test/{{code}}").is_ok());
        assert!(validate_url_template(&format!("https://x.test/{}", "a".repeat(2100))).is_err());
    }
}
