//! `cairn.notification.v1.NotificationService`: the deliveries an administrator lists and retries,
//! and the instance's email template overrides (`api.email_templates`). Callers present the same
//! bearer tokens as for command-api (`cairn-auth`'s [`Authenticator`]) and need the instance
//! administrator's permission; everything is scoped to the token's instance, so another tenant's delivery is
//! `NOT_FOUND`.

use crate::compose::template_of;
use crate::deliveries::{self, Delivery, ListFilter};
use cairn_auth::{Authenticator, Caller, Permission};
use cairn_domain::Clock;
use cairn_error::{Code, Error};
use cairn_mail::{MessageKind, TemplateOverride, TemplatePart, Templates};
use cairn_proto::notification::v1 as pb;
use cairn_proto::time::{from_timestamp, timestamp};
use pb::notification_service_server::NotificationService;
use sqlx::PgPool;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// The service.
#[derive(Clone)]
pub struct Notifications {
    pool: PgPool,
    auth: Authenticator,
    templates: Arc<Templates>,
    clock: Arc<dyn Clock>,
}

impl Notifications {
    /// Over `pool`, checking templates with `templates`.
    pub fn new(pool: PgPool, templates: Arc<Templates>, clock: Arc<dyn Clock>) -> Self {
        Self {
            auth: Authenticator::new(pool.clone()),
            pool,
            templates,
            clock,
        }
    }

    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller, Error> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let caller = self.auth.authenticate(header, self.clock.now()).await?;
        caller.authorize(Permission::AdministerInstance)?;
        Ok(caller)
    }
}

fn status_to_pb(status: &str) -> pb::DeliveryStatus {
    match status {
        "pending" => pb::DeliveryStatus::Pending,
        "sending" => pb::DeliveryStatus::Sending,
        "sent" => pb::DeliveryStatus::Sent,
        "failed" => pb::DeliveryStatus::Failed,
        "skipped" => pb::DeliveryStatus::Skipped,
        _ => pb::DeliveryStatus::Unspecified,
    }
}

fn status_from_pb(status: pb::DeliveryStatus) -> Option<&'static str> {
    match status {
        pb::DeliveryStatus::Pending => Some("pending"),
        pb::DeliveryStatus::Sending => Some("sending"),
        pb::DeliveryStatus::Sent => Some("sent"),
        pb::DeliveryStatus::Failed => Some("failed"),
        pb::DeliveryStatus::Skipped => Some("skipped"),
        pb::DeliveryStatus::Unspecified => None,
    }
}

fn delivery_to_pb(d: Delivery) -> pb::Delivery {
    pb::Delivery {
        event_id: d.event_id.to_string(),
        user_id: d.user_id.to_string(),
        email: d.email,
        language: d.language.unwrap_or_default(),
        status: status_to_pb(&d.status) as i32,
        attempts: d.attempts,
        next_attempt_at: Some(timestamp(d.next_attempt_at)),
        last_error: d.last_error.unwrap_or_default(),
        smtp_reply: d.smtp_reply.unwrap_or_default(),
        message_id: d.message_id,
        created_at: Some(timestamp(d.created_at)),
        sent_at: d.sent_at.map(timestamp),
    }
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, Error> {
    value
        .parse()
        .map_err(|_| Error::invalid_field(field, "must be a UUID"))
}

fn kind_from_pb(kind: i32) -> MessageKind {
    // One kind exists; unspecified means it.
    match pb::MessageKind::try_from(kind).unwrap_or_default() {
        pb::MessageKind::EmailVerification | pb::MessageKind::Unspecified => MessageKind::EmailVerification,
    }
}

/// The normalised language tag, or a field violation.
fn language(value: &str) -> Result<String, Error> {
    let candidates = cairn_mail::language_candidates(Some(value));
    match candidates.first() {
        Some(first) if first != cairn_mail::DEFAULT_LANGUAGE || value.trim().eq_ignore_ascii_case("en") => {
            Ok(first.clone())
        }
        _ => Err(Error::invalid_field(
            "language",
            "must be a language tag such as en, de or de-CH",
        )),
    }
}

fn parts_to_pb(o: &TemplateOverride) -> pb::TemplateParts {
    pb::TemplateParts {
        subject: o.subject.clone().unwrap_or_default(),
        html: o.html.clone().unwrap_or_default(),
        text: o.text.clone().unwrap_or_default(),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

fn defaults_of(kind: MessageKind, language: &str) -> pb::TemplateParts {
    let lang = cairn_mail::language_candidates(Some(language))
        .into_iter()
        .find(|l| Templates::default_source(kind, l, TemplatePart::Subject).is_some())
        .unwrap_or_else(|| cairn_mail::DEFAULT_LANGUAGE.to_owned());
    let part = |p| {
        Templates::default_source(kind, &lang, p)
            .unwrap_or_default()
            .to_owned()
    };
    pb::TemplateParts {
        subject: part(TemplatePart::Subject),
        html: part(TemplatePart::Html),
        text: part(TemplatePart::Text),
    }
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let filter = ListFilter {
            user_id: non_empty(req.user_id)
                .map(|id| parse_id("user_id", &id))
                .transpose()?,
            status: status_from_pb(pb::DeliveryStatus::try_from(req.status).unwrap_or_default())
                .map(str::to_owned),
            before: req.before.as_ref().and_then(from_timestamp),
            limit: if req.limit == 0 {
                100
            } else {
                i64::from(req.limit.min(1000))
            },
        };
        let rows = deliveries::list(&self.pool, caller.instance_id.as_uuid(), &filter)
            .await
            .map_err(Error::unavailable)?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(delivery_to_pb).collect(),
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let caller = self.admin(&request).await?;
        let instance = caller.instance_id.as_uuid();
        let event_id = parse_id("event_id", &request.into_inner().event_id)?;
        let Some(delivery) = deliveries::retry_failed(&self.pool, instance, event_id)
            .await
            .map_err(Error::unavailable)?
        else {
            let current = deliveries::get(&self.pool, instance, event_id)
                .await
                .map_err(Error::unavailable)?
                .ok_or_else(|| Error::not_found("delivery"))?;
            return Err(Error::new(
                Code::FailedPrecondition,
                format!(
                    "only failed deliveries can be retried; this one is {}",
                    current.status
                ),
            )
            .into());
        };
        tracing::info!(event_id = %event_id, instance = %instance, "failed delivery retried by an administrator");
        // Wake the senders (they also poll).
        let _ = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(cairn_projection::PROJECTION_CHANNEL)
            .bind(format!("{}:{instance}:retry", crate::intake::PROJECTION_NAME))
            .execute(&self.pool)
            .await;
        Ok(Response::new(delivery_to_pb(delivery)))
    }

    async fn set_email_template(
        &self,
        request: Request<pb::SetEmailTemplateRequest>,
    ) -> Result<Response<pb::EmailTemplate>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let kind = kind_from_pb(req.kind);
        let lang = language(&req.language)?;
        let parts = req.r#override.unwrap_or_default();
        let overrides = TemplateOverride {
            subject: non_empty(parts.subject),
            html: non_empty(parts.html),
            text: non_empty(parts.text),
        };
        self.templates
            .validate_override(kind, &overrides)
            .map_err(|e| Error::invalid_field("override", e.to_string()))?;
        let value = serde_json::to_value(&overrides).map_err(Error::internal)?;
        sqlx::query(
            "INSERT INTO api.email_templates (instance_id, language, template) \
             VALUES ($1, $2, jsonb_build_object($3::text, $4::jsonb)) \
             ON CONFLICT (instance_id, language) DO UPDATE \
               SET template = api.email_templates.template || EXCLUDED.template, changed_at = clock_timestamp()",
        )
        .bind(caller.instance_id.as_uuid())
        .bind(&lang)
        .bind(kind.as_str())
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(Error::unavailable)?;
        tracing::info!(instance = %caller.instance_id, language = %lang, kind = kind.as_str(), "email template override set");
        Ok(Response::new(pb::EmailTemplate {
            kind: pb::MessageKind::EmailVerification as i32,
            r#override: Some(parts_to_pb(&overrides)),
            defaults: Some(defaults_of(kind, &lang)),
            language: lang,
        }))
    }

    async fn get_email_template(
        &self,
        request: Request<pb::GetEmailTemplateRequest>,
    ) -> Result<Response<pb::EmailTemplate>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let kind = kind_from_pb(req.kind);
        let lang = language(&req.language)?;
        let stored: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT template FROM api.email_templates WHERE instance_id = $1 AND language = $2",
        )
        .bind(caller.instance_id.as_uuid())
        .bind(&lang)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::unavailable)?;
        let overrides = stored
            .as_ref()
            .and_then(|t| template_of(t, kind))
            .unwrap_or_default();
        Ok(Response::new(pb::EmailTemplate {
            kind: pb::MessageKind::EmailVerification as i32,
            r#override: Some(parts_to_pb(&overrides)),
            defaults: Some(defaults_of(kind, &lang)),
            language: lang,
        }))
    }
}
