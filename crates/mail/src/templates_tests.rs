use std::time::Duration;

use super::*;

fn templates() -> Templates {
    Templates::new().unwrap()
}

fn ctx() -> VerificationContext {
    VerificationContext {
        user_id: "u-1".into(),
        user_name: "jane@example.com".into(),
        display_name: Some("Jane Doe".into()),
        org_id: "o-1".into(),
        org_name: Some("ACME".into()),
        instance_name: "Cairn".into(),
        code: "482913".into(),
        url_template: None,
        expires_in: Duration::from_secs(24 * 3600),
    }
}

fn render(language: Option<&str>, ctx: &VerificationContext) -> RenderedMessage {
    templates()
        .render(MessageKind::EmailVerification, language, None, ctx)
        .unwrap()
}

#[test]
fn english_default_renders_subject_html_and_text() {
    let msg = render(Some("en"), &ctx());
    assert_eq!(msg.language, "en");
    assert!(msg.used_default && msg.override_error.is_none() && msg.link_error.is_none());
    assert_eq!(msg.subject, "ACME: verify your email address");
    assert!(msg.text.starts_with("Hello Jane Doe,"), "{}", msg.text);
    assert!(msg.text.contains("    482913\n"), "{}", msg.text);
    assert!(msg.text.contains("The code expires in 24 hours."), "{}", msg.text);
    assert!(!msg.text.contains("link"), "no link without a URL template");
    assert!(msg.html.contains("<html lang=\"en\">"));
    assert!(msg.html.contains("<p>Hello Jane Doe,</p>"), "{}", msg.html);
    assert!(msg.html.contains(">482913</p>"), "{}", msg.html);
    assert!(!msg.html.contains("<a href"));
}

#[test]
fn german_default_renders_in_german() {
    let msg = render(Some("de"), &ctx());
    assert_eq!(msg.language, "de");
    assert_eq!(msg.subject, "ACME: Bestätigen Sie Ihre E-Mail-Adresse");
    assert!(msg.text.starts_with("Hallo Jane Doe,"), "{}", msg.text);
    assert!(
        msg.text.contains("Der Code ist 24 Stunden gültig."),
        "{}",
        msg.text
    );
    assert!(msg.text.contains("482913"));
    assert!(msg.html.contains("<html lang=\"de\">"));
    assert!(msg.html.contains("Der Code ist 24 Stunden gültig."));
}

#[test]
fn language_falls_back_from_region_to_primary_to_english() {
    assert_eq!(render(Some("de-CH"), &ctx()).language, "de");
    assert_eq!(render(Some("de_AT"), &ctx()).language, "de");
    assert_eq!(render(Some("fr-FR"), &ctx()).language, "en");
    assert_eq!(render(Some("not a tag"), &ctx()).language, "en");
    assert_eq!(render(None, &ctx()).language, "en");
    assert_eq!(
        Templates::languages(MessageKind::EmailVerification).collect::<Vec<_>>(),
        ["en", "de"]
    );
}

#[test]
fn user_name_and_instance_name_stand_in_for_missing_names() {
    let mut c = ctx();
    c.display_name = Some("  ".into());
    c.org_name = None;
    let msg = render(Some("en"), &c);
    assert!(msg.text.starts_with("Hello jane@example.com,"), "{}", msg.text);
    assert_eq!(msg.subject, "Cairn: verify your email address");
}

#[test]
fn hostile_display_name_is_escaped_in_html_and_kept_verbatim_in_text() {
    let mut c = ctx();
    c.display_name = Some("<script>alert('x')</script> & \"Co\"".into());
    c.org_name = Some("<b>Evil</b> Org".into());
    let msg = render(Some("en"), &c);
    assert!(!msg.html.contains("<script>"), "{}", msg.html);
    assert!(!msg.html.contains("<b>Evil"), "{}", msg.html);
    assert!(msg.html.contains("&lt;script&gt;"), "{}", msg.html);
    assert!(msg.html.contains("&amp;"), "{}", msg.html);
    // Plain text is not HTML: the name appears as typed.
    assert!(msg.text.contains("<script>alert('x')</script> & \"Co\""));
    assert_eq!(msg.subject, "<b>Evil</b> Org: verify your email address");
}

#[test]
fn newlines_cannot_reach_the_subject() {
    let mut c = ctx();
    c.org_name = Some("ACME\r\nBcc: victim@example.com".into());
    let msg = render(Some("en"), &c);
    assert!(!msg.subject.contains('\n') && !msg.subject.contains('\r'));
    assert_eq!(
        msg.subject,
        "ACME Bcc: victim@example.com: verify your email address"
    );
}

#[test]
fn link_is_rendered_with_url_encoded_values() {
    let mut c = ctx();
    c.user_id = "u 1&x=<y>".into();
    c.code = "48 2\"13".into();
    c.url_template = Some("https://id.example.com/verify/{{userId}}?code={{code}}&org={{orgId}}".into());
    let msg = render(Some("en"), &c);
    let link = "https://id.example.com/verify/u%201%26x%3D%3Cy%3E?code=48%202%2213&org=o-1";
    assert!(msg.link_error.is_none());
    assert!(
        msg.text
            .contains(&format!("Or open this link to confirm it:\n{link}\n")),
        "{}",
        msg.text
    );
    // In HTML the link is autoescaped like any value (`&` and `/` become entities, which HTML
    // decodes in attributes); it cannot break out of the attribute.
    let html_link = link.replace('&', "&amp;").replace('/', "&#x2f;");
    assert!(
        msg.html.contains(&format!("<a href=\"{html_link}\"")),
        "{}",
        msg.html
    );
}

#[test]
fn an_invalid_url_template_leaves_the_link_out_but_still_delivers() {
    let mut c = ctx();
    c.url_template = Some("javascript:alert({{code}})".into());
    let msg = render(Some("en"), &c);
    assert!(matches!(
        msg.link_error,
        Some(MailError::InvalidUrlTemplate { .. })
    ));
    assert!(!msg.html.contains("javascript:"));
    assert!(!msg.html.contains("<a href"));
    assert!(msg.text.contains("482913"));
}

fn full_override() -> TemplateOverride {
    TemplateOverride {
        subject: Some("Your {{ organisation }} code".into()),
        html: Some("<p>Hi {{ name }}, code: <b>{{ code }}</b>{% if link %} <a href=\"{{ link }}\">go</a>{% endif %}</p>".into()),
        text: Some("Hi {{ name }}, your code is {{ code }} (valid {{ expiry }}).".into()),
    }
}

#[test]
fn a_valid_override_is_accepted_and_used() {
    let t = templates();
    let ov = full_override();
    t.validate_override(MessageKind::EmailVerification, &ov).unwrap();
    let mut c = ctx();
    c.display_name = Some("<i>Jane</i>".into());
    let msg = t
        .render(MessageKind::EmailVerification, Some("de-CH"), Some(&ov), &c)
        .unwrap();
    assert!(!msg.used_default && msg.override_error.is_none());
    assert_eq!(msg.subject, "Your ACME code");
    assert_eq!(
        msg.html,
        "<p>Hi &lt;i&gt;Jane&lt;&#x2f;i&gt;, code: <b>482913</b></p>"
    );
    assert_eq!(
        msg.text,
        "Hi <i>Jane</i>, your code is 482913 (valid 24 Stunden)."
    );
}

#[test]
fn a_partial_override_keeps_the_default_for_other_parts() {
    let t = templates();
    let ov = TemplateOverride {
        subject: Some("Code for {{ name }}".into()),
        ..TemplateOverride::default()
    };
    t.validate_override(MessageKind::EmailVerification, &ov).unwrap();
    let msg = t
        .render(MessageKind::EmailVerification, Some("en"), Some(&ov), &ctx())
        .unwrap();
    assert_eq!(msg.subject, "Code for Jane Doe");
    assert!(!msg.used_default);
    assert!(msg.text.starts_with("Hello Jane Doe,"));
    // An empty override means no override.
    let msg = t
        .render(
            MessageKind::EmailVerification,
            Some("en"),
            Some(&TemplateOverride::default()),
            &ctx(),
        )
        .unwrap();
    assert!(msg.used_default && msg.override_error.is_none());
}

#[test]
fn validation_rejects_syntax_errors() {
    let ov = TemplateOverride {
        html: Some("<p>{{ code }</p>{% if %}".into()),
        ..TemplateOverride::default()
    };
    let err = templates()
        .validate_override(MessageKind::EmailVerification, &ov)
        .unwrap_err();
    assert!(
        matches!(
            err,
            MailError::TemplateSyntax {
                part: TemplatePart::Html,
                line: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
    let unclosed = TemplateOverride {
        text: Some("{{ code }}\n{% for x in [1] %}".into()),
        ..TemplateOverride::default()
    };
    assert!(matches!(
        templates().validate_override(MessageKind::EmailVerification, &unclosed),
        Err(MailError::TemplateSyntax {
            part: TemplatePart::Text,
            ..
        })
    ));
}

#[test]
fn validation_rejects_bodies_without_the_code() {
    for ov in [
        TemplateOverride {
            html: Some("<p>Hello {{ name }}</p>".into()),
            ..TemplateOverride::default()
        },
        TemplateOverride {
            text: Some("Hello {{ name }}, your code is 428613".into()),
            ..TemplateOverride::default()
        },
        TemplateOverride {
            // Shows the code only when there is a display name.
            text: Some("{% if display_name %}{{ code }}{% endif %}".into()),
            ..TemplateOverride::default()
        },
    ] {
        let err = templates()
            .validate_override(MessageKind::EmailVerification, &ov)
            .unwrap_err();
        assert!(matches!(err, MailError::MissingCode { .. }), "{err:?}");
    }
}

#[test]
fn validation_rejects_unknown_variables_filters_empty_subjects_and_runaway_loops() {
    let t = templates();
    let cases = [
        TemplateOverride {
            text: Some("{{ code }} {{ usr_name }}".into()),
            ..TemplateOverride::default()
        },
        TemplateOverride {
            text: Some("{{ code | shout }}".into()),
            ..TemplateOverride::default()
        },
        TemplateOverride {
            text: Some(
                "{{ code }}{% for a in range(1000) %}{% for b in range(1000) %}.{% endfor %}{% endfor %}"
                    .into(),
            ),
            ..TemplateOverride::default()
        },
    ];
    for ov in cases {
        let err = t
            .validate_override(MessageKind::EmailVerification, &ov)
            .unwrap_err();
        assert!(
            matches!(
                err,
                MailError::TemplateRender {
                    part: TemplatePart::Text,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    let empty_subject = TemplateOverride {
        subject: Some("{{ '' }}\n".into()),
        ..TemplateOverride::default()
    };
    assert_eq!(
        t.validate_override(MessageKind::EmailVerification, &empty_subject),
        Err(MailError::EmptySubject)
    );
    let huge = TemplateOverride {
        text: Some(format!("{{{{ code }}}}{}", "x".repeat(MAX_TEMPLATE_BYTES))),
        ..TemplateOverride::default()
    };
    assert!(matches!(
        t.validate_override(MessageKind::EmailVerification, &huge),
        Err(MailError::TooLarge { .. })
    ));
}

#[test]
fn a_failing_override_falls_back_to_the_default_and_says_why() {
    let t = templates();
    // Stored before validation existed, say: renders without the code for users without a
    // display name, and fails outright on a filter that does not exist.
    let conditional = TemplateOverride {
        text: Some("{% if display_name %}{{ code }}{% endif %}".into()),
        ..TemplateOverride::default()
    };
    let mut c = ctx();
    c.display_name = None;
    let msg = t
        .render(MessageKind::EmailVerification, Some("de"), Some(&conditional), &c)
        .unwrap();
    assert!(msg.used_default);
    assert_eq!(
        msg.override_error,
        Some(MailError::MissingCode {
            part: TemplatePart::Text
        })
    );
    assert!(msg.text.starts_with("Hallo jane@example.com,"), "{}", msg.text);
    assert!(msg.text.contains("482913"));

    let broken = TemplateOverride {
        subject: Some("ok".into()),
        html: Some("{{ code | nope }}".into()),
        text: None,
    };
    let msg = t
        .render(MessageKind::EmailVerification, Some("en"), Some(&broken), &ctx())
        .unwrap();
    assert!(msg.used_default);
    assert_eq!(
        msg.subject, "ACME: verify your email address",
        "all parts fall back together"
    );
    assert!(matches!(
        msg.override_error,
        Some(MailError::TemplateRender {
            part: TemplatePart::Html,
            ..
        })
    ));
}

#[test]
fn errors_and_debug_output_never_contain_the_code() {
    let t = templates();
    let c = ctx();
    let broken = TemplateOverride {
        text: Some("{{ code }}{{ code + 1 }}{{ code | int }}".into()),
        ..TemplateOverride::default()
    };
    let msg = t
        .render(MessageKind::EmailVerification, Some("en"), Some(&broken), &c)
        .unwrap();
    let err = msg.override_error.clone().unwrap();
    assert!(!err.to_string().contains("482913"), "{err}");
    assert!(!format!("{err:?}").contains("482913"));
    assert!(!format!("{msg:?}").contains("482913"), "{msg:?}");
    assert!(!format!("{c:?}").contains("482913"), "{c:?}");
}

#[test]
fn codes_with_html_special_characters_still_validate_in_html_overrides() {
    let t = templates();
    let mut c = ctx();
    c.code = "A&B<C".into();
    let ov = full_override();
    let msg = t
        .render(MessageKind::EmailVerification, Some("en"), Some(&ov), &c)
        .unwrap();
    assert!(!msg.used_default, "{:?}", msg.override_error);
    assert!(msg.html.contains("<b>A&amp;B&lt;C</b>"), "{}", msg.html);
}

#[test]
fn default_sources_are_available() {
    let src = Templates::default_source(MessageKind::EmailVerification, "de", TemplatePart::Text).unwrap();
    assert!(src.contains("{{ code }}"));
    assert!(Templates::default_source(MessageKind::EmailVerification, "fr", TemplatePart::Text).is_none());
}

#[test]
fn overrides_serialize_in_camel_case() {
    let ov: TemplateOverride = serde_json::from_str(r#"{"subject": "s", "html": null}"#).unwrap();
    assert_eq!(ov.subject.as_deref(), Some("s"));
    assert!(ov.html.is_none() && ov.text.is_none());
}

#[test]
fn templates_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Templates>();
}
