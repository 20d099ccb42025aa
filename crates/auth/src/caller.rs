//! The authenticated caller: what a valid token resolves to. Every read and write a service does
//! for a request is scoped to the caller's instance (and organisation, when the token is bound to
//! one) and allowed by its roles.

use crate::{AuthError, Permission, Role};
use cairn_domain::{AggregateId, InstanceId, InstanceSettings};
use std::sync::Arc;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's id.
    pub token_id: String,
    /// The tenant.
    pub instance_id: InstanceId,
    /// The organisation the token is bound to, if any.
    pub org_id: Option<AggregateId>,
    /// The user the token acts as.
    pub principal_id: AggregateId,
    /// The token's roles.
    pub roles: Vec<Role>,
    /// The instance's own settings (`None` fields: the deployment's defaults), as of the token's
    /// lookup; a change of them makes every cache look the token up again.
    pub settings: Arc<InstanceSettings>,
}

impl Caller {
    /// Whether one of the caller's roles grants `permission`.
    pub fn allows(&self, permission: Permission) -> bool {
        self.roles.iter().any(|role| role.grants(permission))
    }

    /// [`AuthError::PermissionDenied`] unless one of the caller's roles grants `permission`.
    pub fn authorize(&self, permission: Permission) -> Result<(), AuthError> {
        if self.allows(permission) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied(
                "the token's roles do not allow this call",
            ))
        }
    }

    /// True when the caller may see resources of `org`.
    pub fn sees_org(&self, org: AggregateId) -> bool {
        self.org_id.is_none_or(|own| own == org)
    }

    /// The caller's id as recorded in events' `creator`.
    pub fn creator(&self) -> String {
        self.principal_id.to_string()
    }
}

/// A caller of the system API: a system token, which belongs to no instance.
#[derive(Debug, Clone)]
pub struct SystemCaller {
    /// The system token's id.
    pub token_id: String,
}

impl SystemCaller {
    /// The caller as recorded in events' `creator`: `system:<token id>`.
    pub fn creator(&self) -> String {
        format!("system:{}", self.token_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[Role], org: Option<AggregateId>) -> Caller {
        Caller {
            token_id: "0123456789abcdef01234567".into(),
            instance_id: InstanceId::new(),
            org_id: org,
            principal_id: AggregateId::new(),
            roles: roles.to_vec(),
            settings: Default::default(),
        }
    }

    #[test]
    fn a_caller_is_allowed_what_any_of_its_roles_grants() {
        let reader = caller(&[Role::ReadOnly], None);
        assert!(reader.authorize(Permission::Read).is_ok());
        assert!(matches!(
            reader.authorize(Permission::ManageUsers),
            Err(AuthError::PermissionDenied(_))
        ));
        let both = caller(&[Role::ReadOnly, Role::UserManager], None);
        assert!(both.allows(Permission::ManageUsers));
        assert!(!both.allows(Permission::AdministerInstance));
        assert!(!caller(&[], None).allows(Permission::Read));
    }

    #[test]
    fn a_caller_bound_to_an_organisation_sees_only_that_organisation() {
        let org = AggregateId::new();
        assert!(caller(&[Role::OrgAdmin], Some(org)).sees_org(org));
        assert!(!caller(&[Role::OrgAdmin], Some(org)).sees_org(AggregateId::new()));
        assert!(caller(&[Role::InstanceAdmin], None).sees_org(org));
    }
}
