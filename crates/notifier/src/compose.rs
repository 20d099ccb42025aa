//! Composing one verification email: is the code still worth sending (the user's current state,
//! read from the event store, not from a read model that may lag), the code decrypted in memory,
//! the user's language, the instance's template override, and the lettre message with a stable
//! Message-ID.

use crate::deliveries::Claimed;
use crate::smtp::SmtpSettings;
use cairn_domain::{Aggregate, AggregateId, Instance, InstanceId, Org, User};
use cairn_eventstore::{PgEventStore, StoreError};
use cairn_mail::{MessageKind, RenderedMessage, TemplateOverride, Templates, VerificationContext};
use cairn_personal::{PersonalError, Vault};
use cairn_secrets::{Sealed, Zeroizing};
use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use sqlx::PgPool;

/// Why a delivery is not sent at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The user was removed or is not a human with this address any more.
    UserGone,
    /// The address was verified (or changed) since the code was made.
    NoPendingCode,
    /// A newer code replaced this one.
    Superseded,
    /// The code was voided (too many failed attempts, or expired on use).
    Voided,
    /// The code expired before it could be sent.
    Expired,
}

impl Skip {
    /// The reason recorded in `last_error`.
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::UserGone => "user removed or not a human user",
            Skip::NoPendingCode => "no pending code: the address was verified or changed since",
            Skip::Superseded => "superseded by a newer code",
            Skip::Voided => "code voided before it was sent",
            Skip::Expired => "code expired before it could be sent",
        }
    }
}

/// Why a message could not be composed now.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// Reading the state failed; try again.
    #[error("reading state failed: {0}")]
    Transient(String),
    /// The message can never be built (a bad address, a broken default template).
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for ComposeError {
    fn from(error: StoreError) -> Self {
        ComposeError::Transient(error.to_string())
    }
}

impl From<sqlx::Error> for ComposeError {
    fn from(error: sqlx::Error) -> Self {
        ComposeError::Transient(error.to_string())
    }
}

/// A message ready to go, with what the delivery record keeps about it.
pub struct Composed {
    /// The lettre message.
    pub message: Message,
    /// The language of the templates used.
    pub language: String,
    /// Problems worth logging (an override that failed and was replaced by the defaults, an
    /// invalid link template); they hold no code.
    pub warnings: Vec<String>,
}

/// The parts composing needs.
pub struct Composer<'a> {
    /// PostgreSQL (template overrides).
    pub pool: &'a PgPool,
    /// The event store (the user's current state).
    pub store: &'a PgEventStore,
    /// Keys that open the sealed code and the user's personal data.
    pub vault: &'a Vault,
    /// The templates.
    pub templates: &'a Templates,
    /// The time, from the service's clock.
    pub now: DateTime<Utc>,
}

/// Personal data that does not open now (the database, a keyring without the key) may open
/// later: the delivery is tried again.
fn personal_failed(error: PersonalError) -> ComposeError {
    ComposeError::Transient(format!("opening personal data: {error}"))
}

/// Loads an aggregate: its snapshot (of the current schema) plus the events after it.
pub async fn load<A: Aggregate>(
    store: &PgEventStore,
    vault: &Vault,
    instance: InstanceId,
    id: AggregateId,
) -> Result<A, ComposeError> {
    let kind = A::aggregate_type();
    let mut conn = store
        .pool()
        .acquire()
        .await
        .map_err(|e| ComposeError::Transient(e.to_string()))?;
    let snapshot = store
        .load_snapshot_in(&mut conn, instance, &kind, id, A::SNAPSHOT_VERSION)
        .await?;
    let opened = match &snapshot {
        Some(s) => vault
            .open_snapshot(&mut conn, s)
            .await
            .map_err(personal_failed)?
            .and_then(|state| serde_json::from_value::<A>(state).ok())
            .map(|state| (state, s.sequence)),
        None => None,
    };
    let (mut state, after) = opened.unwrap_or_else(|| (A::default(), 0));
    let mut events = store
        .load_aggregate_in(&mut conn, instance, &kind, id, after)
        .await?;
    vault
        .open(&mut conn, &mut events)
        .await
        .map_err(personal_failed)?;
    for event in events {
        state
            .apply(&event)
            .map_err(|e| ComposeError::Permanent(format!("aggregate {id} cannot be rebuilt: {e}")))?;
    }
    Ok(state)
}

impl Composer<'_> {
    /// Decides whether `delivery` is still to be sent and builds its message.
    pub async fn compose(
        &self,
        delivery: &Claimed,
        settings: &SmtpSettings,
    ) -> Result<Result<Composed, Skip>, ComposeError> {
        let instance = InstanceId::from_uuid(delivery.instance_id);
        let user_id = AggregateId::from_uuid(delivery.user_id);
        let user: User = load(self.store, self.vault, instance, user_id).await?;
        if let Err(skip) = still_due(&user, delivery, self.now) {
            return Ok(Err(skip));
        }
        let Some(profile) = user.human() else {
            return Ok(Err(Skip::UserGone));
        };
        let sealed: Sealed = delivery
            .code
            .clone()
            .ok_or_else(|| ComposeError::Permanent("the delivery holds no code".into()))
            .and_then(|v| serde_json::from_value(v).map_err(|e| ComposeError::Permanent(e.to_string())))?;
        let aad = cairn_secrets::email_code_aad(instance.as_uuid().as_bytes(), user_id.as_uuid().as_bytes());
        // Transient: the usual cause is a key id this replica is not configured with yet.
        let code: Zeroizing<String> = self
            .vault
            .keyring()
            .decrypt_string(&sealed, &aad)
            .map_err(|e| ComposeError::Transient(format!("the code cannot be decrypted: {e}")))?;

        let org_id = user.org_id().unwrap_or(AggregateId::from_uuid(delivery.org_id));
        let org: Org = load(self.store, self.vault, instance, org_id).await?;
        let instance_state: Instance = load(
            self.store,
            self.vault,
            instance,
            AggregateId::from_uuid(instance.as_uuid()),
        )
        .await?;
        // The user's language, else the instance's default, else the templates' (English).
        let language = match profile.preferred_language.as_ref() {
            Some(l) => Some(l.as_str().to_owned()),
            None => {
                cairn_instances::registry::settings(self.pool, instance)
                    .await
                    .map_err(|e| ComposeError::Transient(format!("the instance's settings: {e}")))?
                    .default_language
            }
        };
        let overrides = self.overrides(instance, language.as_deref()).await?;
        let expires_in = (delivery.expires_at - self.now).to_std().unwrap_or_default();
        let ctx = VerificationContext {
            user_id: user_id.to_string(),
            user_name: user
                .user_name()
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            display_name: profile.display_name.as_ref().map(|d| d.as_str().to_owned()),
            org_id: org_id.to_string(),
            org_name: org.name().map(|n| n.as_str().to_owned()),
            instance_name: instance_state
                .name()
                .map_or_else(|| "Cairn".to_owned(), |n| n.as_str().to_owned()),
            code: code.as_str().to_owned(),
            url_template: delivery.url_template.clone(),
            expires_in,
        };
        let rendered = self
            .templates
            .render(
                MessageKind::EmailVerification,
                language.as_deref(),
                overrides.as_ref(),
                &ctx,
            )
            .map_err(|e| ComposeError::Permanent(format!("the default template failed: {e}")))?;
        let display_name = ctx.display_name.clone();
        // The context holds a copy of the code; wipe it with the rest once the message is built.
        let _wipe = Zeroizing::new(ctx.code);
        build_message(delivery, settings, display_name, rendered, self.now).map(Ok)
    }

    /// The instance's override for the first language candidate that has one.
    async fn overrides(
        &self,
        instance: InstanceId,
        language: Option<&str>,
    ) -> Result<Option<TemplateOverride>, ComposeError> {
        let candidates = cairn_mail::language_candidates(language);
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT language, template FROM api.email_templates WHERE instance_id = $1 AND language = ANY($2)",
        )
        .bind(instance.as_uuid())
        .bind(&candidates)
        .fetch_all(self.pool)
        .await?;
        Ok(candidates.iter().find_map(|candidate| {
            rows.iter()
                .find(|(l, _)| l == candidate)
                .and_then(|(_, template)| template_of(template, MessageKind::EmailVerification))
        }))
    }
}

/// The override of `kind` in a stored `api.email_templates.template` value:
/// `{"email_verification": {"subject": ..., "html": ..., "text": ...}}`.
pub fn template_of(stored: &serde_json::Value, kind: MessageKind) -> Option<TemplateOverride> {
    stored
        .get(kind.as_str())
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Whether the code of `delivery` is still the user's valid pending code at `now`.
pub fn still_due(user: &User, delivery: &Claimed, now: DateTime<Utc>) -> Result<(), Skip> {
    if !user.exists() || user.human().is_none() {
        return Err(Skip::UserGone);
    }
    let pending = user.pending_code().ok_or(Skip::NoPendingCode)?;
    if delivery.code.as_ref() != Some(&pending.encrypted) {
        return Err(Skip::Superseded);
    }
    if pending.voided {
        return Err(Skip::Voided);
    }
    if now >= delivery.expires_at {
        return Err(Skip::Expired);
    }
    Ok(())
}

fn build_message(
    delivery: &Claimed,
    settings: &SmtpSettings,
    display_name: Option<String>,
    rendered: RenderedMessage,
    now: DateTime<Utc>,
) -> Result<Composed, ComposeError> {
    let mut warnings = Vec::new();
    if let Some(error) = &rendered.override_error {
        warnings.push(format!("template override not used: {error}"));
    }
    if let Some(error) = &rendered.link_error {
        warnings.push(format!("verification link left out: {error}"));
    }
    let from = Mailbox::new(
        settings.from_name.clone(),
        settings
            .from_address
            .parse()
            .map_err(|e| ComposeError::Permanent(format!("invalid sender address: {e}")))?,
    );
    let to = Mailbox::new(
        display_name,
        delivery
            .email
            .parse()
            .map_err(|e| ComposeError::Permanent(format!("invalid recipient address: {e}")))?,
    );
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(delivery.message_id.clone()))
        .date(now.into());
    if let Some(reply_to) = &settings.reply_to {
        let reply_to = reply_to
            .parse()
            .map_err(|e| ComposeError::Permanent(format!("invalid Reply-To address: {e}")))?;
        builder = builder.reply_to(Mailbox::new(None, reply_to));
    }
    let message = builder
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
        .map_err(|e| ComposeError::Permanent(format!("the message cannot be built: {e}")))?;
    Ok(Composed {
        message,
        language: rendered.language.clone(),
        warnings,
    })
}
