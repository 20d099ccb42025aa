//! The inputs and outputs of rendering: what a message is about, which templates an instance
//! overrides, and the rendered result.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::MailError;

/// Which message to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum MessageKind {
    /// The email with a code (and optionally a link) that verifies an email address.
    EmailVerification,
}

impl MessageKind {
    /// A stable name, for template names and storage keys: `email_verification`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::EmailVerification => "email_verification",
        }
    }
}

/// One of the three templates of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TemplatePart {
    /// The subject line (plain text; newlines are folded into spaces).
    Subject,
    /// The HTML body (autoescaped).
    Html,
    /// The plain-text alternative.
    Text,
}

impl TemplatePart {
    /// `subject`, `html` or `text`.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplatePart::Subject => "subject",
            TemplatePart::Html => "html",
            TemplatePart::Text => "text",
        }
    }
}

impl fmt::Display for TemplatePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance's replacement templates for one message kind and language; a part left `None`
/// uses the default. Stored by the caller; check with [`crate::Templates::validate_override`]
/// before storing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateOverride {
    /// Subject template.
    pub subject: Option<String>,
    /// HTML body template.
    pub html: Option<String>,
    /// Plain-text body template.
    pub text: Option<String>,
}

impl TemplateOverride {
    /// The override's source for `part`, if it overrides it.
    pub fn part(&self, part: TemplatePart) -> Option<&str> {
        match part {
            TemplatePart::Subject => self.subject.as_deref(),
            TemplatePart::Html => self.html.as_deref(),
            TemplatePart::Text => self.text.as_deref(),
        }
    }
}

/// What a verification email is about. `Debug` hides the code.
///
/// Templates see these variables:
/// `name` (the display name, or the userName when there is none), `display_name`, `user_name`,
/// `user_id`, `org_id`, `organisation` (the organisation's name, or the instance's),
/// `org_name`, `instance_name`, `code`, `link` (the verification link, or none), `expiry`
/// (for example `24 hours` / `24 Stunden`) and `language`.
#[derive(Clone)]
pub struct VerificationContext {
    /// The user's id.
    pub user_id: String,
    /// The user's userName.
    pub user_name: String,
    /// The user's display name, if set.
    pub display_name: Option<String>,
    /// The user's organisation id.
    pub org_id: String,
    /// The organisation's name, if known.
    pub org_name: Option<String>,
    /// The instance's name.
    pub instance_name: String,
    /// The plaintext verification code.
    pub code: String,
    /// URL template for a verification link with `{{userId}}`, `{{code}}`, `{{orgId}}`
    /// placeholders; `None` for a code-only message.
    pub url_template: Option<String>,
    /// How long the code stays valid.
    pub expires_in: Duration,
}

impl fmt::Debug for VerificationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationContext")
            .field("user_id", &self.user_id)
            .field("user_name", &self.user_name)
            .field("display_name", &self.display_name)
            .field("org_id", &self.org_id)
            .field("org_name", &self.org_name)
            .field("instance_name", &self.instance_name)
            .field("code", &"[redacted]")
            .field("url_template", &self.url_template)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A rendered message, ready to send. `Debug` shows sizes and flags, not the bodies (they
/// contain the code).
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedMessage {
    /// The subject line, one line.
    pub subject: String,
    /// The HTML body.
    pub html: String,
    /// The plain-text alternative.
    pub text: String,
    /// The language of the default templates used (`en`, `de`); overrides are in the language
    /// they were looked up for.
    pub language: String,
    /// Whether every part came from the built-in defaults: no override was given, or it failed.
    pub used_default: bool,
    /// Why a given override was not used, if it failed; log this (it holds no code).
    pub override_error: Option<MailError>,
    /// Why the verification link was left out, if the URL template was invalid.
    pub link_error: Option<MailError>,
}

impl fmt::Debug for RenderedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedMessage")
            .field("subject_len", &self.subject.len())
            .field("html_len", &self.html.len())
            .field("text_len", &self.text.len())
            .field("language", &self.language)
            .field("used_default", &self.used_default)
            .field("override_error", &self.override_error)
            .field("link_error", &self.link_error)
            .finish()
    }
}
