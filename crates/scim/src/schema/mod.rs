//! The SCIM schemas Cairn serves (RFC 7643 §4, §7, §8.7): the core User, the Enterprise User
//! extension and Group, as static attribute definitions. The filter, PATCH and projection engines
//! consult these for types, case-exactness, mutability and the `returned` characteristic; the
//! discovery endpoints render them as JSON.

mod defs;
mod discovery;

pub use defs::{COMMON_ATTRIBUTES, ENTERPRISE_USER_ATTRIBUTES, GROUP_ATTRIBUTES, USER_ATTRIBUTES};
pub use discovery::{
    AuthenticationScheme, BulkConfig, FilterConfig, ServiceProviderConfig, resource_type_json,
    resource_types_json, schema_json, schemas_json,
};

use crate::filter::AttrPath;

/// URN of the core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// URN of the Enterprise User extension.
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// URN of the core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Every schema URN this crate knows; used to split URN-qualified attribute paths.
pub const KNOWN_SCHEMAS: &[&str] = &[USER_SCHEMA, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA];

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// A Unicode string.
    String,
    /// `true` or `false`.
    Boolean,
    /// A real number.
    Decimal,
    /// A whole number.
    Integer,
    /// An `xsd:dateTime` string.
    DateTime,
    /// A URI reference string.
    Reference,
    /// An object of sub-attributes.
    Complex,
    /// Base64-encoded bytes.
    Binary,
}

/// When a client may change an attribute (RFC 7643 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set by the service provider only.
    ReadOnly,
    /// Freely writable.
    ReadWrite,
    /// Writable once (when unset), never changed after.
    Immutable,
    /// Writable, never returned.
    WriteOnly,
}

/// When an attribute appears in responses (RFC 7643 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Always returned, whatever `attributes`/`excludedAttributes` say.
    Always,
    /// Never returned.
    Never,
    /// Returned unless excluded or another list of attributes was asked for.
    Default,
    /// Returned only when named in `attributes`.
    Request,
}

/// How unique an attribute's value is (RFC 7643 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    /// No uniqueness.
    None,
    /// Unique within the service provider's tenant.
    Server,
    /// Globally unique.
    Global,
}

/// One attribute definition with RFC 7643 §7 characteristics. Built with `const` helpers so the
/// schemas are plain statics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeDef {
    /// The attribute's name in its canonical case.
    pub name: &'static str,
    /// The data type.
    pub ty: AttrType,
    /// Whether the value is a JSON array.
    pub multi_valued: bool,
    /// Whether a resource must carry it.
    pub required: bool,
    /// Whether string comparisons are case-sensitive.
    pub case_exact: bool,
    /// The mutability characteristic.
    pub mutability: Mutability,
    /// The returned characteristic.
    pub returned: Returned,
    /// The uniqueness characteristic.
    pub uniqueness: Uniqueness,
    /// Sub-attributes of a complex attribute.
    pub sub_attributes: &'static [AttributeDef],
    /// Suggested values (e.g. `work`, `home`).
    pub canonical_values: &'static [&'static str],
    /// For references: what they point at (`User`, `Group`, `external`, `uri`).
    pub reference_types: &'static [&'static str],
    /// A human-readable description.
    pub description: &'static str,
}

impl AttributeDef {
    /// A single-valued, optional, case-insensitive, readWrite, default-returned attribute.
    pub const fn new(name: &'static str, ty: AttrType, description: &'static str) -> Self {
        Self {
            name,
            ty,
            multi_valued: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            sub_attributes: &[],
            canonical_values: &[],
            reference_types: &[],
            description,
        }
    }
    /// Marks it multi-valued.
    pub const fn multi(self) -> Self {
        Self {
            multi_valued: true,
            ..self
        }
    }
    /// Marks it required.
    pub const fn required(self) -> Self {
        Self {
            required: true,
            ..self
        }
    }
    /// Marks it case-exact.
    pub const fn case_exact(self) -> Self {
        Self {
            case_exact: true,
            ..self
        }
    }
    /// Sets its mutability.
    pub const fn mutability(self, mutability: Mutability) -> Self {
        Self { mutability, ..self }
    }
    /// Sets its returned characteristic.
    pub const fn returned(self, returned: Returned) -> Self {
        Self { returned, ..self }
    }
    /// Sets its uniqueness.
    pub const fn uniqueness(self, uniqueness: Uniqueness) -> Self {
        Self { uniqueness, ..self }
    }
    /// Sets its sub-attributes.
    pub const fn subs(self, sub_attributes: &'static [AttributeDef]) -> Self {
        Self {
            sub_attributes,
            ..self
        }
    }
    /// Sets its canonical values.
    pub const fn canonical(self, canonical_values: &'static [&'static str]) -> Self {
        Self {
            canonical_values,
            ..self
        }
    }
    /// Sets its reference types.
    pub const fn refs(self, reference_types: &'static [&'static str]) -> Self {
        Self {
            reference_types,
            ..self
        }
    }

    /// The sub-attribute called `name`, compared case-insensitively.
    pub fn sub(&self, name: &str) -> Option<&'static AttributeDef> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// A schema: its URN, name, description and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The schema URN.
    pub id: &'static str,
    /// Its short name.
    pub name: &'static str,
    /// A description.
    pub description: &'static str,
    /// Its top-level attributes.
    pub attributes: &'static [AttributeDef],
}

/// The core User schema.
pub const USER: Schema = Schema {
    id: USER_SCHEMA,
    name: "User",
    description: "User Account",
    attributes: USER_ATTRIBUTES,
};
/// The Enterprise User extension schema.
pub const ENTERPRISE_USER: Schema = Schema {
    id: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: ENTERPRISE_USER_ATTRIBUTES,
};
/// The core Group schema.
pub const GROUP: Schema = Schema {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "Group",
    attributes: GROUP_ATTRIBUTES,
};

/// Every schema served under `/Schemas`.
pub const ALL_SCHEMAS: &[Schema] = &[USER, ENTERPRISE_USER, GROUP];

/// The schema with URN `id` (case-insensitive).
pub fn schema_by_id(id: &str) -> Option<&'static Schema> {
    ALL_SCHEMAS.iter().find(|s| s.id.eq_ignore_ascii_case(id))
}

/// A SCIM resource type served by Cairn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// `/Users`.
    User,
    /// `/Groups`.
    Group,
}

impl ResourceType {
    /// The resource type's name (`User`, `Group`), also `meta.resourceType`.
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::User => "User",
            ResourceType::Group => "Group",
        }
    }
    /// The endpoint relative to the base URL.
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceType::User => "/Users",
            ResourceType::Group => "/Groups",
        }
    }
    /// The core schema.
    pub fn core_schema(self) -> &'static Schema {
        match self {
            ResourceType::User => &USER,
            ResourceType::Group => &GROUP,
        }
    }
    /// The schema extensions this resource type accepts.
    pub fn extensions(self) -> &'static [Schema] {
        match self {
            ResourceType::User => &[ENTERPRISE_USER],
            ResourceType::Group => &[],
        }
    }
    /// The extension with URN `urn` (case-insensitive).
    pub fn extension(self, urn: &str) -> Option<&'static Schema> {
        self.extensions().iter().find(|s| s.id.eq_ignore_ascii_case(urn))
    }
}

/// The result of resolving an attribute path against a resource type's schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedAttr {
    /// The URN of the schema holding the attribute; `None` for the common attributes
    /// (`id`, `externalId`, `meta`) and for the core schema.
    pub extension: Option<&'static str>,
    /// The top-level attribute.
    pub attr: &'static AttributeDef,
    /// The sub-attribute, when the path names one.
    pub sub: Option<&'static AttributeDef>,
}

impl ResolvedAttr {
    /// The most specific definition: the sub-attribute if named, else the attribute.
    pub fn leaf(&self) -> &'static AttributeDef {
        self.sub.unwrap_or(self.attr)
    }

    /// The path in canonical case, without the core URN (`name.givenName`,
    /// `urn:...:enterprise:2.0:User:manager.value`).
    pub fn canonical_path(&self) -> AttrPath {
        AttrPath {
            urn: self.extension.map(str::to_owned),
            name: self.attr.name.to_owned(),
            sub: self.sub.map(|s| s.name.to_owned()),
        }
    }
}

/// A top-level attribute of `rt` named `name` (case-insensitive) in the schema `urn` (or in the
/// core or common attributes when `urn` is `None`).
pub fn find_top_level(
    rt: ResourceType,
    urn: Option<&str>,
    name: &str,
) -> Option<(Option<&'static str>, &'static AttributeDef)> {
    let find = |attrs: &'static [AttributeDef]| attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name));
    match urn {
        None => find(COMMON_ATTRIBUTES)
            .or_else(|| find(rt.core_schema().attributes))
            .map(|a| (None, a)),
        Some(u) if u.eq_ignore_ascii_case(rt.core_schema().id) => find(COMMON_ATTRIBUTES)
            .or_else(|| find(rt.core_schema().attributes))
            .map(|a| (None, a)),
        Some(u) => {
            let ext = rt.extension(u)?;
            find(ext.attributes).map(|a| (Some(ext.id), a))
        }
    }
}

/// Resolves a parsed attribute path (case-insensitive, URN-qualified or not, with an optional
/// sub-attribute) to its definitions. `None` when the resource type has no such attribute.
pub fn resolve(rt: ResourceType, path: &AttrPath) -> Option<ResolvedAttr> {
    let (extension, attr) = find_top_level(rt, path.urn.as_deref(), &path.name)?;
    let sub = match &path.sub {
        None => None,
        Some(s) => Some(attr.sub(s)?),
    };
    Some(ResolvedAttr { extension, attr, sub })
}

/// Resolves an attribute path written as text: `userName`, `name.familyName`,
/// `urn:ietf:params:scim:schemas:core:2.0:User:userName`,
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
pub fn find_attribute(rt: ResourceType, path: &str) -> Option<ResolvedAttr> {
    let parsed = AttrPath::parse(path).ok()?;
    resolve(rt, &parsed)
}

#[cfg(test)]
mod tests;
