//! Conversions between the wire types (`cairn_proto`) and the domain and read-model types. Input
//! is parsed here, at the edge, collecting every field violation with its path.

use crate::error::ApiError;
use cairn_domain::user::{Address, Email, Enterprise, HumanProfile, Manager, PersonName, Phone};
use cairn_domain::{
    AggregateId, DisplayName, EmailAddress, FieldViolation, LanguageTag, PhoneNumber, Position, StoredEvent,
    User, UserState,
};
use cairn_proto::common::v1 as common;
use cairn_proto::user::v1 as pb;
use cairn_readmodel::rows::UserRow;
use chrono::{DateTime, Utc};

/// Collects violations while parsing a request.
#[derive(Default)]
pub struct Parser {
    violations: Vec<FieldViolation>,
}

impl Parser {
    /// Records a violation.
    pub fn fail(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Parses with `f`, recording a failure at `field`.
    pub fn parse<T, E: std::fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.fail(field, error.to_string());
                None
            }
        }
    }

    /// An id field (UUID).
    pub fn id(&mut self, field: &str, value: &str) -> Option<AggregateId> {
        if value.is_empty() {
            self.fail(field, "is required");
            return None;
        }
        self.parse(field, value.parse::<AggregateId>())
    }

    /// Ok when nothing failed.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.violations))
        }
    }
}

/// An optional string: empty means absent.
pub fn opt(value: &str) -> Option<String> {
    (!value.trim().is_empty()).then(|| value.to_owned())
}

/// Parses a wire profile; `vouch` says whether the caller may mark emails verified.
pub fn profile_from_pb(p: &mut Parser, profile: Option<pb::HumanProfile>, vouch: bool) -> HumanProfile {
    let profile = profile.unwrap_or_default();
    let name = profile.name.unwrap_or_default();
    let mut emails = Vec::new();
    for (i, email) in profile.emails.into_iter().enumerate() {
        if let Some(value) = p.parse(
            &format!("profile.emails[{i}].value"),
            EmailAddress::parse(email.value),
        ) {
            emails.push(Email {
                value,
                kind: opt(&email.r#type),
                display: opt(&email.display),
                primary: email.primary,
                verified: vouch && email.verified,
            });
        }
    }
    let mut phone_numbers = Vec::new();
    for (i, phone) in profile.phone_numbers.into_iter().enumerate() {
        if let Some(value) = p.parse(
            &format!("profile.phone_numbers[{i}].value"),
            PhoneNumber::parse(phone.value),
        ) {
            phone_numbers.push(Phone {
                value,
                kind: opt(&phone.r#type),
                display: opt(&phone.display),
                primary: phone.primary,
            });
        }
    }
    let addresses = profile
        .addresses
        .into_iter()
        .map(|a| Address {
            formatted: opt(&a.formatted),
            street_address: opt(&a.street_address),
            locality: opt(&a.locality),
            region: opt(&a.region),
            postal_code: opt(&a.postal_code),
            country: opt(&a.country),
            kind: opt(&a.r#type),
            primary: a.primary,
        })
        .collect();
    let enterprise = profile.enterprise.map(|e| Enterprise {
        employee_number: opt(&e.employee_number),
        cost_center: opt(&e.cost_center),
        organization: opt(&e.organization),
        division: opt(&e.division),
        department: opt(&e.department),
        manager: e.manager.and_then(|m| {
            let manager = Manager {
                value: opt(&m.value),
                display_name: opt(&m.display_name),
            };
            (manager.value.is_some() || manager.display_name.is_some()).then_some(manager)
        }),
    });
    let extra = match opt(&profile.extra_json) {
        None => serde_json::Map::new(),
        Some(json) => match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                p.fail("profile.extra_json", "must be a JSON object");
                serde_json::Map::new()
            }
        },
    };
    HumanProfile {
        name: PersonName {
            formatted: opt(&name.formatted),
            family_name: opt(&name.family_name),
            given_name: opt(&name.given_name),
            middle_name: opt(&name.middle_name),
            honorific_prefix: opt(&name.honorific_prefix),
            honorific_suffix: opt(&name.honorific_suffix),
        },
        display_name: opt(&profile.display_name)
            .and_then(|d| p.parse("profile.display_name", DisplayName::parse(d))),
        nick_name: opt(&profile.nick_name),
        profile_url: opt(&profile.profile_url),
        title: opt(&profile.title),
        user_type: opt(&profile.user_type),
        preferred_language: opt(&profile.preferred_language)
            .and_then(|l| p.parse("profile.preferred_language", LanguageTag::parse(l))),
        locale: opt(&profile.locale),
        timezone: opt(&profile.timezone),
        emails,
        phone_numbers,
        addresses,
        external_id: opt(&profile.external_id),
        enterprise,
        extra,
    }
}

/// The wire form of a profile.
pub fn profile_to_pb(profile: &HumanProfile) -> pb::HumanProfile {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    pb::HumanProfile {
        name: Some(pb::Name {
            formatted: s(&profile.name.formatted),
            family_name: s(&profile.name.family_name),
            given_name: s(&profile.name.given_name),
            middle_name: s(&profile.name.middle_name),
            honorific_prefix: s(&profile.name.honorific_prefix),
            honorific_suffix: s(&profile.name.honorific_suffix),
        }),
        display_name: profile
            .display_name
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default(),
        nick_name: s(&profile.nick_name),
        profile_url: s(&profile.profile_url),
        title: s(&profile.title),
        user_type: s(&profile.user_type),
        preferred_language: profile
            .preferred_language
            .as_ref()
            .map(|l| l.to_string())
            .unwrap_or_default(),
        locale: s(&profile.locale),
        timezone: s(&profile.timezone),
        emails: profile
            .emails
            .iter()
            .map(|e| pb::Email {
                value: e.value.to_string(),
                display: s(&e.display),
                r#type: s(&e.kind),
                primary: e.primary,
                verified: e.verified,
            })
            .collect(),
        phone_numbers: profile
            .phone_numbers
            .iter()
            .map(|ph| pb::Phone {
                value: ph.value.to_string(),
                display: s(&ph.display),
                r#type: s(&ph.kind),
                primary: ph.primary,
            })
            .collect(),
        addresses: profile
            .addresses
            .iter()
            .map(|a| pb::Address {
                formatted: s(&a.formatted),
                street_address: s(&a.street_address),
                locality: s(&a.locality),
                region: s(&a.region),
                postal_code: s(&a.postal_code),
                country: s(&a.country),
                r#type: s(&a.kind),
                primary: a.primary,
            })
            .collect(),
        external_id: s(&profile.external_id),
        enterprise: profile.enterprise.as_ref().map(|e| pb::Enterprise {
            employee_number: s(&e.employee_number),
            cost_center: s(&e.cost_center),
            organization: s(&e.organization),
            division: s(&e.division),
            department: s(&e.department),
            manager: e.manager.as_ref().map(|m| pb::Manager {
                value: s(&m.value),
                display_name: s(&m.display_name),
            }),
        }),
        extra_json: if profile.extra.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(profile.extra.clone()).to_string()
        },
    }
}

pub use cairn_proto::time::{from_timestamp, timestamp};

fn state_to_pb(state: UserState) -> pb::UserState {
    match state {
        UserState::Active => pb::UserState::Active,
        UserState::Inactive => pb::UserState::Inactive,
        UserState::Locked => pb::UserState::Locked,
        _ => pb::UserState::Unspecified,
    }
}

/// A user from the aggregate's state after a command (what mutating calls return).
pub fn user_to_pb(
    user: &User,
    created_at: Option<DateTime<Utc>>,
    changed_at: Option<DateTime<Utc>>,
) -> pb::User {
    let kind = match (user.human(), user.machine()) {
        (Some(profile), _) => Some(pb::user::Kind::Human(profile_to_pb(profile))),
        (None, Some(machine)) => Some(pb::user::Kind::Machine(pb::Machine {
            name: machine.name.to_string(),
            description: machine.description.clone().unwrap_or_default(),
        })),
        _ => None,
    };
    pb::User {
        id: user.id().map(|i| i.to_string()).unwrap_or_default(),
        org_id: user.org_id().map(|i| i.to_string()).unwrap_or_default(),
        user_name: user.user_name().map(|u| u.to_string()).unwrap_or_default(),
        state: state_to_pb(user.state()) as i32,
        kind,
        created_at: created_at.map(timestamp),
        changed_at: changed_at.map(timestamp),
        sequence: cairn_domain::Aggregate::sequence(user),
    }
}

/// A user from the read model (what queries return).
pub fn row_to_pb(row: &UserRow) -> Result<pb::User, ApiError> {
    let kind = if row.kind == "human" {
        let profile: HumanProfile =
            serde_json::from_value(row.profile.clone()).map_err(|e| ApiError::Internal(e.to_string()))?;
        Some(pb::user::Kind::Human(profile_to_pb(&profile)))
    } else {
        Some(pb::user::Kind::Machine(pb::Machine {
            name: row.display_name.clone().unwrap_or_default(),
            description: row.description.clone().unwrap_or_default(),
        }))
    };
    let state = match row.state.as_str() {
        "active" => pb::UserState::Active,
        "inactive" => pb::UserState::Inactive,
        "locked" => pb::UserState::Locked,
        _ => pb::UserState::Unspecified,
    };
    Ok(pb::User {
        id: row.id.to_string(),
        org_id: row.org_id.to_string(),
        user_name: row.user_name.clone(),
        state: state as i32,
        kind,
        created_at: Some(timestamp(row.created_at)),
        changed_at: Some(timestamp(row.changed_at)),
        sequence: row.sequence,
    })
}

/// The details of a command: the last event's position, the aggregate's sequence, the change date.
pub fn details(events: &[StoredEvent], sequence: i64, owner: Option<AggregateId>) -> common::Details {
    let last = events.last();
    common::Details {
        position: last.map(|e| e.position).unwrap_or(Position::ZERO).to_string(),
        sequence,
        change_date: last.map(|e| timestamp(e.created_at)),
        resource_owner: owner.map(|o| o.to_string()).unwrap_or_default(),
    }
}

/// Parses an optional consistency token.
pub fn min_position(value: &str) -> Result<Option<Position>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse::<Position>()
        .map(Some)
        .map_err(|e| ApiError::invalid("min_position", e.to_string()))
}
