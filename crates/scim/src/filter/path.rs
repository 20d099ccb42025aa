//! Attribute paths, PATCH paths (RFC 7644 §3.5.2 `PATH = attrPath / valuePath [subAttr]`) and
//! `attributes`/`excludedAttributes` lists (§3.4.2.5).

use std::fmt;

use super::parse::{Parser, Tok, check_len, lex, parse_attr_word};
use super::{AttrPath, Filter};
use crate::error::ScimError;
use crate::schema::KNOWN_SCHEMAS;

/// `ATTRNAME = ALPHA *(nameChar)`, `nameChar = "-" / "_" / DIGIT / ALPHA`; `$ref` is also
/// allowed (RFC 7643 uses it as a sub-attribute name).
fn valid_name(s: &str) -> bool {
    if s == "$ref" || s.eq_ignore_ascii_case("$ref") {
        return true;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The known schema URN equal to `text` (case-insensitive), if any.
fn known_schema(text: &str) -> Option<&'static str> {
    KNOWN_SCHEMAS
        .iter()
        .copied()
        .find(|s| s.eq_ignore_ascii_case(text))
}

pub(super) fn parse_attr_path(text: &str) -> Result<AttrPath, ScimError> {
    let invalid = || ScimError::invalid_filter(format!("invalid attribute path '{text}'"));
    let (urn, rest) = if text.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
        // ATTRNAME cannot contain ':', so the last colon ends the URN.
        let (urn, rest) = text.rsplit_once(':').ok_or_else(invalid)?;
        if urn.len() <= 4 {
            return Err(invalid());
        }
        (Some(urn.to_owned()), rest)
    } else {
        (None, text)
    };
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    if !valid_name(name) || sub.is_some_and(|s| !valid_name(s)) {
        return Err(invalid());
    }
    Ok(AttrPath {
        urn,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

/// A parsed PATCH `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchPath {
    /// A whole schema extension, e.g.
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`.
    Schema(String),
    /// `attrPath`, `attrPath[valFilter]` or `attrPath[valFilter].subAttr`.
    Attr {
        /// The attribute (with a sub-attribute only when there is no value filter).
        attr: AttrPath,
        /// The value selection filter, over sub-attributes of `attr`.
        value_filter: Option<Filter>,
        /// The sub-attribute after the value filter.
        sub_attr: Option<String>,
    },
}

impl PatchPath {
    /// Parses a PATCH path. Every error is `invalidPath`.
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        let err: fn(String) -> ScimError = |d| ScimError::invalid_path(format!("invalid path: {d}"));
        check_len(text, err)?;
        let trimmed = text.trim();
        if let Some(urn) = known_schema(trimmed) {
            return Ok(PatchPath::Schema(urn.to_owned()));
        }
        let toks = lex(text, err)?;
        let mut p = Parser::new(toks, text.len(), err);
        let attr = match p.next() {
            Some(Tok::Word(w)) => parse_attr_word(w, err)?,
            _ => return Err(err("expected an attribute path".into())),
        };
        let mut value_filter = None;
        let mut sub_attr = None;
        if p.peek() == Some(&Tok::LBrack) {
            if attr.sub.is_some() {
                return Err(p.fail("a value filter cannot follow a sub-attribute"));
            }
            p.next();
            value_filter = Some(p.parse_or(1, true)?);
            p.expect(Tok::RBrack, "expected ']'")?;
            if let Some(Tok::Word(w)) = p.peek() {
                let w = *w;
                match w.strip_prefix('.') {
                    Some(s) if valid_name(s) => {
                        sub_attr = Some(s.to_owned());
                        p.next();
                    }
                    _ => return Err(p.fail("expected '.subAttribute' after ']'")),
                }
            }
        }
        if !p.at_end() {
            return Err(p.fail("unexpected token"));
        }
        Ok(PatchPath::Attr {
            attr,
            value_filter,
            sub_attr,
        })
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchPath::Schema(urn) => f.write_str(urn),
            PatchPath::Attr {
                attr,
                value_filter,
                sub_attr,
            } => {
                write!(f, "{attr}")?;
                if let Some(vf) = value_filter {
                    write!(f, "[{vf}]")?;
                }
                if let Some(s) = sub_attr {
                    write!(f, ".{s}")?;
                }
                Ok(())
            }
        }
    }
}

/// One entry of an `attributes` or `excludedAttributes` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrSelector {
    /// A whole schema extension by URN.
    Schema(String),
    /// An attribute or sub-attribute.
    Attr(AttrPath),
}

/// Parses a comma-separated `attributes`/`excludedAttributes` value. Empty entries are skipped;
/// malformed ones are `invalidValue`.
pub fn parse_attribute_list(text: &str) -> Result<Vec<AttrSelector>, ScimError> {
    if text.len() > super::MAX_FILTER_LEN {
        return Err(ScimError::invalid_value("attribute list too long"));
    }
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match known_schema(s) {
            Some(urn) => Ok(AttrSelector::Schema(urn.to_owned())),
            None => parse_attr_path(s)
                .map(AttrSelector::Attr)
                .map_err(|_| ScimError::invalid_value(format!("invalid attribute name '{s}'"))),
        })
        .collect()
}
