//! Translates a filter AST into a PostgreSQL `WHERE` fragment with bound parameters, so
//! filters are evaluated in the database rather than by loading rows.
//!
//! The caller describes its storage through [`ColumnMap`]; SQL text comes only from the map's
//! expressions and this module's fixed templates, and every filter literal becomes a numbered
//! parameter (`$n`) — no value is ever interpolated into the SQL text. Semantics match
//! [`crate::filter::matches`]: `caseExact` picks `=` or `lower(..) = lower(..)`; `co`/`sw`/`ew`
//! use `LIKE` with `%`, `_` and `\` escaped; a comparison on a multi-valued attribute holds when
//! some element satisfies it; `ne` and `not` are null-safe negations (an unassigned attribute is
//! "not equal"), while the positive forms stay index-friendly.

mod columns;

use chrono::{DateTime, Utc};

pub use columns::{
    Column, ColumnMap, FieldKind, JsonField, RelatedField, SchemaColumnMap, SqlFilter, SqlParam,
};

use crate::error::ScimError;
use crate::filter::{AttrPath, CompValue, CompareOp, Filter};

/// A typed SQL expression to compare against.
#[derive(Clone)]
struct Typed {
    expr: String,
    kind: FieldKind,
    case_exact: bool,
}

/// Where the elements of a multi-valued attribute live.
enum Source {
    /// A JSONB array expression; elements are aliased `e`.
    Json(String),
    /// Rows of a related table.
    Rows { from: String, on: String },
}

/// The elements of a multi-valued attribute and their filterable fields.
struct Elements {
    source: Source,
    fields: Vec<(String, Typed)>,
}

impl Elements {
    fn field(&self, name: &str) -> Option<Typed> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| t.clone())
    }
}

enum Leaf {
    Scalar(Typed),
    /// A field of the elements of a multi-valued attribute.
    Multi {
        source: Source,
        field: Typed,
    },
}

fn quote_key(name: &str) -> String {
    format!("'{}'", name.replace('\'', "''"))
}

fn field_expr(field: &JsonField) -> Typed {
    let raw = format!("e->>{}", quote_key(&field.name));
    let expr = match field.kind {
        FieldKind::Text => raw,
        FieldKind::Bool => format!("({raw})::boolean"),
        FieldKind::Timestamp => format!("({raw})::timestamptz"),
        FieldKind::Number => format!("({raw})::double precision"),
    };
    Typed {
        expr,
        kind: field.kind,
        case_exact: field.case_exact,
    }
}

fn unknown(attr: &AttrPath) -> ScimError {
    ScimError::invalid_filter(format!("unknown or unfilterable attribute '{attr}'"))
}

/// A scalar column as a typed expression, or a multi-valued one as its elements.
fn split(col: Column) -> Result<Typed, Elements> {
    let (expr, kind, case_exact) = match col {
        Column::Text { expr, case_exact } => (expr, FieldKind::Text, case_exact),
        Column::Bool { expr } => (expr, FieldKind::Bool, false),
        Column::Timestamp { expr } => (expr, FieldKind::Timestamp, false),
        Column::Number { expr } => (expr, FieldKind::Number, false),
        Column::MultiJson { column, subs } => {
            return Err(Elements {
                source: Source::Json(column),
                fields: subs.iter().map(|f| (f.name.clone(), field_expr(f))).collect(),
            });
        }
        Column::Related { from, on, subs } => {
            return Err(Elements {
                source: Source::Rows { from, on },
                fields: subs
                    .into_iter()
                    .map(|f| {
                        let t = Typed {
                            expr: f.expr,
                            kind: f.kind,
                            case_exact: f.case_exact,
                        };
                        (f.name, t)
                    })
                    .collect(),
            });
        }
    };
    Ok(Typed {
        expr,
        kind,
        case_exact,
    })
}

fn resolve_leaf(map: &dyn ColumnMap, attr: &AttrPath) -> Result<Leaf, ScimError> {
    let multi = |els: Elements, sub: &str| match els.field(sub) {
        Some(field) => Ok(Leaf::Multi {
            source: els.source,
            field,
        }),
        None => Err(unknown(attr)),
    };
    match map.column(attr).map(split) {
        Some(Ok(t)) => Ok(Leaf::Scalar(t)),
        Some(Err(els)) => multi(els, attr.sub.as_deref().unwrap_or("value")),
        None => match (&attr.sub, map.column(&attr.without_sub()).map(split)) {
            (Some(sub), Some(Err(els))) => multi(els, sub),
            _ => Err(unknown(attr)),
        },
    }
}

/// Translates `filter` into SQL, numbering parameters from `$first_placeholder`.
pub fn to_sql(
    filter: &Filter,
    map: &dyn ColumnMap,
    first_placeholder: usize,
) -> Result<SqlFilter, ScimError> {
    let mut t = Translator {
        map,
        next: first_placeholder,
        params: Vec::new(),
    };
    let sql = t.filter(filter, None)?;
    Ok(SqlFilter {
        sql,
        params: t.params,
    })
}

struct Translator<'m> {
    map: &'m dyn ColumnMap,
    next: usize,
    params: Vec<SqlParam>,
}

impl Translator<'_> {
    fn bind(&mut self, p: SqlParam) -> String {
        let n = self.next;
        self.next += 1;
        self.params.push(p);
        format!("${n}")
    }

    /// `scope` is `Some(elements)` inside a value path over a multi-valued attribute.
    fn filter(&mut self, f: &Filter, scope: Option<&Elements>) -> Result<String, ScimError> {
        match f {
            Filter::And(l, r) => Ok(format!(
                "({} AND {})",
                self.filter(l, scope)?,
                self.filter(r, scope)?
            )),
            Filter::Or(l, r) => Ok(format!(
                "({} OR {})",
                self.filter(l, scope)?,
                self.filter(r, scope)?
            )),
            Filter::Not(inner) => Ok(format!("NOT COALESCE({}, false)", self.filter(inner, scope)?)),
            Filter::ValuePath { attr, filter } => {
                if scope.is_some() {
                    return Err(ScimError::invalid_filter("value paths cannot be nested"));
                }
                self.value_path(attr, filter)
            }
            Filter::Present(attr) => match scope {
                Some(fields) => Ok(present(&element_field(fields, attr)?)),
                None => match resolve_leaf(self.map, attr)? {
                    Leaf::Scalar(t) => Ok(present(&t)),
                    Leaf::Multi { source, field } => Ok(exists(&source, &present(&field))),
                },
            },
            Filter::Compare { attr, op, value } => match scope {
                Some(fields) => self.compare(&element_field(fields, attr)?, *op, value, attr),
                None => match resolve_leaf(self.map, attr)? {
                    Leaf::Scalar(t) => self.compare(&t, *op, value, attr),
                    Leaf::Multi { source, field } => match (op, value) {
                        // Negations over arrays: no element equals.
                        (CompareOp::Ne, CompValue::Null) => {
                            Ok(exists(&source, &format!("{} IS NOT NULL", field.expr)))
                        }
                        (CompareOp::Eq, CompValue::Null) => Ok(format!(
                            "NOT {}",
                            exists(&source, &format!("{} IS NOT NULL", field.expr))
                        )),
                        (CompareOp::Ne, v) => {
                            let eq = self.compare(&field, CompareOp::Eq, v, attr)?;
                            Ok(format!("NOT {}", exists(&source, &eq)))
                        }
                        (op, v) => {
                            let pred = self.compare(&field, *op, v, attr)?;
                            Ok(exists(&source, &pred))
                        }
                    },
                },
            },
        }
    }

    fn value_path(&mut self, attr: &AttrPath, inner: &Filter) -> Result<String, ScimError> {
        if attr.sub.is_some() {
            return Err(ScimError::invalid_filter(format!(
                "a value path cannot follow a sub-attribute: '{attr}'"
            )));
        }
        match self.map.column(attr).map(split) {
            Some(Err(els)) => {
                let pred = self.filter(inner, Some(&els))?;
                Ok(exists(&els.source, &pred))
            }
            // A single-valued complex attribute: `name[givenName eq "x"]` is `name.givenName eq "x"`
            // (an unknown attribute is reported on the rewritten paths).
            _ => {
                let rewritten = qualify(inner, attr)?;
                self.filter(&rewritten, None)
            }
        }
    }

    fn compare(
        &mut self,
        t: &Typed,
        op: CompareOp,
        value: &CompValue,
        attr: &AttrPath,
    ) -> Result<String, ScimError> {
        let e = &t.expr;
        let unsupported = || {
            ScimError::invalid_filter(format!(
                "operator '{}' is not supported on attribute '{attr}' with value {value}",
                op.as_str()
            ))
        };
        if let CompValue::Null = value {
            return match op {
                CompareOp::Eq => Ok(format!("{e} IS NULL")),
                CompareOp::Ne => Ok(format!("{e} IS NOT NULL")),
                _ => Err(unsupported()),
            };
        }
        let sql_op = match op {
            CompareOp::Eq => "=",
            CompareOp::Ne => "<>",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => "LIKE",
        };
        let param = match (t.kind, value) {
            (FieldKind::Text, CompValue::String(s)) => {
                let text = match op {
                    CompareOp::Co => format!("%{}%", like_escape(s)),
                    CompareOp::Sw => format!("{}%", like_escape(s)),
                    CompareOp::Ew => format!("%{}", like_escape(s)),
                    _ => s.clone(),
                };
                SqlParam::Text(text)
            }
            (FieldKind::Bool, v) if matches!(op, CompareOp::Eq | CompareOp::Ne) => match v {
                CompValue::Bool(b) => SqlParam::Bool(*b),
                CompValue::String(s) if s.eq_ignore_ascii_case("true") => SqlParam::Bool(true),
                CompValue::String(s) if s.eq_ignore_ascii_case("false") => SqlParam::Bool(false),
                _ => return Err(unsupported()),
            },
            (FieldKind::Timestamp, CompValue::String(s)) if sql_op != "LIKE" => {
                let dt = DateTime::parse_from_rfc3339(s).map_err(|_| {
                    ScimError::invalid_filter(format!("'{s}' is not a dateTime for attribute '{attr}'"))
                })?;
                SqlParam::Timestamp(dt.with_timezone(&Utc))
            }
            (FieldKind::Number, CompValue::Number(n)) if sql_op != "LIKE" => {
                SqlParam::Number(n.as_f64().ok_or_else(unsupported)?)
            }
            _ => return Err(unsupported()),
        };
        let p = self.bind(param);
        let folded = t.kind == FieldKind::Text && !t.case_exact;
        let (lhs, rhs) = if folded {
            (format!("lower({e})"), format!("lower({p})"))
        } else {
            (e.clone(), p)
        };
        Ok(match op {
            CompareOp::Ne => format!("({e} IS NULL OR {lhs} <> {rhs})"),
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => format!("{lhs} LIKE {rhs} ESCAPE '\\'"),
            _ => format!("{lhs} {sql_op} {rhs}"),
        })
    }
}

fn element_field(els: &Elements, attr: &AttrPath) -> Result<Typed, ScimError> {
    if attr.urn.is_some() || attr.sub.is_some() {
        return Err(unknown(attr));
    }
    els.field(&attr.name).ok_or_else(|| unknown(attr))
}

fn present(t: &Typed) -> String {
    if t.kind == FieldKind::Text {
        format!("({0} IS NOT NULL AND {0} <> '')", t.expr)
    } else {
        format!("{} IS NOT NULL", t.expr)
    }
}

fn exists(source: &Source, pred: &str) -> String {
    match source {
        Source::Json(column) => {
            format!("EXISTS (SELECT 1 FROM jsonb_array_elements({column}) e WHERE {pred})")
        }
        Source::Rows { from, on } => format!("EXISTS (SELECT 1 FROM {from} WHERE {on} AND ({pred}))"),
    }
}

/// Escapes `\`, `%` and `_` for a `LIKE ... ESCAPE '\'` pattern.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Rewrites the attribute paths of a value filter over a single-valued complex attribute into
/// `parent.sub` paths.
fn qualify(f: &Filter, parent: &AttrPath) -> Result<Filter, ScimError> {
    let q = |a: &AttrPath| -> Result<AttrPath, ScimError> {
        if a.urn.is_some() || a.sub.is_some() {
            return Err(unknown(a));
        }
        Ok(AttrPath {
            urn: parent.urn.clone(),
            name: parent.name.clone(),
            sub: Some(a.name.clone()),
        })
    };
    Ok(match f {
        Filter::Compare { attr, op, value } => Filter::Compare {
            attr: q(attr)?,
            op: *op,
            value: value.clone(),
        },
        Filter::Present(a) => Filter::Present(q(a)?),
        Filter::Not(x) => Filter::Not(Box::new(qualify(x, parent)?)),
        Filter::And(l, r) => Filter::And(Box::new(qualify(l, parent)?), Box::new(qualify(r, parent)?)),
        Filter::Or(l, r) => Filter::Or(Box::new(qualify(l, parent)?), Box::new(qualify(r, parent)?)),
        Filter::ValuePath { .. } => {
            return Err(ScimError::invalid_filter("value paths cannot be nested"));
        }
    })
}

/// The `ORDER BY` expression for `sortBy` (RFC 7644 §3.4.2.3), or `None` when the attribute
/// cannot be sorted on. Case-insensitive text sorts by `lower(expr)`. A multi-valued attribute
/// in JSONB sorts by its primary element's value, else its first element's; one in related rows
/// sorts by its least value.
pub fn sort_expression(map: &dyn ColumnMap, attr: &AttrPath) -> Option<String> {
    let fold = |t: &Typed| {
        if t.kind == FieldKind::Text && !t.case_exact {
            format!("lower({})", t.expr)
        } else {
            t.expr.clone()
        }
    };
    match resolve_leaf(map, attr).ok()? {
        Leaf::Scalar(t) => Some(fold(&t)),
        Leaf::Multi {
            source: Source::Rows { from, on },
            field,
        } => Some(format!("(SELECT min({}) FROM {from} WHERE {on})", fold(&field))),
        Leaf::Multi {
            source: Source::Json(column),
            field,
        } => {
            let has_primary = match map.column(&attr.without_sub()).map(split) {
                Some(Err(els)) => els.field("primary").is_some(),
                _ => false,
            };
            let order = if has_primary {
                "COALESCE((e->>'primary')::boolean, false) DESC, i"
            } else {
                "i"
            };
            Some(format!(
                "(SELECT {} FROM jsonb_array_elements({column}) WITH ORDINALITY AS t(e, i) ORDER BY {order} LIMIT 1)",
                fold(&field)
            ))
        }
    }
}

#[cfg(test)]
mod tests;
