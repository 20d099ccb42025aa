//! The protocol logic of Cairn's SCIM 2.0 service provider (RFC 7643, RFC 7644), with no I/O:
//! no HTTP, no database, no async, no table names. The `scim-gateway` binary wires it to axum;
//! `cairn-readmodel` describes its tables with [`sql::SchemaColumnMap`]s and runs the SQL that
//! [`sql::to_sql`] builds.
//!
//! - [`error`]: [`ScimError`], the RFC 7644 §3.12 error with status and `scimType`.
//! - [`schema`]: the User, Enterprise User and Group schemas as static attribute definitions,
//!   attribute lookup, and the discovery documents (`/Schemas`, `/ResourceTypes`,
//!   `/ServiceProviderConfig`).
//! - [`filter`]: the bounded filter parser with a round-tripping printer, PATCH paths,
//!   attribute lists, and an in-memory evaluator.
//! - [`sql`]: filter → PostgreSQL `WHERE` fragment with bound parameters, through a
//!   caller-supplied [`sql::ColumnMap`].
//! - [`patch`]: the atomic PATCH engine over a resource's JSON, fluent in Entra ID and Okta.
//! - [`mod@project`]: `attributes` / `excludedAttributes` and the `returned` characteristic.

pub mod error;
pub mod filter;
mod json;
pub mod patch;
pub mod project;
pub mod schema;
pub mod sql;

pub use error::{ScimError, ScimType};
pub use filter::{AttrPath, AttrSelector, CompValue, CompareOp, Filter, PatchPath, parse_attribute_list};
pub use patch::{PatchOp, PatchOperation, apply_patch, parse_patch_request};
pub use project::project;
pub use schema::{ResourceType, find_attribute};
pub use sql::{
    Column, ColumnMap, FieldKind, JsonField, RelatedField, SchemaColumnMap, SqlFilter, SqlParam,
    sort_expression, to_sql,
};
