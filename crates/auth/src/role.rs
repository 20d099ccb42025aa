//! Roles a token carries and the permissions a call needs, with the one table that says which role
//! grants which permission ([`Role::grants`]). Every service asks the same table, so a role means
//! the same over gRPC, SCIM and REST.

use crate::AuthError;
use std::str::FromStr;

/// Roles a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything in the instance.
    InstanceAdmin,
    /// Everything in one organisation, and its settings.
    OrgAdmin,
    /// Users and groups.
    UserManager,
    /// Users and groups, as an identity provider over SCIM.
    ScimProvisioner,
    /// Reads only.
    ReadOnly,
}

impl Role {
    /// Every role, in the order they are documented.
    pub const ALL: [Role; 5] = [
        Self::InstanceAdmin,
        Self::OrgAdmin,
        Self::UserManager,
        Self::ScimProvisioner,
        Self::ReadOnly,
    ];

    /// The role's name as stored and as accepted in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InstanceAdmin => "instance_admin",
            Self::OrgAdmin => "org_admin",
            Self::UserManager => "user_manager",
            Self::ScimProvisioner => "scim_provisioner",
            Self::ReadOnly => "read_only",
        }
    }

    /// Whether this role allows calls that need `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        matches!(
            (self, permission),
            (Role::InstanceAdmin, _)
                | (_, Permission::Read)
                | (
                    Role::OrgAdmin,
                    Permission::ManageUsers | Permission::VouchForEmail | Permission::ManageOwnOrg
                )
                | (
                    Role::UserManager | Role::ScimProvisioner,
                    Permission::ManageUsers | Permission::VouchForEmail
                )
        )
    }
}

impl FromStr for Role {
    type Err = AuthError;

    /// Parses a role name; an unknown one is an invalid `roles` field.
    fn from_str(s: &str) -> Result<Self, AuthError> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| AuthError::Invalid {
                field: "roles",
                reason: format!(
                    "unknown role {s:?}; use instance_admin, org_admin, user_manager, scim_provisioner or read_only"
                ),
            })
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read users, groups, organisations.
    Read,
    /// Create and change users and groups.
    ManageUsers,
    /// Vouch for an email address or receive a verification code.
    VouchForEmail,
    /// Change an organisation's own settings (name, domains).
    ManageOwnOrg,
    /// Create and remove organisations, manage tokens, SMTP settings, projections.
    AdministerInstance,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_parses_from_its_own_name_and_nothing_else_parses() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        let error = "root".parse::<Role>().unwrap_err();
        assert!(
            matches!(&error, AuthError::Invalid { field: "roles", reason } if reason.contains("\"root\"")),
            "{error:?}"
        );
    }

    #[test]
    fn the_grant_table_is_the_documented_one() {
        use Permission::*;
        let all = [Read, ManageUsers, VouchForEmail, ManageOwnOrg, AdministerInstance];
        let granted = |role: Role| {
            all.iter()
                .copied()
                .filter(|p| role.grants(*p))
                .collect::<Vec<_>>()
        };
        assert_eq!(granted(Role::InstanceAdmin), all.to_vec());
        assert_eq!(
            granted(Role::OrgAdmin),
            vec![Read, ManageUsers, VouchForEmail, ManageOwnOrg]
        );
        assert_eq!(granted(Role::UserManager), vec![Read, ManageUsers, VouchForEmail]);
        assert_eq!(
            granted(Role::ScimProvisioner),
            vec![Read, ManageUsers, VouchForEmail]
        );
        assert_eq!(granted(Role::ReadOnly), vec![Read]);
    }
}
