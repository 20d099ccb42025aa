//! `cairn.org.v1.OrgService`.

use crate::api::Api;
use crate::authn::CallerExt;
use crate::convert::{Parser, details, min_position, opt, timestamp};
use crate::error::ApiError;
use crate::exec::{Plan, Written, already_exists};
use cairn_auth::{Caller, Permission};
use cairn_domain::{Aggregate, AggregateId, DisplayName, DomainName, Org, OrgState};
use cairn_proto::org::v1 as pb;
use cairn_proto::org::v1::org_service_server::OrgService;
use cairn_readmodel::reads::{self, Page};
use tonic::{Request, Response, Status};

/// The organisation service.
#[derive(Clone)]
pub struct Orgs {
    api: Api,
}

impl Orgs {
    /// The service over `api`.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

fn org_to_pb(org: &Org) -> pb::Org {
    pb::Org {
        id: org.id().map(|i| i.to_string()).unwrap_or_default(),
        name: org.name().map(|n| n.to_string()).unwrap_or_default(),
        state: match org.state() {
            OrgState::Active => pb::OrgState::Active,
            OrgState::Inactive => pb::OrgState::Inactive,
            _ => pb::OrgState::Unspecified,
        } as i32,
        primary_domain: org.primary_domain().map(|d| d.to_string()).unwrap_or_default(),
        domains: org
            .domains()
            .iter()
            .map(|d| pb::Domain {
                name: d.name.to_string(),
                verified: d.verified,
                primary: d.primary,
            })
            .collect(),
        created_at: None,
        changed_at: None,
        sequence: org.sequence(),
    }
}

fn org_id(value: &str) -> Result<AggregateId, ApiError> {
    let mut p = Parser::default();
    let id = p.id("org_id", value);
    p.finish()?;
    id.ok_or_else(|| ApiError::invalid("org_id", "is required"))
}

impl Orgs {
    async fn org_command<T: prost::Message>(
        &self,
        request: Request<T>,
        method: &'static str,
        id: AggregateId,
        permission: Permission,
        decide: impl Fn(&Org) -> Result<cairn_domain::Decision, ApiError> + Send + Sync,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(permission)?;
        if !caller.sees_org(id) {
            return Err(ApiError::NotFound("organisation").into());
        }
        let api = &self.api;
        let caller_ref: &Caller = &caller;
        let decide = &decide;
        let response = api
            .exec
            .run(
                &caller,
                method,
                Api::idempotency_key(&request),
                request.get_ref(),
                |mut tx| async move {
                    let written: Written<Org> = api
                        .exec
                        .change(&mut tx, caller_ref, id, None, |org: &Org| {
                            if !org.exists() {
                                return Err(ApiError::NotFound("organisation"));
                            }
                            Ok(Plan::new(decide(org)?, id))
                        })
                        .await?;
                    let response = pb::OrgResponse {
                        org: Some(org_to_pb(&written.state)),
                        details: Some(details(&written.events, written.state.sequence(), Some(id))),
                    };
                    Ok((tx, response, written.position()))
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    fn domain(value: &str) -> Result<DomainName, ApiError> {
        DomainName::parse(value).map_err(|e| ApiError::invalid("domain", e.to_string()))
    }
}

#[tonic::async_trait]
impl OrgService for Orgs {
    async fn add_org(
        &self,
        request: Request<pb::AddOrgRequest>,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::AdministerInstance)?;
        let req = request.get_ref().clone();
        let mut p = Parser::default();
        let name = p.parse("name", DisplayName::parse(req.name.clone()));
        let fresh = req.org_id.is_empty();
        let id = if req.org_id.is_empty() {
            Some(AggregateId::new())
        } else {
            p.id("org_id", &req.org_id)
        };
        p.finish()?;
        let (Some(name), Some(id)) = (name, id) else {
            return Err(ApiError::invalid("name", "is required").into());
        };
        let api = &self.api;
        let caller_ref = &caller;
        let name = &name;
        let response = api
            .exec
            .run(
                &caller,
                "AddOrg",
                Api::idempotency_key(&request),
                request.get_ref(),
                |mut tx| async move {
                    let written: Written<Org> = api
                        .exec
                        .change_new(&mut tx, caller_ref, id, Some(0), fresh, |org: &Org| {
                            Ok(Plan::new(org.add(name.clone())?, id))
                        })
                        .await
                        .map_err(already_exists("an organisation"))?;
                    let response = pb::OrgResponse {
                        org: Some(org_to_pb(&written.state)),
                        details: Some(details(&written.events, written.state.sequence(), Some(id))),
                    };
                    Ok((tx, response, written.position()))
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_org(
        &self,
        request: Request<pb::GetOrgRequest>,
    ) -> Result<Response<pb::GetOrgResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::Read)?;
        let req = request.into_inner();
        let id = org_id(&req.org_id)?;
        if !caller.sees_org(id) {
            return Err(ApiError::NotFound("organisation").into());
        }
        self.api
            .wait(&caller, &["orgs"], min_position(&req.min_position)?)
            .await?;
        let (row, domains) = reads::get_org(&self.api.exec.pool, caller.instance_id.as_uuid(), id.as_uuid())
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("organisation"))?;
        Ok(Response::new(pb::GetOrgResponse {
            org: Some(row_org(&row, domains)),
        }))
    }

    async fn list_orgs(
        &self,
        request: Request<pb::ListOrgsRequest>,
    ) -> Result<Response<pb::ListOrgsResponse>, Status> {
        let caller = self.api.caller(&request).await?;
        caller.require(Permission::Read)?;
        let req = request.into_inner();
        let position = min_position(&req.min_position)?;
        self.api.wait(&caller, &["orgs"], position).await?;
        let query = req.query.unwrap_or_default();
        let page = Page {
            offset: query.offset,
            limit: if query.limit == 0 {
                100
            } else {
                query.limit.min(1000)
            },
            ascending: query.asc || query.limit == 0,
        };
        let (rows, total) = reads::list_orgs(
            &self.api.exec.pool,
            caller.instance_id.as_uuid(),
            opt(&req.name).as_deref(),
            page,
        )
        .await
        .map_err(ApiError::from)?;
        let orgs = rows
            .iter()
            .filter(|row| caller.sees_org(AggregateId::from_uuid(row.id)))
            .map(|row| row_org(row, Vec::new()))
            .collect();
        Ok(Response::new(pb::ListOrgsResponse {
            orgs,
            details: Some(cairn_proto::common::v1::ListDetails {
                total_result: if caller.org_id.is_some() { 1 } else { total },
                processed_position: position.map(|p| p.to_string()).unwrap_or_default(),
            }),
        }))
    }

    async fn update_org(
        &self,
        request: Request<pb::UpdateOrgRequest>,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let req = request.get_ref().clone();
        let id = org_id(&req.org_id)?;
        let name =
            DisplayName::parse(req.name.clone()).map_err(|e| ApiError::invalid("name", e.to_string()))?;
        self.org_command(request, "UpdateOrg", id, Permission::ManageOwnOrg, move |o| {
            Ok(o.rename(name.clone())?)
        })
        .await
    }

    async fn deactivate_org(
        &self,
        request: Request<pb::OrgIdRequest>,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let id = org_id(&request.get_ref().org_id)?;
        self.org_command(
            request,
            "DeactivateOrg",
            id,
            Permission::AdministerInstance,
            |o| Ok(o.deactivate()?),
        )
        .await
    }

    async fn reactivate_org(
        &self,
        request: Request<pb::OrgIdRequest>,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let id = org_id(&request.get_ref().org_id)?;
        self.org_command(
            request,
            "ReactivateOrg",
            id,
            Permission::AdministerInstance,
            |o| Ok(o.reactivate()?),
        )
        .await
    }

    async fn remove_org(
        &self,
        request: Request<pb::OrgIdRequest>,
    ) -> Result<Response<pb::RemoveOrgResponse>, Status> {
        let id = org_id(&request.get_ref().org_id)?;
        let response = self
            .org_command(request, "RemoveOrg", id, Permission::AdministerInstance, |o| {
                Ok(o.remove()?)
            })
            .await?;
        Ok(Response::new(pb::RemoveOrgResponse {
            details: response.into_inner().details,
        }))
    }

    async fn add_domain(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let id = org_id(&request.get_ref().org_id)?;
        let domain = Self::domain(&request.get_ref().domain)?;
        self.org_command(request, "AddDomain", id, Permission::ManageOwnOrg, move |o| {
            Ok(o.add_domain(domain.clone())?)
        })
        .await
    }

    async fn verify_domain(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let id = org_id(&request.get_ref().org_id)?;
        let domain = Self::domain(&request.get_ref().domain)?;
        // Proving ownership (a DNS record or a file) is outside Cairn; an administrator attests it.
        self.org_command(
            request,
            "VerifyDomain",
            id,
            Permission::AdministerInstance,
            move |o| Ok(o.verify_domain(domain.clone())?),
        )
        .await
    }

    async fn set_primary_domain(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let id = org_id(&request.get_ref().org_id)?;
        let domain = Self::domain(&request.get_ref().domain)?;
        self.org_command(
            request,
            "SetPrimaryDomain",
            id,
            Permission::ManageOwnOrg,
            move |o| Ok(o.set_primary_domain(domain.clone())?),
        )
        .await
    }

    async fn remove_domain(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::OrgResponse>, Status> {
        let id = org_id(&request.get_ref().org_id)?;
        let domain = Self::domain(&request.get_ref().domain)?;
        self.org_command(request, "RemoveDomain", id, Permission::ManageOwnOrg, move |o| {
            Ok(o.remove_domain(domain.clone())?)
        })
        .await
    }
}

fn row_org(row: &cairn_readmodel::rows::OrgRow, domains: Vec<(String, bool, bool)>) -> pb::Org {
    pb::Org {
        id: row.id.to_string(),
        name: row.name.clone(),
        state: if row.state == "active" {
            pb::OrgState::Active
        } else {
            pb::OrgState::Inactive
        } as i32,
        primary_domain: row.primary_domain.clone().unwrap_or_default(),
        domains: domains
            .into_iter()
            .map(|(name, verified, primary)| pb::Domain {
                name,
                verified,
                primary,
            })
            .collect(),
        created_at: Some(timestamp(row.created_at)),
        changed_at: Some(timestamp(row.changed_at)),
        sequence: row.sequence,
    }
}
