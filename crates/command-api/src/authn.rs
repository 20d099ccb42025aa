//! command-api's side of authentication (tokens, callers and roles are `cairn-auth`'s).
//!
//! - [`AuthnLayer`]: every gRPC call is authenticated at the edge of the server, before its handler
//!   runs, so no handler can validate, look up or answer anything for a caller without a valid
//!   token, whatever order its own code checks things in. The caller found is handed to the handler
//!   in the request's extensions ([`crate::api::Api::caller`] takes it from there). The system
//!   API (`cairn.system.v1.SystemService`) admits system tokens only, and every other service
//!   instance tokens only. Health checks and server reflection stay open.
//! - [`CallerExt`]: what command-api's handlers ask of a [`Caller`] in their own terms: a permission
//!   check as an [`ApiError`], and the read scope of the query crate.

use crate::api::Api;
use crate::error::ApiError;
use cairn_auth::{Caller, Permission};
use cairn_readmodel::Scope;
use futures::future::BoxFuture;
use std::task::{Context, Poll};

/// command-api's view of a [`Caller`]; see the [module documentation](self).
pub trait CallerExt {
    /// Refuses with `PERMISSION_DENIED` unless one of the caller's roles grants `permission`.
    fn require(&self, permission: Permission) -> Result<(), ApiError>;
    /// Where the caller's reads may look: its instance, and its organisation if it is bound to one.
    fn scope(&self) -> Scope;
}

impl CallerExt for Caller {
    fn require(&self, permission: Permission) -> Result<(), ApiError> {
        Ok(self.authorize(permission)?)
    }

    fn scope(&self) -> Scope {
        Scope {
            instance_id: self.instance_id.as_uuid(),
            org_id: self.org_id.map(|o| o.as_uuid()),
        }
    }
}

/// The layer; see the [module documentation](self).
#[derive(Clone)]
pub struct AuthnLayer {
    api: Api,
}

impl AuthnLayer {
    /// Authenticates with `api`'s token store.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

impl<S> tower::Layer<S> for AuthnLayer {
    type Service = Authn<S>;
    fn layer(&self, inner: S) -> Authn<S> {
        Authn {
            inner,
            api: self.api.clone(),
        }
    }
}

/// The service [`AuthnLayer`] wraps around the gRPC routes.
#[derive(Clone)]
pub struct Authn<S> {
    inner: S,
    api: Api,
}

fn is_system(path: &str) -> bool {
    path.starts_with("/cairn.system.v1.SystemService/")
}

fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B, R> tower::Service<http::Request<B>> for Authn<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if is_open(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The clone that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let api = self.api.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let now = api.exec.clock.now();
            // The system API takes system tokens only; every other service instance tokens only.
            let admitted = if is_system(request.uri().path()) {
                api.auth
                    .authenticate_system(header, now)
                    .await
                    .map(|system| request.extensions_mut().insert(system))
                    .map(drop)
            } else {
                api.auth
                    .authenticate(header, now)
                    .await
                    .map(|caller| request.extensions_mut().insert(caller))
                    .map(drop)
            };
            match admitted {
                Ok(()) => inner.call(request).await,
                Err(error) => Ok(tonic::Status::from(ApiError::from(error)).into_http()),
            }
        })
    }
}
