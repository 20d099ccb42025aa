//! SCIM filters (RFC 7644 §3.4.2.2), attribute paths, PATCH paths (§3.5.2) and
//! `attributes`/`excludedAttributes` lists (§3.4.2.5).
//!
//! [`Filter::parse`] turns text into an AST; `Display` prints the canonical form, and
//! `Filter::parse(&f.to_string()) == Ok(f)` holds for every AST (a property test proves it).
//! Parsing is bounded: more than [`MAX_FILTER_LEN`] characters or more than
//! [`MAX_FILTER_DEPTH`] nested groups, `not`s and value paths are refused with `invalidFilter`,
//! and recursion never goes deeper than that bound, so no input can overflow the stack.

mod eval;
mod parse;
mod path;

use std::fmt;

pub use eval::{matches, matches_element};
pub use path::{AttrSelector, PatchPath, parse_attribute_list};

use crate::error::ScimError;

/// The longest filter (in characters) the parser accepts.
pub const MAX_FILTER_LEN: usize = 4096;
/// The deepest nesting of parentheses, `not(...)` and value paths the parser accepts.
pub const MAX_FILTER_DEPTH: usize = 32;

/// An attribute path: `[URN ":"] name ["." sub]`, as written (case preserved). Compare
/// paths with [`AttrPath::eq_ignore_case`] or resolve them with [`crate::schema::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// The schema URN prefix, if the path was URN-qualified.
    pub urn: Option<String>,
    /// The attribute name.
    pub name: String,
    /// The sub-attribute name, if any.
    pub sub: Option<String>,
}

impl AttrPath {
    /// A path without URN and sub-attribute.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            urn: None,
            name: name.into(),
            sub: None,
        }
    }

    /// A path `name.sub`.
    pub fn with_sub(name: impl Into<String>, sub: impl Into<String>) -> Self {
        Self {
            urn: None,
            name: name.into(),
            sub: Some(sub.into()),
        }
    }

    /// Parses `[URN ":"] ATTRNAME ["." subAttr]`; errors are `invalidFilter`.
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        path::parse_attr_path(text)
    }

    /// The same path without its sub-attribute.
    pub fn without_sub(&self) -> Self {
        Self {
            urn: self.urn.clone(),
            name: self.name.clone(),
            sub: None,
        }
    }

    /// Case-insensitive equality of URN, name and sub-attribute (RFC 7643 §2.1).
    pub fn eq_ignore_case(&self, other: &AttrPath) -> bool {
        fn opt_eq(a: &Option<String>, b: &Option<String>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                _ => false,
            }
        }
        opt_eq(&self.urn, &other.urn)
            && self.name.eq_ignore_ascii_case(&other.name)
            && opt_eq(&self.sub, &other.sub)
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// equal
    Eq,
    /// not equal
    Ne,
    /// contains
    Co,
    /// starts with
    Sw,
    /// ends with
    Ew,
    /// greater than
    Gt,
    /// greater than or equal
    Ge,
    /// less than
    Lt,
    /// less than or equal
    Le,
}

impl CompareOp {
    /// The operator keyword in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// Parses an operator keyword, case-insensitively.
    pub fn from_keyword(word: &str) -> Option<Self> {
        const ALL: [CompareOp; 9] = [
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Co,
            CompareOp::Sw,
            CompareOp::Ew,
            CompareOp::Gt,
            CompareOp::Ge,
            CompareOp::Lt,
            CompareOp::Le,
        ];
        ALL.into_iter().find(|op| op.as_str().eq_ignore_ascii_case(word))
    }
}

/// A comparison value: a JSON literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompValue {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A JSON number.
    Number(serde_json::Number),
    /// A JSON string (also used for dateTime and reference values).
    String(String),
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Null => f.write_str("null"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Number(n) => write!(f, "{n}"),
            CompValue::String(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `attrPath op value`
    Compare {
        /// The attribute compared.
        attr: AttrPath,
        /// The operator.
        op: CompareOp,
        /// The literal.
        value: CompValue,
    },
    /// `attrPath pr`
    Present(AttrPath),
    /// `not (filter)`
    Not(Box<Filter>),
    /// `left and right`
    And(Box<Filter>, Box<Filter>),
    /// `left or right`
    Or(Box<Filter>, Box<Filter>),
    /// `attrPath[filter]`: some element of a multi-valued (or the complex) attribute matches
    /// `filter`, whose attribute paths name sub-attributes of `attr`.
    ValuePath {
        /// The multi-valued or complex attribute.
        attr: AttrPath,
        /// The filter over its sub-attributes.
        filter: Box<Filter>,
    },
}

impl Filter {
    /// Parses a filter expression (RFC 7644 §3.4.2.2). Every error is `invalidFilter`.
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        parse::parse_filter(text)
    }

    /// `self and other`.
    pub fn and(self, other: Filter) -> Filter {
        Filter::And(Box::new(self), Box::new(other))
    }

    /// `self or other`.
    pub fn or(self, other: Filter) -> Filter {
        Filter::Or(Box::new(self), Box::new(other))
    }

    /// `attr op value`.
    pub fn compare(attr: AttrPath, op: CompareOp, value: CompValue) -> Filter {
        Filter::Compare { attr, op, value }
    }

    fn precedence(&self) -> u8 {
        match self {
            Filter::Or(..) => 1,
            Filter::And(..) => 2,
            _ => 3,
        }
    }

    fn fmt_at(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        let wrap = self.precedence() < min;
        if wrap {
            f.write_str("(")?;
        }
        match self {
            Filter::Compare { attr, op, value } => write!(f, "{attr} {} {value}", op.as_str())?,
            Filter::Present(attr) => write!(f, "{attr} pr")?,
            Filter::Not(inner) => {
                f.write_str("not (")?;
                inner.fmt_at(f, 0)?;
                f.write_str(")")?;
            }
            // Left-associative: the left operand may be of the same precedence without parens.
            Filter::And(l, r) => {
                l.fmt_at(f, 2)?;
                f.write_str(" and ")?;
                r.fmt_at(f, 3)?;
            }
            Filter::Or(l, r) => {
                l.fmt_at(f, 1)?;
                f.write_str(" or ")?;
                r.fmt_at(f, 2)?;
            }
            Filter::ValuePath { attr, filter } => {
                write!(f, "{attr}[")?;
                filter.fmt_at(f, 0)?;
                f.write_str("]")?;
            }
        }
        if wrap {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_at(f, 0)
    }
}

impl std::str::FromStr for Filter {
    type Err = ScimError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::parse(s)
    }
}

#[cfg(test)]
mod tests;
