//! The template set: built-in defaults compiled once, overrides compiled per use, both rendered
//! in one minijinja environment with HTML autoescaping for `.html` templates, strict undefined
//! variables (printing a misspelt variable fails validation instead of printing nothing) and a fuel limit (a runaway
//! loop in an override fails instead of stalling the notifier).

use std::time::Duration;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::{
    DEFAULT_LANGUAGE, MailError, MessageKind, RenderedMessage, TemplateOverride, TemplatePart,
    VerificationContext, format_expiry, language_candidates, render_link,
};

/// Instructions one rendering may execute; the defaults need a few hundred.
const FUEL: u64 = 100_000;
/// Largest accepted override source per part.
const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Largest accepted rendered part.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// A language's default templates for one message kind.
struct Defaults {
    kind: MessageKind,
    language: &'static str,
    subject: &'static str,
    html: &'static str,
    text: &'static str,
}

const DEFAULTS: &[Defaults] = &[
    Defaults {
        kind: MessageKind::EmailVerification,
        language: "en",
        subject: include_str!("defaults/email_verification.en.subject.txt"),
        html: include_str!("defaults/email_verification.en.html"),
        text: include_str!("defaults/email_verification.en.txt"),
    },
    Defaults {
        kind: MessageKind::EmailVerification,
        language: "de",
        subject: include_str!("defaults/email_verification.de.subject.txt"),
        html: include_str!("defaults/email_verification.de.html"),
        text: include_str!("defaults/email_verification.de.txt"),
    },
];

const PARTS: [TemplatePart; 3] = [TemplatePart::Subject, TemplatePart::Html, TemplatePart::Text];

/// The variables templates see (documented on [`VerificationContext`]).
#[derive(Serialize)]
struct Vars<'a> {
    name: &'a str,
    display_name: Option<&'a str>,
    user_name: &'a str,
    user_id: &'a str,
    org_id: &'a str,
    organisation: &'a str,
    org_name: Option<&'a str>,
    instance_name: &'a str,
    code: &'a str,
    link: Option<&'a str>,
    expiry: &'a str,
    language: &'a str,
}

/// The three rendered parts.
struct Parts {
    subject: String,
    html: String,
    text: String,
}

/// The message templates: defaults for every supported language, and the rules for overrides.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field(
                "languages",
                &DEFAULTS.iter().map(|d| d.language).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Compiles the built-in templates. Fails only if a built-in template is broken, which the
    /// tests rule out; call it once at start-up.
    pub fn new() -> Result<Self, MailError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(FUEL));
        for defaults in DEFAULTS {
            for part in PARTS {
                env.add_template(
                    default_name(defaults.kind, defaults.language, part),
                    defaults.source(part),
                )
                .map_err(|e| render_error(part, &e))?;
            }
        }
        Ok(Templates { env })
    }

    /// The languages that have built-in templates for `kind`.
    pub fn languages(kind: MessageKind) -> impl Iterator<Item = &'static str> {
        DEFAULTS
            .iter()
            .filter(move |d| d.kind == kind)
            .map(|d| d.language)
    }

    /// The built-in source of one template, for example to show an administrator what an
    /// override replaces.
    pub fn default_source(kind: MessageKind, language: &str, part: TemplatePart) -> Option<&'static str> {
        find_defaults(kind, language).map(|d| d.source(part))
    }

    /// Renders a message for `ctx` in the user's `language` (a BCP 47 tag such as `de-CH`: exact
    /// tag, then primary subtag, then English), using `overrides` where given (looked up by the
    /// caller in the order of [`crate::language_candidates`]).
    ///
    /// An override that fails to render, renders an empty subject or a body without the code is
    /// not used: the defaults are, and `override_error` says why. An invalid URL template leaves
    /// the link out and sets `link_error`. An error is returned only if a default fails.
    pub fn render(
        &self,
        kind: MessageKind,
        language: Option<&str>,
        overrides: Option<&TemplateOverride>,
        ctx: &VerificationContext,
    ) -> Result<RenderedMessage, MailError> {
        let language = language_candidates(language)
            .into_iter()
            .find_map(|candidate| find_defaults(kind, &candidate).map(|d| d.language))
            .unwrap_or(DEFAULT_LANGUAGE);
        let (link, link_error) = match ctx.url_template.as_deref() {
            None => (None, None),
            Some(template) => match render_link(template, &ctx.user_id, &ctx.code, &ctx.org_id) {
                Ok(link) => (Some(link), None),
                Err(e) => (None, Some(e)),
            },
        };
        let expiry = format_expiry(ctx.expires_in, language);
        let vars = vars(ctx, link.as_deref(), &expiry, language);

        let mut override_error = None;
        if let Some(overrides) = overrides.filter(|o| PARTS.iter().any(|p| o.part(*p).is_some())) {
            match self.render_parts(kind, language, Some(overrides), &vars) {
                Ok(parts) => {
                    return Ok(message(parts, language, false, None, link_error));
                }
                Err(e) => override_error = Some(e),
            }
        }
        let parts = self.render_parts(kind, language, None, &vars)?;
        Ok(message(parts, language, true, override_error, link_error))
    }

    /// Checks an override before it is stored: every given part must compile and render with
    /// sample data (with and without a link and a display name), the subject must not be empty,
    /// and the HTML and text bodies must show the code. Parts left `None` are not checked.
    pub fn validate_override(
        &self,
        kind: MessageKind,
        overrides: &TemplateOverride,
    ) -> Result<(), MailError> {
        for part in PARTS {
            if overrides.part(part).is_some_and(|s| s.len() > MAX_TEMPLATE_BYTES) {
                return Err(MailError::TooLarge {
                    part,
                    max_bytes: MAX_TEMPLATE_BYTES,
                });
            }
        }
        for sample in samples() {
            for language in Templates::languages(kind) {
                let link = sample
                    .url_template
                    .as_deref()
                    .map(|t| render_link(t, &sample.user_id, &sample.code, &sample.org_id))
                    .transpose()?;
                let expiry = format_expiry(sample.expires_in, language);
                let vars = vars(&sample, link.as_deref(), &expiry, language);
                self.render_parts(kind, language, Some(overrides), &vars)?;
            }
        }
        Ok(())
    }

    /// Renders the three parts, each from the override where it has one, else the default;
    /// overridden parts are checked (code shown, subject not empty).
    fn render_parts(
        &self,
        kind: MessageKind,
        language: &str,
        overrides: Option<&TemplateOverride>,
        vars: &Vars<'_>,
    ) -> Result<Parts, MailError> {
        let mut rendered = PARTS.map(|_| String::new());
        for (slot, part) in rendered.iter_mut().zip(PARTS) {
            let source = overrides.and_then(|o| o.part(part));
            let output = match source {
                Some(source) => {
                    if source.len() > MAX_TEMPLATE_BYTES {
                        return Err(MailError::TooLarge {
                            part,
                            max_bytes: MAX_TEMPLATE_BYTES,
                        });
                    }
                    self.env
                        .render_named_str(override_name(part), source, vars)
                        .map_err(|e| render_error(part, &e))?
                }
                None => self
                    .env
                    .get_template(default_name(kind, language, part))
                    .and_then(|t| t.render(vars))
                    .map_err(|e| render_error(part, &e))?,
            };
            if output.len() > MAX_OUTPUT_BYTES {
                return Err(MailError::TooLarge {
                    part,
                    max_bytes: MAX_OUTPUT_BYTES,
                });
            }
            if source.is_some() {
                self.check_overridden(part, &output, vars.code)?;
            }
            *slot = output;
        }
        let [subject, html, text] = rendered;
        Ok(Parts {
            subject: fold_subject(&subject),
            html,
            text,
        })
    }

    fn check_overridden(&self, part: TemplatePart, output: &str, code: &str) -> Result<(), MailError> {
        match part {
            TemplatePart::Subject if fold_subject(output).is_empty() => Err(MailError::EmptySubject),
            TemplatePart::Subject => Ok(()),
            TemplatePart::Text if !output.contains(code) => Err(MailError::MissingCode { part }),
            TemplatePart::Html => {
                // The code as the HTML body shows it (escaped, for alphabets with `&` or `<`).
                let escaped = self
                    .env
                    .render_named_str("code.html", "{{ code }}", minijinja::context! { code })
                    .map_err(|e| render_error(part, &e))?;
                if output.contains(&escaped) {
                    Ok(())
                } else {
                    Err(MailError::MissingCode { part })
                }
            }
            TemplatePart::Text => Ok(()),
        }
    }
}

impl Defaults {
    fn source(&self, part: TemplatePart) -> &'static str {
        match part {
            TemplatePart::Subject => self.subject,
            TemplatePart::Html => self.html,
            TemplatePart::Text => self.text,
        }
    }
}

fn find_defaults(kind: MessageKind, language: &str) -> Option<&'static Defaults> {
    DEFAULTS.iter().find(|d| d.kind == kind && d.language == language)
}

/// Names decide autoescaping: minijinja escapes HTML for names ending in `.html`.
fn default_name(kind: MessageKind, language: &str, part: TemplatePart) -> &'static str {
    match (kind, language, part) {
        (MessageKind::EmailVerification, "de", TemplatePart::Subject) => "email_verification.de.subject.txt",
        (MessageKind::EmailVerification, "de", TemplatePart::Html) => "email_verification.de.html",
        (MessageKind::EmailVerification, "de", TemplatePart::Text) => "email_verification.de.txt",
        (MessageKind::EmailVerification, _, TemplatePart::Subject) => "email_verification.en.subject.txt",
        (MessageKind::EmailVerification, _, TemplatePart::Html) => "email_verification.en.html",
        (MessageKind::EmailVerification, _, TemplatePart::Text) => "email_verification.en.txt",
    }
}

fn override_name(part: TemplatePart) -> &'static str {
    match part {
        TemplatePart::Subject => "override.subject.txt",
        TemplatePart::Html => "override.html",
        TemplatePart::Text => "override.txt",
    }
}

fn vars<'a>(
    ctx: &'a VerificationContext,
    link: Option<&'a str>,
    expiry: &'a str,
    language: &'a str,
) -> Vars<'a> {
    let display_name = ctx
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let org_name = ctx.org_name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    Vars {
        name: display_name.unwrap_or(&ctx.user_name),
        display_name,
        user_name: &ctx.user_name,
        user_id: &ctx.user_id,
        org_id: &ctx.org_id,
        organisation: org_name.unwrap_or(&ctx.instance_name),
        org_name,
        instance_name: &ctx.instance_name,
        code: &ctx.code,
        link,
        expiry,
        language,
    }
}

fn message(
    parts: Parts,
    language: &str,
    used_default: bool,
    override_error: Option<MailError>,
    link_error: Option<MailError>,
) -> RenderedMessage {
    RenderedMessage {
        subject: parts.subject,
        html: parts.html,
        text: parts.text,
        language: language.to_owned(),
        used_default,
        override_error,
        link_error,
    }
}

/// One line: newlines and runs of whitespace become single spaces (no header injection).
fn fold_subject(subject: &str) -> String {
    subject.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Maps a minijinja error without carrying context values: the detail is kept only for kinds
/// whose detail describes the template, not the data.
fn render_error(part: TemplatePart, e: &minijinja::Error) -> MailError {
    let line = e.line();
    let detail = e.detail().unwrap_or_default().to_owned();
    match e.kind() {
        ErrorKind::SyntaxError => MailError::TemplateSyntax { part, line, detail },
        kind @ (ErrorKind::UndefinedError
        | ErrorKind::UnknownFilter
        | ErrorKind::UnknownTest
        | ErrorKind::UnknownFunction
        | ErrorKind::UnknownMethod
        | ErrorKind::TemplateNotFound
        | ErrorKind::OutOfFuel
        | ErrorKind::TooManyArguments
        | ErrorKind::MissingArgument) => MailError::TemplateRender {
            part,
            line,
            reason: if detail.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}: {detail}")
            },
        },
        kind => MailError::TemplateRender {
            part,
            line,
            reason: kind.to_string(),
        },
    }
}

/// Sample contexts for validation, with different codes so a template cannot pass by printing a
/// fixed string.
fn samples() -> [VerificationContext; 2] {
    [
        VerificationContext {
            user_id: "288930471826735105".into(),
            user_name: "alex@example.com".into(),
            display_name: Some("Alex Example".into()),
            org_id: "288930471826669569".into(),
            org_name: Some("Example Org".into()),
            instance_name: "Example Instance".into(),
            code: "428613".into(),
            url_template: Some(
                "https://accounts.example.com/verify?user={{userId}}&code={{code}}&org={{orgId}}".into(),
            ),
            expires_in: Duration::from_secs(24 * 3600),
        },
        VerificationContext {
            user_id: "288930471826735106".into(),
            user_name: "sam".into(),
            display_name: None,
            org_id: "288930471826669570".into(),
            org_name: None,
            instance_name: "Example Instance".into(),
            code: "Q7K2X9".into(),
            url_template: None,
            expires_in: Duration::from_secs(600),
        },
    ]
}

#[cfg(test)]
#[path = "templates_tests.rs"]
mod tests;
