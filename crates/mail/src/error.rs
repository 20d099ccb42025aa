//! Errors of template validation and rendering. They name the part and line at fault and the
//! kind of failure; they never carry rendered output or context values (a code must not reach a
//! log line through an error message).

use thiserror::Error;

use crate::TemplatePart;

/// What is wrong with a template, a rendering or a URL template.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MailError {
    /// The template does not compile.
    #[error("{part} template has a syntax error{}: {detail}", line_suffix(*line))]
    TemplateSyntax {
        /// The part at fault.
        part: TemplatePart,
        /// 1-based line, if known.
        line: Option<usize>,
        /// What the parser expected, from minijinja.
        detail: String,
    },
    /// The template compiled but failed while rendering.
    #[error("{part} template failed to render{}: {reason}", line_suffix(*line))]
    TemplateRender {
        /// The part at fault.
        part: TemplatePart,
        /// 1-based line, if known.
        line: Option<usize>,
        /// The kind of failure (and minijinja's detail where it cannot contain context values).
        reason: String,
    },
    /// An HTML or text body does not show the verification code.
    #[error("{part} template must show the code: include {{{{ code }}}}")]
    MissingCode {
        /// The part at fault.
        part: TemplatePart,
    },
    /// The subject renders to nothing.
    #[error("subject template renders to an empty subject")]
    EmptySubject,
    /// A template source or its output is larger than allowed.
    #[error("{part} template or its output is larger than {max_bytes} bytes")]
    TooLarge {
        /// The part at fault.
        part: TemplatePart,
        /// The limit.
        max_bytes: usize,
    },
    /// A URL template for the verification link is invalid.
    #[error("invalid URL template: {reason}")]
    InvalidUrlTemplate {
        /// What is wrong.
        reason: String,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}
