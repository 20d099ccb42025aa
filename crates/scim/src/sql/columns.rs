//! How the caller describes its storage to the translator: [`Column`], the [`ColumnMap`]
//! contract, the ready-made [`SchemaColumnMap`], and the translator's output types.

use chrono::{DateTime, Utc};

use crate::filter::AttrPath;
use crate::schema::{ResourceType, resolve};

/// The SQL type of a JSON sub-field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text (`e->>'name'`).
    Text,
    /// Boolean (`(e->>'name')::boolean`).
    Bool,
    /// Timestamp (`(e->>'name')::timestamptz`).
    Timestamp,
    /// Number (`(e->>'name')::double precision`).
    Number,
}

/// A sub-attribute stored inside the elements of a JSONB array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonField {
    /// The JSON key (the sub-attribute's canonical name, e.g. `value`, `primary`).
    pub name: String,
    /// How to compare it.
    pub kind: FieldKind,
    /// For text: whether comparisons are case-sensitive.
    pub case_exact: bool,
}

impl JsonField {
    /// A text field.
    pub fn text(name: &str, case_exact: bool) -> Self {
        Self {
            name: name.to_owned(),
            kind: FieldKind::Text,
            case_exact,
        }
    }
    /// A field of another kind.
    pub fn of(name: &str, kind: FieldKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            case_exact: false,
        }
    }
    /// The usual `value`, `display`, `type`, `primary` fields of a multi-valued attribute.
    pub fn standard_multi() -> Vec<JsonField> {
        vec![
            JsonField::text("value", false),
            JsonField::text("display", false),
            JsonField::text("type", false),
            JsonField::of("primary", FieldKind::Bool),
        ]
    }
}

/// How one attribute is stored. Expressions are trusted SQL written by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// A text expression; `case_exact: false` compares with `lower(expr) = lower($n)`.
    Text {
        /// SQL expression, e.g. `u.user_name`.
        expr: String,
        /// Whether comparisons are case-sensitive.
        case_exact: bool,
    },
    /// A boolean expression.
    Bool {
        /// SQL expression.
        expr: String,
    },
    /// A `timestamptz` expression.
    Timestamp {
        /// SQL expression.
        expr: String,
    },
    /// A numeric expression.
    Number {
        /// SQL expression.
        expr: String,
    },
    /// A multi-valued complex attribute stored as a JSONB array of objects (or SQL NULL).
    MultiJson {
        /// SQL expression of the JSONB array column.
        column: String,
        /// The filterable sub-attributes; a filter without sub-attribute means `value`.
        subs: Vec<JsonField>,
    },
    /// A multi-valued complex attribute stored as rows of another table (group members):
    /// an element matches through `EXISTS (SELECT 1 FROM {from} WHERE {on} AND (...))`.
    Related {
        /// The element rows, e.g. `memberships m` (a table and its alias, named by the caller).
        from: String,
        /// The correlation with the outer row, e.g.
        /// `m.instance_id = g.instance_id AND m.group_id = g.id`.
        on: String,
        /// The filterable sub-attributes; a filter without sub-attribute means `value`.
        subs: Vec<RelatedField>,
    },
}

/// A sub-attribute of a [`Column::Related`] element, as an expression over the element rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelatedField {
    /// The sub-attribute's name (e.g. `value`).
    pub name: String,
    /// The SQL expression, e.g. `m.user_id::text`.
    pub expr: String,
    /// How to compare it.
    pub kind: FieldKind,
    /// For text: whether comparisons are case-sensitive.
    pub case_exact: bool,
}

impl Column {
    /// `Column::Text`.
    pub fn text(expr: &str, case_exact: bool) -> Self {
        Column::Text {
            expr: expr.to_owned(),
            case_exact,
        }
    }
}

/// The caller's mapping from SCIM attributes to SQL.
///
/// Contract: `column` receives the path as the client wrote it (any case, maybe URN-qualified,
/// maybe with a sub-attribute) and returns how it is stored, or `None` if it is not filterable.
/// For `a.b`, the translator first asks for `a.b`; if that is `None` it asks for `a` and, if
/// that is multi-valued ([`Column::MultiJson`] or [`Column::Related`]), uses its field `b`. A
/// multi-valued column returned for a path without sub-attribute stands for its `value` field.
/// For a value path `a[...]`, the translator asks for `a`: a multi-valued column yields
/// `EXISTS (...)` over its elements, with the filter's names resolved among its fields;
/// anything else (a single-valued complex attribute such as `name`) is handled by rewriting
/// `a[b op v]` to `a.b op v`. Expressions are trusted SQL and are pasted as given; they must
/// never be derived from request input. [`SchemaColumnMap`] implements the case-insensitive,
/// URN-aware matching for you.
pub trait ColumnMap {
    /// How `attr` is stored, or `None` when it cannot be filtered on.
    fn column(&self, attr: &AttrPath) -> Option<Column>;
}

/// A bound parameter of a [`SqlFilter`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    /// `text`
    Text(String),
    /// `boolean`
    Bool(bool),
    /// `timestamptz`
    Timestamp(DateTime<Utc>),
    /// `double precision`
    Number(f64),
}

/// A `WHERE` fragment and its parameters, numbered from the caller's start index.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    /// The SQL boolean expression.
    pub sql: String,
    /// Parameters for `$start`, `$start+1`, ... in order.
    pub params: Vec<SqlParam>,
}

/// A [`ColumnMap`] keyed by schema attributes: paths are resolved through the resource type's
/// schema, so `USERNAME`, `userName` and `urn:...:core:2.0:User:userName` find the same entry.
#[derive(Debug, Clone)]
pub struct SchemaColumnMap {
    rt: ResourceType,
    entries: Vec<(AttrPath, Column)>,
}

impl SchemaColumnMap {
    /// An empty map for `rt`.
    pub fn new(rt: ResourceType) -> Self {
        Self {
            rt,
            entries: Vec::new(),
        }
    }

    /// Adds `path` (e.g. `name.familyName`, `emails`,
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`).
    pub fn with(mut self, path: &str, column: Column) -> Self {
        if let Ok(p) = AttrPath::parse(path) {
            self.entries.push((self.canonical(&p), column));
        }
        self
    }

    fn canonical(&self, p: &AttrPath) -> AttrPath {
        resolve(self.rt, p).map_or_else(|| p.clone(), |r| r.canonical_path())
    }
}

impl ColumnMap for SchemaColumnMap {
    fn column(&self, attr: &AttrPath) -> Option<Column> {
        let key = self.canonical(attr);
        self.entries
            .iter()
            .find(|(p, _)| p.eq_ignore_case(&key))
            .map(|(_, c)| c.clone())
    }
}
