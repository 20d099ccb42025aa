//! `cairn.admin.v1.AdminService`: the instance, tokens, SMTP settings, projections.

use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, from_timestamp, opt, timestamp};
use crate::error::ApiError;
use crate::users::visible_user;
use cairn_auth::tokens::{self, ListFilter};
use cairn_auth::{NewToken, Permission, Role, TokenKind, TokenRecord};
use cairn_domain::AggregateId;
use cairn_proto::admin::v1 as pb;
use cairn_proto::admin::v1::admin_service_server::AdminService;
use sqlx::Row;
use tonic::{Request, Response, Status};

/// The admin service.
#[derive(Clone)]
pub struct Admin {
    api: Api,
}

impl Admin {
    /// The service over `api`.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

fn token_to_pb(token: TokenRecord) -> pb::Token {
    pb::Token {
        id: token.id,
        principal_id: token.principal_id.to_string(),
        org_id: token.org_id.map(|o| o.to_string()).unwrap_or_default(),
        roles: token.roles,
        description: token.description.unwrap_or_default(),
        created_at: Some(timestamp(token.created_at)),
        expires_at: token.expires_at.map(timestamp),
        revoked_at: token.revoked_at.map(timestamp),
        kind: token.kind.as_str().to_owned(),
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn get_instance(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::GetInstanceResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::Read)?;
        let instance: cairn_domain::Instance = self
            .api
            .exec
            .load(
                caller.instance_id,
                AggregateId::from_uuid(caller.instance_id.as_uuid()),
            )
            .await?;
        Ok(Response::new(pb::GetInstanceResponse {
            instance_id: caller.instance_id.to_string(),
            name: instance.name().map(|n| n.to_string()).unwrap_or_default(),
            default_org_id: instance
                .default_org_id()
                .map(|o| o.to_string())
                .unwrap_or_default(),
        }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let req = request.into_inner();
        let mut p = Parser::default();
        let principal = p.id("principal_id", &req.principal_id);
        let org = opt(&req.org_id).and_then(|o| p.parse("org_id", o.parse::<AggregateId>()));
        p.finish()?;
        let principal = principal.ok_or_else(|| ApiError::invalid("principal_id", "is required"))?;
        let user = visible_user(&self.api, &caller, principal).await?;
        let roles = req
            .roles
            .iter()
            .map(|r| r.parse::<Role>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::from)?;
        if roles.is_empty() {
            return Err(ApiError::invalid("roles", "name at least one role").into());
        }
        let kind = match req.kind.as_str() {
            "" => TokenKind::Api,
            other => TokenKind::requested(other).map_err(ApiError::from)?,
        };
        let expires_at = req.expires_at.as_ref().and_then(from_timestamp);
        if expires_at.is_some_and(|at| at <= self.api.exec.clock.now()) {
            return Err(ApiError::invalid("expires_at", "must be in the future").into());
        }
        let org_id = org.or(caller.org_id).or(if roles.contains(&Role::InstanceAdmin) {
            None
        } else {
            user.org_id()
        });
        let mut tx = cairn_eventstore::begin(&self.api.exec.pool)
            .await
            .map_err(ApiError::from)?;
        let issued = tokens::issue(
            &mut tx,
            &NewToken {
                instance_id: caller.instance_id,
                org_id,
                principal_id: principal,
                kind,
                roles,
                description: opt(&req.description),
                expires_at,
            },
        )
        .await
        .map_err(ApiError::from)?;
        let token = tokens::get(&mut tx, caller.instance_id, &issued.id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::Internal("a token just issued is not found".into()))?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token_to_pb(token)),
            secret: issued.secret.to_string(),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let req = request.into_inner();
        let principal = opt(&req.principal_id)
            .map(|p| {
                p.parse::<uuid::Uuid>()
                    .map_err(|e| ApiError::invalid("principal_id", e.to_string()))
            })
            .transpose()?;
        let found = tokens::list(
            &self.api.exec.pool,
            ListFilter {
                instance: Some(caller.instance_id),
                principal: principal.map(AggregateId::from_uuid),
                include_revoked: req.include_revoked,
            },
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: found.into_iter().map(token_to_pb).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let req = request.into_inner();
        let mut tx = cairn_eventstore::begin(&self.api.exec.pool)
            .await
            .map_err(ApiError::from)?;
        let token = tokens::revoke(&mut tx, Some(caller.instance_id), &req.token_id)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("token"))?;
        tx.commit().await.map_err(ApiError::from)?;
        self.api.auth.forget(&req.token_id);
        Ok(Response::new(pb::RevokeTokenResponse {
            token: Some(token_to_pb(token)),
        }))
    }

    async fn set_smtp_settings(
        &self,
        request: Request<pb::SetSmtpSettingsRequest>,
    ) -> Result<Response<pb::SmtpSettingsResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let settings = request.into_inner().settings.unwrap_or_default();
        let mut p = Parser::default();
        if settings.host.trim().is_empty() || settings.host.len() > 253 {
            p.fail("settings.host", "must be 1 to 253 characters");
        }
        if settings.port == 0 || settings.port > 65535 {
            p.fail("settings.port", "must be between 1 and 65535");
        }
        p.parse(
            "settings.from_address",
            cairn_domain::EmailAddress::parse(settings.from_address.clone()),
        );
        if !settings.reply_to.is_empty() {
            p.parse(
                "settings.reply_to",
                cairn_domain::EmailAddress::parse(settings.reply_to.clone()),
            );
        }
        let tls = match pb::SmtpTls::try_from(settings.tls).unwrap_or_default() {
            pb::SmtpTls::None => "none",
            pb::SmtpTls::Starttls | pb::SmtpTls::Unspecified => "starttls",
            pb::SmtpTls::Implicit => "implicit",
        };
        p.finish()?;
        let aad = smtp_aad(caller.instance_id);
        let sealed = if settings.password.is_empty() {
            None
        } else {
            let sealed = self
                .api
                .keys
                .encrypt_str(&settings.password, &aad)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Some(serde_json::to_value(sealed).map_err(|e| ApiError::Internal(e.to_string()))?)
        };
        sqlx::query(
            "INSERT INTO api.smtp_settings (instance_id, host, port, tls, username, password, from_address, from_name, reply_to) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (instance_id) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port, tls = EXCLUDED.tls, \
               username = EXCLUDED.username, password = coalesce(EXCLUDED.password, api.smtp_settings.password), \
               from_address = EXCLUDED.from_address, from_name = EXCLUDED.from_name, reply_to = EXCLUDED.reply_to, \
               changed_at = clock_timestamp()",
        )
        .bind(caller.instance_id.as_uuid())
        .bind(settings.host.trim())
        .bind(settings.port as i32)
        .bind(tls)
        .bind(opt(&settings.user))
        .bind(sealed)
        .bind(&settings.from_address)
        .bind(opt(&settings.from_name))
        .bind(opt(&settings.reply_to))
        .execute(&self.api.exec.pool)
        .await
        .map_err(ApiError::from)?;
        self.read_smtp(caller.instance_id).await
    }

    async fn get_smtp_settings(
        &self,
        request: Request<pb::GetSmtpSettingsRequest>,
    ) -> Result<Response<pb::SmtpSettingsResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        self.read_smtp(caller.instance_id).await
    }

    async fn get_projection_health(
        &self,
        request: Request<pb::GetProjectionHealthRequest>,
    ) -> Result<Response<pb::GetProjectionHealthResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let rows = cairn_projection::health::report(&self.api.exec.pool, Some(caller.instance_id.as_uuid()))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetProjectionHealthResponse {
            projections: rows
                .into_iter()
                .map(|h| pb::ProjectionHealth {
                    projection: h.projection,
                    instance_id: h.instance_id.to_string(),
                    position: h.position,
                    lag_events: h.lag_events,
                    lag_seconds: h.lag_seconds,
                    status: h.status,
                    error_count: h.error_count,
                    last_error: h.last_error.unwrap_or_default(),
                    skipped_events: h.skipped_events,
                    lease_owner: h.lease_owner.map(|o| o.to_string()).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn reset_projection(
        &self,
        request: Request<pb::ResetProjectionRequest>,
    ) -> Result<Response<pb::ResetProjectionResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let req = request.into_inner();
        if !cairn_readmodel::all().iter().any(|p| p.name() == req.projection) {
            return Err(ApiError::invalid("projection", "unknown projection").into());
        }
        let marked = cairn_projection::health::request_rebuild(
            &self.api.exec.pool,
            &req.projection,
            Some(caller.instance_id.as_uuid()),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Response::new(pb::ResetProjectionResponse { marked }))
    }
}

/// The AAD that binds an SMTP password to its instance.
pub fn smtp_aad(instance: cairn_domain::InstanceId) -> Vec<u8> {
    cairn_secrets::smtp_password_aad(instance.as_uuid().as_bytes())
}

impl Admin {
    async fn read_smtp(
        &self,
        instance: cairn_domain::InstanceId,
    ) -> Result<Response<pb::SmtpSettingsResponse>, Status> {
        let row = sqlx::query(
            "SELECT host, port, tls, username, password IS NOT NULL AS has_password, from_address, from_name, reply_to \
             FROM api.smtp_settings WHERE instance_id = $1",
        )
        .bind(instance.as_uuid())
        .fetch_optional(&self.api.exec.pool)
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::NotFound("smtp settings"))?;
        let get = |name: &str| -> Result<String, ApiError> {
            Ok(row
                .try_get::<Option<String>, _>(name)
                .map_err(ApiError::from)?
                .unwrap_or_default())
        };
        let tls: String = row.try_get("tls").map_err(ApiError::from)?;
        Ok(Response::new(pb::SmtpSettingsResponse {
            settings: Some(pb::SmtpSettings {
                host: get("host")?,
                port: row.try_get::<i32, _>("port").map_err(ApiError::from)? as u32,
                tls: match tls.as_str() {
                    "none" => pb::SmtpTls::None,
                    "implicit" => pb::SmtpTls::Implicit,
                    _ => pb::SmtpTls::Starttls,
                } as i32,
                user: get("username")?,
                from_address: get("from_address")?,
                from_name: get("from_name")?,
                reply_to: get("reply_to")?,
                password: String::new(),
                has_password: row.try_get("has_password").map_err(ApiError::from)?,
            }),
        }))
    }
}
