//! A human user's profile, shaped after the SCIM 2.0 core and enterprise user schemas because both
//! SCIM and gRPC drive it. The profile is one value: a SCIM `PUT` replaces it, a `PATCH` or a gRPC
//! update changes some fields ([`ProfileChange`]), and the domain decides which fields actually
//! changed. Multi-valued attributes are normalised on the way in: at most one primary entry, and
//! the first entry becomes primary when none is marked.

use crate::aggregate::nullable;
use crate::{DisplayName, EmailAddress, LanguageTag, PhoneNumber};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most entries in one multi-valued attribute (emails, phone numbers, addresses).
pub const MAX_MULTI_VALUED: usize = 32;
/// The longest free-text attribute, in characters.
pub const MAX_TEXT: usize = 1024;
/// The largest serialised [`HumanProfile::extra`], in bytes.
pub const MAX_EXTRA_BYTES: usize = 64 * 1024;
/// The SCIM attributes Cairn stores in [`HumanProfile::extra`] without interpreting them.
pub const SCIM_EXTRA_ATTRIBUTES: &[&str] = &["ims", "photos", "roles", "entitlements", "x509Certificates"];

/// SCIM `name`: every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PersonName {
    /// JSON `formatted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    /// JSON `familyName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// JSON `givenName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// JSON `middleName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// JSON `honorificPrefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub honorific_prefix: Option<String>,
    /// JSON `honorificSuffix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub honorific_suffix: Option<String>,
}

/// One email address: JSON `{"value", "type"?, "primary", "verified"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// JSON `value`.
    pub value: EmailAddress,
    /// JSON `type` (`work`, `home`, ...).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// JSON `display`: a human-readable label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// JSON `primary`.
    #[serde(default)]
    pub primary: bool,
    /// JSON `verified`: set by a verification, or by a privileged caller or SCIM configuration.
    #[serde(default)]
    pub verified: bool,
}

/// One phone number: JSON `{"value", "type"?, "primary"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    /// JSON `value`.
    pub value: PhoneNumber,
    /// JSON `type`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// JSON `display`: a human-readable label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// JSON `primary`.
    #[serde(default)]
    pub primary: bool,
}

/// One postal address (SCIM `addresses`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Address {
    /// JSON `formatted`; may span lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    /// JSON `streetAddress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    /// JSON `locality`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// JSON `region`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// JSON `postalCode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// JSON `country`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// JSON `type`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// JSON `primary`.
    pub primary: bool,
}

/// The enterprise extension's `manager`: JSON `{"value"?, "displayName"?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Manager {
    /// JSON `value`: the manager's id as the IdP knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// JSON `displayName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The SCIM enterprise user extension (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Enterprise {
    /// JSON `employeeNumber`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    /// JSON `costCenter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    /// JSON `organization`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// JSON `division`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    /// JSON `department`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// JSON `manager`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<Manager>,
}

/// Everything about a human user except the userName, the password hash and the lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HumanProfile {
    /// JSON `name`.
    pub name: PersonName,
    /// JSON `displayName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    /// JSON `nickName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nick_name: Option<String>,
    /// JSON `profileUrl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_url: Option<String>,
    /// JSON `title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// JSON `userType`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    /// JSON `preferredLanguage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_language: Option<LanguageTag>,
    /// JSON `locale`; free text because IdPs send both `en-US` and `en_US`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// JSON `timezone`, e.g. `Europe/Zurich`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// JSON `emails`; after normalisation at most one is primary, and the first if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<Email>,
    /// JSON `phoneNumbers`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phone_numbers: Vec<Phone>,
    /// JSON `addresses`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    /// JSON `externalId`: the IdP's id for the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// JSON `enterprise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<Enterprise>,
    /// JSON `extra`: SCIM attributes stored but not interpreted (see [`SCIM_EXTRA_ATTRIBUTES`]).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// A change of some profile fields: `None` leaves a field as it is, `Some(None)` clears an
/// optional one, and a list or `name` is replaced as a whole. It is also the payload of
/// `user.human.profile.changed`, holding only the fields that changed (same JSON names as
/// [`HumanProfile`]; `null` means cleared).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)] // each field is the HumanProfile field of the same name
pub struct ProfileChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<PersonName>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub display_name: Option<Option<DisplayName>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub nick_name: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub profile_url: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub title: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub user_type: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub preferred_language: Option<Option<LanguageTag>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub locale: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub timezone: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emails: Option<Vec<Email>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_numbers: Option<Vec<Phone>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<Address>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub external_id: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub enterprise: Option<Option<Enterprise>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

/// Runs `$m!` with every profile field, so diff, apply and replace cannot forget one.
macro_rules! each_field {
    ($m:ident) => {
        $m!(
            name,
            display_name,
            nick_name,
            profile_url,
            title,
            user_type,
            preferred_language,
            locale,
            timezone,
            emails,
            phone_numbers,
            addresses,
            external_id,
            enterprise,
            extra
        )
    };
}

impl ProfileChange {
    /// A change that sets every field to `profile`'s (SCIM `PUT`).
    pub fn replace_with(profile: HumanProfile) -> Self {
        let mut change = Self::default();
        macro_rules! set {
            ($($f:ident),*) => { $( change.$f = Some(profile.$f); )* };
        }
        each_field!(set);
        change
    }

    /// True if the change touches no field.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Writes the change into `profile`.
    pub fn apply_to(self, profile: &mut HumanProfile) {
        macro_rules! apply {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { profile.$f = v; } )* };
        }
        each_field!(apply);
    }

    /// Keeps only the fields whose value differs from `profile`'s.
    pub fn without_unchanged(mut self, profile: &HumanProfile) -> Self {
        macro_rules! keep {
            ($($f:ident),*) => { $( self.$f = self.$f.filter(|v| v != &profile.$f); )* };
        }
        each_field!(keep);
        self
    }
}

impl HumanProfile {
    /// The primary email: the entry marked primary, else the first.
    pub fn primary_email(&self) -> Option<&Email> {
        self.emails
            .iter()
            .find(|e| e.primary)
            .or_else(|| self.emails.first())
    }

    /// The primary phone number: the entry marked primary, else the first.
    pub fn primary_phone(&self) -> Option<&Phone> {
        self.phone_numbers
            .iter()
            .find(|p| p.primary)
            .or_else(|| self.phone_numbers.first())
    }
}
