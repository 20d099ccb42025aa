//! The attribute definitions themselves, transcribed from RFC 7643 §3.1, §4.1-4.3 and §8.7.

use super::AttrType::{Binary, Boolean, Complex, DateTime, Reference, String as Str};
use super::Mutability::{Immutable, ReadOnly, WriteOnly};
use super::{AttributeDef as A, Returned, Uniqueness};

/// The common attributes of every resource (RFC 7643 §3.1): `id`, `externalId`, `meta`.
pub const COMMON_ATTRIBUTES: &[A] = &[
    A::new(
        "id",
        Str,
        "Unique identifier for the SCIM resource as defined by the service provider.",
    )
    .case_exact()
    .mutability(ReadOnly)
    .returned(Returned::Always)
    .uniqueness(Uniqueness::Server),
    A::new(
        "externalId",
        Str,
        "An identifier for the resource as defined by the provisioning client.",
    )
    .case_exact(),
    A::new(
        "meta",
        Complex,
        "A complex attribute containing resource metadata.",
    )
    .mutability(ReadOnly)
    .subs(META_SUBS),
];

const META_SUBS: &[A] = &[
    A::new(
        "resourceType",
        Str,
        "The name of the resource type of the resource.",
    )
    .case_exact()
    .mutability(ReadOnly),
    A::new(
        "created",
        DateTime,
        "The DateTime that the resource was added to the service provider.",
    )
    .mutability(ReadOnly),
    A::new(
        "lastModified",
        DateTime,
        "The most recent DateTime that the details of this resource were updated.",
    )
    .mutability(ReadOnly),
    A::new("location", Reference, "The URI of the resource being returned.")
        .case_exact()
        .mutability(ReadOnly)
        .refs(&["uri"]),
    A::new(
        "version",
        Str,
        "The version of the resource being returned (its ETag).",
    )
    .case_exact()
    .mutability(ReadOnly),
];

const NAME_SUBS: &[A] = &[
    A::new(
        "formatted",
        Str,
        "The full name, including all middle names, titles, and suffixes as appropriate, formatted for display.",
    ),
    A::new(
        "familyName",
        Str,
        "The family name of the User, or last name in most Western languages.",
    ),
    A::new(
        "givenName",
        Str,
        "The given name of the User, or first name in most Western languages.",
    ),
    A::new("middleName", Str, "The middle name(s) of the User."),
    A::new(
        "honorificPrefix",
        Str,
        "The honorific prefix(es) of the User, or title in most Western languages.",
    ),
    A::new(
        "honorificSuffix",
        Str,
        "The honorific suffix(es) of the User, or suffix in most Western languages.",
    ),
];

/// Sub-attributes shared by the plain multi-valued attributes (value, display, type, primary).
const fn multi_subs(value_ty: super::AttrType, value_desc: &'static str) -> [A; 4] {
    [
        A::new("value", value_ty, value_desc),
        A::new(
            "display",
            Str,
            "A human-readable name, primarily used for display purposes.",
        )
        .mutability(super::Mutability::ReadWrite),
        A::new("type", Str, "A label indicating the attribute's function."),
        A::new(
            "primary",
            Boolean,
            "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
        ),
    ]
}

const fn with_types(mut subs: [A; 4], types: &'static [&'static str]) -> [A; 4] {
    subs[2] = subs[2].canonical(types);
    subs
}

const EMAIL_SUBS: &[A] = &with_types(
    multi_subs(Str, "Email addresses for the user."),
    &["work", "home", "other"],
);
const PHONE_SUBS: &[A] = &with_types(
    multi_subs(Str, "Phone number of the User."),
    &["work", "home", "mobile", "fax", "pager", "other"],
);
const IMS_SUBS: &[A] = &with_types(
    multi_subs(Str, "Instant messaging address for the User."),
    &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
);
const PHOTO_SUBS: &[A] = &[
    A::new("value", Reference, "URL of a photo of the User.").refs(&["external"]),
    A::new(
        "display",
        Str,
        "A human-readable name, primarily used for display purposes.",
    ),
    A::new("type", Str, "A label indicating the attribute's function.").canonical(&["photo", "thumbnail"]),
    A::new(
        "primary",
        Boolean,
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];
const ENTITLEMENT_SUBS: &[A] = &multi_subs(Str, "The value of an entitlement.");
const ROLE_SUBS: &[A] = &multi_subs(Str, "The value of a role.");
const X509_SUBS: &[A] = &multi_subs(Binary, "The value of an X.509 certificate.");

const ADDRESS_SUBS: &[A] = &[
    A::new(
        "formatted",
        Str,
        "The full mailing address, formatted for display or use with a mailing label.",
    ),
    A::new("streetAddress", Str, "The full street address component."),
    A::new("locality", Str, "The city or locality component."),
    A::new("region", Str, "The state or region component."),
    A::new("postalCode", Str, "The zip code or postal code component."),
    A::new("country", Str, "The country name component."),
    A::new("type", Str, "A label indicating the attribute's function.").canonical(&["work", "home", "other"]),
    A::new(
        "primary",
        Boolean,
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];

const USER_GROUP_SUBS: &[A] = &[
    A::new("value", Str, "The identifier of the User's group.").mutability(ReadOnly),
    A::new(
        "$ref",
        Reference,
        "The URI of the corresponding 'Group' resource to which the user belongs.",
    )
    .mutability(ReadOnly)
    .refs(&["User", "Group"]),
    A::new(
        "display",
        Str,
        "A human-readable name, primarily used for display purposes.",
    )
    .mutability(ReadOnly),
    A::new(
        "type",
        Str,
        "A label indicating the attribute's function, e.g., 'direct' or 'indirect'.",
    )
    .mutability(ReadOnly)
    .canonical(&["direct", "indirect"]),
];

/// The core User schema's attributes (RFC 7643 §4.1).
pub const USER_ATTRIBUTES: &[A] = &[
    A::new("userName", Str, "Unique identifier for the User, typically used by the user to directly authenticate to the service provider.")
        .required()
        .uniqueness(Uniqueness::Server),
    A::new("name", Complex, "The components of the user's real name.").subs(NAME_SUBS),
    A::new("displayName", Str, "The name of the User, suitable for display to end-users."),
    A::new("nickName", Str, "The casual way to address the user in real life."),
    A::new("profileUrl", Reference, "A fully qualified URL pointing to a page representing the User's online profile.").refs(&["external"]),
    A::new("title", Str, "The user's title, such as \"Vice President\"."),
    A::new("userType", Str, "Used to identify the relationship between the organization and the user."),
    A::new("preferredLanguage", Str, "Indicates the User's preferred written or spoken language."),
    A::new("locale", Str, "Used to indicate the User's default location for purposes of localizing items."),
    A::new("timezone", Str, "The User's time zone in the 'Olson' time zone database format."),
    A::new("active", Boolean, "A Boolean value indicating the User's administrative status."),
    A::new("password", Str, "The User's cleartext password, used to set or compare it; never returned.")
        .mutability(WriteOnly)
        .returned(Returned::Never),
    A::new("emails", Complex, "Email addresses for the user.").multi().subs(EMAIL_SUBS),
    A::new("phoneNumbers", Complex, "Phone numbers for the User.").multi().subs(PHONE_SUBS),
    A::new("ims", Complex, "Instant messaging addresses for the User.").multi().subs(IMS_SUBS),
    A::new("photos", Complex, "URLs of photos of the User.").multi().subs(PHOTO_SUBS),
    A::new("addresses", Complex, "A physical mailing address for this User.").multi().subs(ADDRESS_SUBS),
    A::new("groups", Complex, "A list of groups to which the user belongs, either through direct membership or nested groups.")
        .multi()
        .mutability(ReadOnly)
        .subs(USER_GROUP_SUBS),
    A::new("entitlements", Complex, "A list of entitlements for the User that represent a thing the User has.").multi().subs(ENTITLEMENT_SUBS),
    A::new("roles", Complex, "A list of roles for the User that collectively represent who the User is.").multi().subs(ROLE_SUBS),
    A::new("x509Certificates", Complex, "A list of certificates issued to the User.").multi().subs(X509_SUBS),
];

const MANAGER_SUBS: &[A] = &[
    A::new(
        "value",
        Str,
        "The id of the SCIM resource representing the User's manager.",
    ),
    A::new(
        "$ref",
        Reference,
        "The URI of the SCIM resource representing the User's manager.",
    )
    .refs(&["User"]),
    A::new("displayName", Str, "The displayName of the User's manager.").mutability(ReadOnly),
];

/// The Enterprise User extension's attributes (RFC 7643 §4.3).
pub const ENTERPRISE_USER_ATTRIBUTES: &[A] = &[
    A::new(
        "employeeNumber",
        Str,
        "Numeric or alphanumeric identifier assigned to a person, typically based on order of hire or association with an organization.",
    ),
    A::new("costCenter", Str, "Identifies the name of a cost center."),
    A::new("organization", Str, "Identifies the name of an organization."),
    A::new("division", Str, "Identifies the name of a division."),
    A::new("department", Str, "Identifies the name of a department."),
    A::new("manager", Complex, "The User's manager.").subs(MANAGER_SUBS),
];

const MEMBER_SUBS: &[A] = &[
    A::new("value", Str, "Identifier of the member of this Group.")
        .case_exact()
        .mutability(Immutable),
    A::new(
        "$ref",
        Reference,
        "The URI corresponding to a SCIM resource that is a member of this Group.",
    )
    .mutability(Immutable)
    .refs(&["User", "Group"]),
    A::new(
        "display",
        Str,
        "A human-readable name of the member, set by the service provider.",
    )
    .mutability(ReadOnly),
    A::new(
        "type",
        Str,
        "A label indicating the type of resource, e.g., 'User' or 'Group'.",
    )
    .mutability(Immutable)
    .canonical(&["User", "Group"]),
];

/// The core Group schema's attributes (RFC 7643 §4.2).
pub const GROUP_ATTRIBUTES: &[A] = &[
    A::new("displayName", Str, "A human-readable name for the Group.")
        .required()
        .uniqueness(Uniqueness::Server),
    A::new("members", Complex, "A list of members of the Group.")
        .multi()
        .subs(MEMBER_SUBS),
];
