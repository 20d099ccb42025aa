//! The messages Cairn sends, as templates: built-in defaults in several languages and
//! per-instance overrides, rendered with minijinja into a subject, an HTML body and a plain-text
//! alternative. Pure: no network, no database; the notifier stores overrides and sends the result.
//!
//! Two rules keep delivery safe:
//! - user data never becomes template syntax: values reach templates only as context variables,
//!   HTML bodies are autoescaped, and the verification link is built by substituting URL-encoded
//!   values into the instance's URL template ([`render_link`]), not by a template engine;
//! - a broken override can never stop delivery: [`Templates::validate_override`] rejects it when it
//!   is set, and [`Templates::render`] falls back to the defaults (and says so) if it fails anyway.

mod context;
mod error;
mod expiry;
mod language;
mod link;
mod templates;

pub use context::{MessageKind, RenderedMessage, TemplateOverride, TemplatePart, VerificationContext};
pub use error::MailError;
pub use expiry::format_expiry;
pub use language::{DEFAULT_LANGUAGE, language_candidates};
pub use link::{render_link, validate_url_template};
pub use templates::Templates;
