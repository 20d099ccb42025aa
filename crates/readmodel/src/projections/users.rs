//! `projections.users`: one row per user that is not removed. Inserts of new users are applied in
//! bulk (`jsonb_populate_recordset`) during catch-up; every other event reads the row, folds the
//! change with the domain's own rules and writes the row back.

use super::{rejected, types};
use crate::rows::UserRow;
use cairn_domain::user::{HumanProfile, UserEvent};
use cairn_domain::{InstanceId, StoredEvent, personal};
use cairn_projection::{Projection, ReduceError};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// The users read model.
pub struct UsersProjection;

const UPSERT: &str = "INSERT INTO projections.users SELECT * FROM jsonb_populate_recordset(NULL::projections.users, $1) \
     ON CONFLICT (instance_id, id) DO UPDATE SET org_id = EXCLUDED.org_id, kind = EXCLUDED.kind, \
       user_name = EXCLUDED.user_name, state = EXCLUDED.state, display_name = EXCLUDED.display_name, \
       given_name = EXCLUDED.given_name, family_name = EXCLUDED.family_name, formatted_name = EXCLUDED.formatted_name, \
       nick_name = EXCLUDED.nick_name, title = EXCLUDED.title, user_type = EXCLUDED.user_type, \
       preferred_language = EXCLUDED.preferred_language, locale = EXCLUDED.locale, timezone = EXCLUDED.timezone, \
       external_id = EXCLUDED.external_id, primary_email = EXCLUDED.primary_email, \
       email_verified = EXCLUDED.email_verified, primary_phone = EXCLUDED.primary_phone, \
       employee_number = EXCLUDED.employee_number, cost_center = EXCLUDED.cost_center, \
       organization = EXCLUDED.organization, division = EXCLUDED.division, department = EXCLUDED.department, \
       manager_id = EXCLUDED.manager_id, description = EXCLUDED.description, profile = EXCLUDED.profile, \
       changed_at = EXCLUDED.changed_at, sequence = EXCLUDED.sequence";

fn human_row(
    event: &StoredEvent,
    org_id: uuid::Uuid,
    user_name: String,
    state: &str,
    profile: &HumanProfile,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Result<UserRow, ReduceError> {
    let primary = profile.primary_email();
    let enterprise = profile.enterprise.as_ref();
    Ok(UserRow {
        instance_id: event.instance_id.as_uuid(),
        id: event.aggregate_id.as_uuid(),
        org_id,
        kind: "human".into(),
        user_name,
        state: state.into(),
        display_name: profile.display_name.as_ref().map(|d| d.to_string()),
        given_name: profile.name.given_name.clone(),
        family_name: profile.name.family_name.clone(),
        formatted_name: profile.name.formatted.clone(),
        nick_name: profile.nick_name.clone(),
        title: profile.title.clone(),
        user_type: profile.user_type.clone(),
        preferred_language: profile.preferred_language.as_ref().map(|l| l.to_string()),
        locale: profile.locale.clone(),
        timezone: profile.timezone.clone(),
        external_id: profile.external_id.clone(),
        primary_email: primary.map(|e| e.value.to_string()),
        email_verified: primary.is_some_and(|e| e.verified),
        primary_phone: profile.primary_phone().map(|p| p.value.to_string()),
        employee_number: enterprise.and_then(|e| e.employee_number.clone()),
        cost_center: enterprise.and_then(|e| e.cost_center.clone()),
        organization: enterprise.and_then(|e| e.organization.clone()),
        division: enterprise.and_then(|e| e.division.clone()),
        department: enterprise.and_then(|e| e.department.clone()),
        manager_id: enterprise
            .and_then(|e| e.manager.as_ref())
            .and_then(|m| m.value.clone()),
        description: None,
        profile: serde_json::to_value(profile).map_err(|e| ReduceError::Rejected(e.to_string()))?,
        created_at,
        changed_at: event.created_at,
        sequence: event.sequence,
    })
}

async fn upsert(conn: &mut PgConnection, rows: &[UserRow]) -> Result<(), ReduceError> {
    let json = serde_json::to_value(rows).map_err(|e| ReduceError::Rejected(e.to_string()))?;
    sqlx::query(UPSERT).bind(json).execute(&mut *conn).await?;
    Ok(())
}

async fn load(conn: &mut PgConnection, event: &StoredEvent) -> Result<UserRow, ReduceError> {
    let row: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(u) FROM projections.users u WHERE instance_id = $1 AND id = $2")
            .bind(event.instance_id.as_uuid())
            .bind(event.aggregate_id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?;
    let row = row.ok_or_else(|| {
        ReduceError::Rejected(format!(
            "{} for unknown user {}",
            event.event_type, event.aggregate_id
        ))
    })?;
    serde_json::from_value(row)
        .map_err(|e| ReduceError::Rejected(format!("stored user row is malformed: {e}")))
}

fn new_row(event: &StoredEvent, decoded: &UserEvent) -> Result<Option<UserRow>, ReduceError> {
    Ok(match decoded {
        UserEvent::HumanAdded(e) => Some(human_row(
            event,
            e.org_id.as_uuid(),
            e.user_name.to_string(),
            "active",
            &e.profile,
            event.created_at,
        )?),
        UserEvent::MachineAdded(e) => Some(UserRow {
            instance_id: event.instance_id.as_uuid(),
            id: event.aggregate_id.as_uuid(),
            org_id: e.org_id.as_uuid(),
            kind: "machine".into(),
            user_name: e.user_name.to_string(),
            state: "active".into(),
            display_name: Some(e.name.to_string()),
            given_name: None,
            family_name: None,
            formatted_name: None,
            nick_name: None,
            title: None,
            user_type: None,
            preferred_language: None,
            locale: None,
            timezone: None,
            external_id: None,
            primary_email: None,
            email_verified: false,
            primary_phone: None,
            employee_number: None,
            cost_center: None,
            organization: None,
            division: None,
            department: None,
            manager_id: None,
            description: e.description.clone(),
            profile: serde_json::json!({}),
            created_at: event.created_at,
            changed_at: event.created_at,
            sequence: event.sequence,
        }),
        _ => None,
    })
}

async fn apply_change(
    conn: &mut PgConnection,
    event: &StoredEvent,
    decoded: UserEvent,
) -> Result<(), ReduceError> {
    if let UserEvent::Removed(_) | UserEvent::Erased(_) = decoded {
        sqlx::query("DELETE FROM projections.users WHERE instance_id = $1 AND id = $2")
            .bind(event.instance_id.as_uuid())
            .bind(event.aggregate_id.as_uuid())
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    let mut row = load(conn, event).await?;
    row.changed_at = event.created_at;
    row.sequence = event.sequence;
    let mut profile_changed = None;
    match decoded {
        UserEvent::UsernameChanged(e) => row.user_name = e.user_name.to_string(),
        UserEvent::Deactivated(_) => row.state = "inactive".into(),
        UserEvent::Reactivated(_) | UserEvent::Unlocked(_) => row.state = "active".into(),
        UserEvent::Locked(_) => row.state = "locked".into(),
        UserEvent::MachineChanged(e) => {
            if let Some(name) = e.name {
                row.display_name = Some(name.to_string());
            }
            if let Some(description) = e.description {
                row.description = description;
            }
        }
        UserEvent::ProfileChanged(change) => {
            let mut profile = profile_of(&row)?;
            change.apply_to(&mut profile);
            profile_changed = Some(profile);
        }
        UserEvent::EmailChanged(e) => {
            let mut profile = profile_of(&row)?;
            profile.set_primary_email(e.email);
            profile_changed = Some(profile);
        }
        UserEvent::EmailVerified(e) => {
            let mut profile = profile_of(&row)?;
            profile.mark_verified(&e.email);
            profile_changed = Some(profile);
        }
        UserEvent::PhoneChanged(e) => {
            let mut profile = profile_of(&row)?;
            profile.set_primary_phone(e.phone);
            profile_changed = Some(profile);
        }
        // Events that change nothing a reader sees but the resource's version.
        UserEvent::PasswordChanged(_)
        | UserEvent::EmailCodeAdded(_)
        | UserEvent::EmailVerificationFailed(_)
        | UserEvent::PatAdded(_)
        | UserEvent::PatRemoved(_) => {}
        UserEvent::HumanAdded(_)
        | UserEvent::MachineAdded(_)
        | UserEvent::Removed(_)
        | UserEvent::Erased(_) => {}
    }
    if let Some(profile) = profile_changed {
        let user_name = row.user_name.clone();
        let state = row.state.clone();
        row = human_row(event, row.org_id, user_name, &state, &profile, row.created_at)?;
    }
    upsert(conn, std::slice::from_ref(&row)).await
}

fn profile_of(row: &UserRow) -> Result<HumanProfile, ReduceError> {
    if row.kind != "human" {
        return Err(ReduceError::Rejected(format!("user {} is not human", row.id)));
    }
    serde_json::from_value(row.profile.clone())
        .map_err(|e| ReduceError::Rejected(format!("stored profile is malformed: {e}")))
}

impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn event_types(&self) -> Vec<cairn_domain::EventType> {
        types(UserEvent::EVENT_TYPES)
    }

    fn reduce<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            if personal::is_erased(&event.payload) {
                // An erased user's data is gone: the row it would change ends with the user's
                // `user.removed` anyway, and a rebuild never creates it.
                return Ok(());
            }
            let decoded = UserEvent::decode(event).map_err(rejected)?;
            match new_row(event, &decoded)? {
                Some(row) => upsert(conn, &[row]).await,
                None => apply_change(conn, event, decoded).await,
            }
        })
    }

    fn reduce_many<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ReduceError>> {
        Box::pin(async move {
            // Consecutive creations go in one statement; anything else is applied in order between.
            let mut pending: Vec<UserRow> = Vec::new();
            for event in events.iter().filter(|e| !personal::is_erased(&e.payload)) {
                let decoded = UserEvent::decode(event).map_err(rejected)?;
                match new_row(event, &decoded)? {
                    Some(row) => pending.push(row),
                    None => {
                        if !pending.is_empty() {
                            upsert(conn, &pending).await?;
                            pending.clear();
                        }
                        apply_change(conn, event, decoded).await?;
                    }
                }
            }
            if !pending.is_empty() {
                upsert(conn, &pending).await?;
            }
            Ok(())
        })
    }

    fn reset<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        instance: InstanceId,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM projections.users WHERE instance_id = $1")
                .bind(instance.as_uuid())
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    fn tables(&self) -> Vec<&'static str> {
        vec!["projections.users"]
    }
}
