//! The lexer and recursive-descent parser behind [`Filter::parse`] and [`super::PatchPath`].
//!
//! Grammar (RFC 7644 §3.4.2.2, precedence `not` > `and` > `or`, both binary operators
//! left-associative):
//!
//! ```text
//! or     = and *("or" and)
//! and    = unary *("and" unary)
//! unary  = "(" or ")" / "not" "(" or ")" / attrPath "[" or "]" / attrPath "pr"
//!        / attrPath compareOp compValue
//! ```
//!
//! Keywords are case-insensitive; whitespace between tokens is free. Nesting (groups, `not`,
//! value paths) is bounded by [`MAX_FILTER_DEPTH`], which also bounds recursion.

use super::{AttrPath, CompValue, CompareOp, Filter, MAX_FILTER_DEPTH, MAX_FILTER_LEN};
use crate::error::ScimError;

/// A token with its character offset for error messages.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok<'a> {
    LParen,
    RParen,
    LBrack,
    RBrack,
    /// A run of characters that are not whitespace, brackets, parentheses or quotes.
    Word(&'a str),
    /// A decoded JSON string literal.
    Str(String),
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBrack => "'['".into(),
            Tok::RBrack => "']'".into(),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("string {}", serde_json::Value::String(s.clone())),
        }
    }
}

/// Splits `text` into tokens. `err` builds the error (invalidFilter or invalidPath).
pub(super) fn lex<'a>(
    text: &'a str,
    err: fn(String) -> ScimError,
) -> Result<Vec<(usize, Tok<'a>)>, ScimError> {
    let mut toks = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                toks.push((
                    i,
                    match c {
                        '(' => Tok::LParen,
                        ')' => Tok::RParen,
                        '[' => Tok::LBrack,
                        _ => Tok::RBrack,
                    },
                ));
            }
            '"' => {
                chars.next();
                let mut end = None;
                let mut escaped = false;
                for (j, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '"' {
                        end = Some(j);
                        break;
                    }
                }
                let end = end.ok_or_else(|| err(format!("unterminated string starting at {i}")))?;
                let raw = &text[i..=end];
                let s: String = serde_json::from_str(raw)
                    .map_err(|e| err(format!("invalid string literal at {i}: {e}")))?;
                toks.push((i, Tok::Str(s)));
            }
            _ => {
                let start = i;
                let mut end = text.len();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_whitespace() || matches!(d, '(' | ')' | '[' | ']' | '"') {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                toks.push((start, Tok::Word(&text[start..end])));
            }
        }
    }
    Ok(toks)
}

/// A cursor over tokens with the nesting bound.
pub(super) struct Parser<'a> {
    toks: Vec<(usize, Tok<'a>)>,
    pos: usize,
    end: usize,
    err: fn(String) -> ScimError,
}

impl<'a> Parser<'a> {
    pub(super) fn new(toks: Vec<(usize, Tok<'a>)>, end: usize, err: fn(String) -> ScimError) -> Self {
        Self {
            toks,
            pos: 0,
            end,
            err,
        }
    }

    pub(super) fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn peek2(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.pos + 1).map(|(_, t)| t)
    }

    pub(super) fn next(&mut self) -> Option<Tok<'a>> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    pub(super) fn fail(&self, what: &str) -> ScimError {
        let found = self
            .peek()
            .map_or_else(|| "end of input".to_owned(), Tok::describe);
        (self.err)(format!("{what} at position {}, found {found}", self.offset()))
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    pub(super) fn expect(&mut self, tok: Tok<'static>, what: &str) -> Result<(), ScimError> {
        if self.peek() == Some(&tok) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.fail(what))
        }
    }

    fn deeper(&self, depth: usize) -> Result<usize, ScimError> {
        if depth >= MAX_FILTER_DEPTH {
            Err((self.err)(format!(
                "filter nested deeper than {MAX_FILTER_DEPTH} levels"
            )))
        } else {
            Ok(depth + 1)
        }
    }

    /// `or` level. `in_value_path` forbids nested value paths.
    pub(super) fn parse_or(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, ScimError> {
        let mut left = self.parse_and(depth, in_value_path)?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.parse_and(depth, in_value_path)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, ScimError> {
        let mut left = self.parse_unary(depth, in_value_path)?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.parse_unary(depth, in_value_path)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, ScimError> {
        match self.peek() {
            Some(Tok::LParen) => {
                let d = self.deeper(depth)?;
                self.pos += 1;
                let inner = self.parse_or(d, in_value_path)?;
                self.expect(Tok::RParen, "expected ')'")?;
                Ok(inner)
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") && self.peek2() == Some(&Tok::LParen) => {
                let d = self.deeper(depth)?;
                self.pos += 2;
                let inner = self.parse_or(d, in_value_path)?;
                self.expect(Tok::RParen, "expected ')' closing not(")?;
                Ok(Filter::Not(Box::new(inner)))
            }
            Some(Tok::Word(w)) => {
                let w = *w;
                let attr = parse_attr_word(w, self.err)?;
                self.pos += 1;
                if self.peek() == Some(&Tok::LBrack) {
                    if in_value_path {
                        return Err(self.fail("value paths cannot be nested"));
                    }
                    if attr.sub.is_some() {
                        return Err(self.fail("a value path cannot follow a sub-attribute"));
                    }
                    let d = self.deeper(depth)?;
                    self.pos += 1;
                    let inner = self.parse_or(d, true)?;
                    self.expect(Tok::RBrack, "expected ']'")?;
                    if let Some(Tok::Word(w)) = self.peek()
                        && w.starts_with('.')
                    {
                        return Err(
                            self.fail("a sub-attribute after a value filter is only allowed in PATCH paths")
                        );
                    }
                    return Ok(Filter::ValuePath {
                        attr,
                        filter: Box::new(inner),
                    });
                }
                self.parse_operation(attr)
            }
            _ => Err(self.fail("expected an attribute path, '(' or 'not ('")),
        }
    }

    fn parse_operation(&mut self, attr: AttrPath) -> Result<Filter, ScimError> {
        let op_word = match self.peek() {
            Some(Tok::Word(w)) => *w,
            _ => return Err(self.fail("expected an operator after the attribute path")),
        };
        if op_word.eq_ignore_ascii_case("pr") {
            self.pos += 1;
            return Ok(Filter::Present(attr));
        }
        let Some(op) = CompareOp::from_keyword(op_word) else {
            return Err(self.fail("unknown operator (expected eq, ne, co, sw, ew, pr, gt, ge, lt or le)"));
        };
        self.pos += 1;
        let value = match self.peek() {
            Some(Tok::Str(s)) => CompValue::String(s.clone()),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => CompValue::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => CompValue::Bool(false),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => CompValue::Null,
            Some(Tok::Word(w)) if w.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                // serde_json checks the JSON number grammar; floats are re-read with the standard
                // library's correctly rounded parser so that printing and parsing round-trip.
                let n = serde_json::from_str::<serde_json::Number>(w).ok().and_then(|n| {
                    if n.is_f64() {
                        w.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
                    } else {
                        Some(n)
                    }
                });
                match n {
                    Some(n) => CompValue::Number(n),
                    None => return Err(self.fail("invalid number")),
                }
            }
            _ => {
                return Err(self.fail("expected a value (a quoted string, number, true, false or null)"));
            }
        };
        self.pos += 1;
        Ok(Filter::Compare { attr, op, value })
    }
}

/// Parses an attribute-path word, mapping errors through `err`.
pub(super) fn parse_attr_word(word: &str, err: fn(String) -> ScimError) -> Result<AttrPath, ScimError> {
    super::path::parse_attr_path(word).map_err(|e| err(e.detail))
}

/// Checks the length bound, in characters.
pub(super) fn check_len(text: &str, err: fn(String) -> ScimError) -> Result<(), ScimError> {
    if text.len() > MAX_FILTER_LEN && text.chars().count() > MAX_FILTER_LEN {
        return Err(err(format!("longer than {MAX_FILTER_LEN} characters")));
    }
    Ok(())
}

pub(super) fn parse_filter(text: &str) -> Result<Filter, ScimError> {
    let err: fn(String) -> ScimError = ScimError::invalid_filter;
    check_len(text, err)?;
    let toks = lex(text, err)?;
    if toks.is_empty() {
        return Err(err("empty filter".into()));
    }
    let mut p = Parser::new(toks, text.len(), err);
    let f = p.parse_or(0, false)?;
    if !p.at_end() {
        return Err(p.fail("unexpected token"));
    }
    Ok(f)
}
