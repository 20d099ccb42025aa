//! Who is calling, and what may they do: Cairn's authentication and authorisation, in one library
//! that every program uses and no service owns.
//!
//! command-api, the SCIM gateway, the notifier and the `cairn` command all deal with the same
//! bearer tokens. Before this crate, three of them imported command-api (a service) to resolve
//! them, and statements over `api.tokens` were written in four places. Now:
//!
//! - [`tokens`] holds every statement over `api.tokens`: issue (the plaintext is shown once, only
//!   its SHA-256 is stored), look up, list, revoke (announced on [`tokens::TOKEN_CHANNEL`] in the
//!   revoking transaction), and the domain id of a personal access token.
//! - [`Authenticator`] resolves `authorization: Bearer <token>` to a [`Caller`] (constant-time
//!   hash comparison, revoked and expired tokens refused), optionally through a cache that forgets
//!   a token as soon as its revocation is announced.
//! - [`Caller`], [`Role`] and [`Permission`]: the tenant, organisation, principal and roles a
//!   token carries, and the one table of which role grants which permission.
//!
//! The token format and hash are `cairn-secrets`' (pure, no I/O). Errors are [`AuthError`]s;
//! each service maps them at its edge. Nothing here depends on a transport or on a service.

mod authenticator;
mod caller;
mod error;
mod role;
pub mod tokens;

pub use authenticator::{Authenticator, RevocationListener};
pub use caller::{Caller, SystemCaller};
pub use error::AuthError;
pub use role::{Permission, Role};
pub use tokens::{Issued, NewToken, TokenKind, TokenRecord};
