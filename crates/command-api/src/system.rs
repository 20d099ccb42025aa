//! `cairn.system.v1.SystemService`: the deployment's instances, for system tokens only. The edge
//! ([`crate::authn`]) lets only a system token through to this service and refuses it everywhere
//! else; the work itself is `cairn-instances`', which the operator's `cairn instances` shares.

use crate::api::Api;
use crate::convert::timestamp;
use crate::error::ApiError;
use cairn_auth::{Caller, SystemCaller};
use cairn_domain::{AggregateId, InstanceId};
use cairn_instances::registry::{self, InstanceRecord, InstanceSettings, InstanceState, Limits, ListQuery};
use cairn_instances::{InstanceError, NewInstance};
use cairn_proto::system::v1 as pb;
use cairn_proto::system::v1::system_service_server::SystemService;
use tonic::{Request, Response, Status};

/// The system service.
#[derive(Clone)]
pub struct System {
    api: Api,
}

impl System {
    /// The service over `api`.
    pub fn new(api: Api) -> Self {
        Self { api }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<SystemCaller, ApiError> {
        // Authenticated at the server's edge (`crate::authn`), which admits only system tokens here.
        request
            .extensions()
            .get::<SystemCaller>()
            .cloned()
            .ok_or(ApiError::Unauthenticated("the system API takes a system token"))
    }
}

impl From<InstanceError> for ApiError {
    fn from(error: InstanceError) -> Self {
        match error {
            InstanceError::Invalid { field, reason } => ApiError::invalid(field, reason),
            InstanceError::NotFound => ApiError::NotFound("instance"),
            InstanceError::Domain(e) => e.into(),
            InstanceError::Store(e) => e.into(),
            InstanceError::Auth(e) => e.into(),
            InstanceError::Database(e) => e.into(),
            InstanceError::Personal(e) => e.into(),
        }
    }
}

fn instance_id(field: &str, value: &str) -> Result<InstanceId, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    let id: InstanceId = value
        .parse()
        .map_err(|_| ApiError::invalid(field, "must be a UUID"))?;
    if id == InstanceId::SYSTEM {
        return Err(ApiError::NotFound("instance"));
    }
    Ok(id)
}

fn state_to_pb(state: InstanceState) -> pb::InstanceState {
    match state {
        InstanceState::Active => pb::InstanceState::Active,
        InstanceState::Inactive => pb::InstanceState::Inactive,
        InstanceState::Removed => pb::InstanceState::Removed,
    }
}

fn to_pb(record: InstanceRecord) -> pb::Instance {
    pb::Instance {
        id: record.id.to_string(),
        name: record.name,
        state: state_to_pb(record.state) as i32,
        default_org_id: record.default_org_id.map(|o| o.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(record.created_at)),
        changed_at: Some(timestamp(record.changed_at)),
        domains: record.domains,
        settings: Some(pb::InstanceSettings {
            email_code_ttl_secs: record.settings.email_code_ttl_secs,
            email_code_max_attempts: record.settings.email_code_max_attempts,
            scim_emails_verified: record.settings.scim_emails_verified,
            default_language: record.settings.default_language,
            scim_erase_on_delete: record.settings.scim_erase_on_delete,
        }),
        limits: record.limits.0.into_iter().collect(),
    }
}

fn respond(record: InstanceRecord) -> Response<pb::InstanceResponse> {
    Response::new(pb::InstanceResponse {
        instance: Some(to_pb(record)),
    })
}

/// The copy of an `AddInstance` response kept for its idempotency key: without the token.
fn without_token(response: &pb::AddInstanceResponse) -> pb::AddInstanceResponse {
    pb::AddInstanceResponse {
        admin_token: String::new(),
        ..response.clone()
    }
}

#[tonic::async_trait]
impl SystemService for System {
    async fn add_instance(
        &self,
        request: Request<pb::AddInstanceRequest>,
    ) -> Result<Response<pb::AddInstanceResponse>, Status> {
        let system = self.caller(&request)?;
        let key = Api::idempotency_key(&request);
        let req = request.into_inner();
        let spec = NewInstance {
            id: match req.instance_id.as_str() {
                "" => None,
                id => Some(instance_id("instance_id", id)?),
            },
            name: req.name.clone(),
            org_name: Some(req.org_name.clone()).filter(|n| !n.is_empty()),
            creator: system.creator(),
        };
        // Idempotency keys of system calls belong to no instance.
        let keys_of = Caller {
            token_id: system.token_id.clone(),
            instance_id: InstanceId::SYSTEM,
            org_id: None,
            principal_id: AggregateId::from_uuid(uuid::Uuid::nil()),
            roles: Vec::new(),
            settings: Default::default(),
        };
        let api = &self.api;
        let response = api
            .exec
            .run_storing(
                &keys_of,
                "AddInstance",
                key,
                &req,
                |mut tx| {
                    let spec = spec.clone();
                    async move {
                        let now = api.exec.clock.now();
                        let (created, events) = cairn_instances::create_in(
                            &api.exec.store,
                            &api.exec.vault,
                            tx.conn().await?,
                            &spec,
                            now,
                        )
                        .await?;
                        let response = pb::AddInstanceResponse {
                            instance_id: created.instance_id.to_string(),
                            org_id: created.org_id.to_string(),
                            admin_user_id: created.admin_id.to_string(),
                            admin_token: created.token.to_string(),
                        };
                        Ok((tx, response, events.last().map(|e| e.position)))
                    }
                },
                without_token,
            )
            .await?;
        tracing::info!(instance = %response.instance_id, creator = %system.creator(), "instance added");
        Ok(Response::new(response))
    }

    async fn get_instance(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::GetInstanceResponse>, Status> {
        self.caller(&request)?;
        let id = instance_id("instance_id", &request.get_ref().instance_id)?;
        let record = registry::get(&self.api.exec.pool, id)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("instance"))?;
        Ok(Response::new(pb::GetInstanceResponse {
            instance: Some(to_pb(record)),
        }))
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        self.caller(&request)?;
        let req = request.into_inner();
        let state = match pb::InstanceState::try_from(req.state) {
            Ok(pb::InstanceState::Unspecified) => None,
            Ok(pb::InstanceState::Active) => Some(InstanceState::Active),
            Ok(pb::InstanceState::Inactive) => Some(InstanceState::Inactive),
            Ok(pb::InstanceState::Removed) => Some(InstanceState::Removed),
            Err(_) => return Err(ApiError::invalid("state", "unknown state").into()),
        };
        let query = ListQuery {
            name_contains: Some(req.name_contains).filter(|n| !n.is_empty()),
            state,
            offset: req.offset,
            limit: req.limit,
        };
        let (records, total) = registry::list(&self.api.exec.pool, &query)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListInstancesResponse {
            instances: records.into_iter().map(to_pb).collect(),
            total_result: total,
        }))
    }

    async fn update_instance(
        &self,
        request: Request<pb::UpdateInstanceRequest>,
    ) -> Result<Response<pb::InstanceResponse>, Status> {
        let system = self.caller(&request)?;
        let req = request.into_inner();
        let id = instance_id("instance_id", &req.instance_id)?;
        let store = &self.api.exec.store;
        let settings = req.settings.map(|s| InstanceSettings {
            email_code_ttl_secs: s.email_code_ttl_secs,
            email_code_max_attempts: s.email_code_max_attempts,
            scim_emails_verified: s.scim_emails_verified,
            default_language: s.default_language,
            scim_erase_on_delete: s.scim_erase_on_delete,
        });
        if let Some(settings) = &settings {
            settings.validate().map_err(ApiError::from)?;
        }
        if req.name.is_empty() && settings.is_none() && !req.set_limits {
            return Err(ApiError::invalid("name", "give a name, settings or limits to change").into());
        }
        let mut record = None;
        if !req.name.is_empty() {
            record = Some(
                registry::rename(store, id, &req.name, &system.creator())
                    .await
                    .map_err(ApiError::from)?,
            );
        }
        if settings.is_some() || req.set_limits {
            let limits = req.set_limits.then(|| Limits(req.limits.into_iter().collect()));
            record = Some(
                registry::set_settings(&self.api.exec.pool, id, settings.as_ref(), limits.as_ref())
                    .await
                    .map_err(ApiError::from)?,
            );
            // Callers carry their instance's settings from the token cache.
            self.api.auth.forget("*");
        }
        let record = record.ok_or(ApiError::NotFound("instance"))?;
        Ok(respond(record))
    }

    async fn deactivate_instance(
        &self,
        request: Request<pb::DeactivateInstanceRequest>,
    ) -> Result<Response<pb::InstanceResponse>, Status> {
        let system = self.caller(&request)?;
        let id = instance_id("instance_id", &request.get_ref().instance_id)?;
        let record = registry::deactivate(&self.api.exec.store, id, &system.creator())
            .await
            .map_err(ApiError::from)?;
        self.api.auth.forget("*");
        Ok(respond(record))
    }

    async fn reactivate_instance(
        &self,
        request: Request<pb::ReactivateInstanceRequest>,
    ) -> Result<Response<pb::InstanceResponse>, Status> {
        let system = self.caller(&request)?;
        let id = instance_id("instance_id", &request.get_ref().instance_id)?;
        let record = registry::reactivate(&self.api.exec.store, id, &system.creator())
            .await
            .map_err(ApiError::from)?;
        self.api.auth.forget("*");
        Ok(respond(record))
    }

    async fn remove_instance(
        &self,
        request: Request<pb::RemoveInstanceRequest>,
    ) -> Result<Response<pb::InstanceResponse>, Status> {
        let system = self.caller(&request)?;
        let id = instance_id("instance_id", &request.get_ref().instance_id)?;
        let erase = request.get_ref().erase_personal_data;
        let record = registry::remove(&self.api.exec.store, id, &system.creator(), erase)
            .await
            .map_err(ApiError::from)?;
        self.api.auth.forget("*");
        tracing::info!(instance = %id, creator = %system.creator(), erase, "instance removed");
        Ok(respond(record))
    }

    async fn add_instance_domain(
        &self,
        request: Request<pb::AddInstanceDomainRequest>,
    ) -> Result<Response<pb::InstanceResponse>, Status> {
        let system = self.caller(&request)?;
        let req = request.into_inner();
        let id = instance_id("instance_id", &req.instance_id)?;
        let record = registry::add_domain(&self.api.exec.store, id, &req.domain, &system.creator())
            .await
            .map_err(ApiError::from)?;
        Ok(respond(record))
    }

    async fn remove_instance_domain(
        &self,
        request: Request<pb::RemoveInstanceDomainRequest>,
    ) -> Result<Response<pb::InstanceResponse>, Status> {
        let system = self.caller(&request)?;
        let req = request.into_inner();
        let id = instance_id("instance_id", &req.instance_id)?;
        let record = registry::remove_domain(&self.api.exec.store, id, &req.domain, &system.creator())
            .await
            .map_err(ApiError::from)?;
        Ok(respond(record))
    }

    async fn list_instance_domains(
        &self,
        request: Request<pb::ListInstanceDomainsRequest>,
    ) -> Result<Response<pb::ListInstanceDomainsResponse>, Status> {
        self.caller(&request)?;
        let id = instance_id("instance_id", &request.get_ref().instance_id)?;
        let record = registry::get(&self.api.exec.pool, id)
            .await
            .map_err(ApiError::from)?
            .filter(|r| r.state != InstanceState::Removed)
            .ok_or(ApiError::NotFound("instance"))?;
        Ok(Response::new(pb::ListInstanceDomainsResponse {
            domains: record.domains,
        }))
    }
}
