//! Rows of the read-model tables in the `projections` schema, with field names equal to column
//! names: projections write them with `jsonb_populate_record(set)` and queries read them with
//! `to_jsonb(row)`, so a column added to a table and to its struct is carried both ways.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `projections.users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRow {
    /// Tenant.
    pub instance_id: Uuid,
    /// The user's id (the aggregate id).
    pub id: Uuid,
    /// Owning organisation.
    pub org_id: Uuid,
    /// `human` or `machine`.
    pub kind: String,
    /// userName, as entered.
    pub user_name: String,
    /// `active`, `inactive` or `locked`.
    pub state: String,
    /// Display name (machine users: their name).
    pub display_name: Option<String>,
    /// name.givenName.
    pub given_name: Option<String>,
    /// name.familyName.
    pub family_name: Option<String>,
    /// name.formatted.
    pub formatted_name: Option<String>,
    /// nickName.
    pub nick_name: Option<String>,
    /// title.
    pub title: Option<String>,
    /// userType.
    pub user_type: Option<String>,
    /// preferredLanguage.
    pub preferred_language: Option<String>,
    /// locale.
    pub locale: Option<String>,
    /// timezone.
    pub timezone: Option<String>,
    /// externalId.
    pub external_id: Option<String>,
    /// The primary email address.
    pub primary_email: Option<String>,
    /// Whether the primary email address is verified.
    pub email_verified: bool,
    /// The primary phone number.
    pub primary_phone: Option<String>,
    /// Enterprise employeeNumber.
    pub employee_number: Option<String>,
    /// Enterprise costCenter.
    pub cost_center: Option<String>,
    /// Enterprise organization.
    pub organization: Option<String>,
    /// Enterprise division.
    pub division: Option<String>,
    /// Enterprise department.
    pub department: Option<String>,
    /// Enterprise manager.value.
    pub manager_id: Option<String>,
    /// Machine users' description.
    pub description: Option<String>,
    /// The whole human profile as JSON (`HumanProfile`); `{}` for machine users.
    pub profile: serde_json::Value,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub changed_at: DateTime<Utc>,
    /// The user aggregate's sequence: the resource version.
    pub sequence: i64,
}

/// `projections.groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    /// Tenant.
    pub instance_id: Uuid,
    /// The group's id.
    pub id: Uuid,
    /// Owning organisation.
    pub org_id: Uuid,
    /// displayName.
    pub display_name: String,
    /// externalId.
    pub external_id: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Number of members.
    pub member_count: i64,
    /// When the group was created.
    pub created_at: DateTime<Utc>,
    /// When the group last changed.
    pub changed_at: DateTime<Utc>,
    /// The group aggregate's sequence: the resource version.
    pub sequence: i64,
}

/// `projections.orgs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgRow {
    /// Tenant.
    pub instance_id: Uuid,
    /// The organisation's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// `active` or `inactive`.
    pub state: String,
    /// The primary domain.
    pub primary_domain: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub changed_at: DateTime<Utc>,
    /// The aggregate's sequence.
    pub sequence: i64,
}
