//! Actions: targets (where outbound calls go) and executions (which events and requests call which
//! targets). A [`Target`] is an aggregate of its own; the executions of an instance are one
//! [`Executions`] aggregate (its id is the instance's id), a map from [`Condition`] to an ordered
//! list of target ids. Delivery itself is the `actions` service's business; this module only decides
//! what may be configured and how an event or a request is matched to an execution.

use crate::aggregate::{Aggregate, Decision, EventPayload, accept, empty_payload, event_enum};
use crate::{AggregateId, DomainError, EventType, StoredEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Unique kind: a target's lower-cased name, unique per instance.
pub const UNIQUE_TARGET_NAME: &str = "action.target.name";
/// The longest target name.
pub const MAX_TARGET_NAME: usize = 200;
/// The most targets one execution may call.
pub const MAX_EXECUTION_TARGETS: usize = 20;
/// The most executions one instance may configure.
pub const MAX_EXECUTIONS: usize = 500;

/// How a target is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Only the response status counts.
    Webhook,
    /// The response body is used (request conditions may read it).
    Call,
    /// Fire and forget: called, logged, never retried and never waited for.
    Async,
}

impl TargetKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Call => "call",
            Self::Async => "async",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "webhook" => Some(Self::Webhook),
            "call" => Some(Self::Call),
            "async" => Some(Self::Async),
            _ => None,
        }
    }
}

/// A target's settings, as added or changed (the secret travels separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetSettings {
    /// The name, unique per instance (case-insensitively).
    pub name: String,
    /// The endpoint URL (`http` or `https`), checked by the service before it decides.
    pub endpoint: String,
    /// How it is called.
    pub kind: TargetKind,
    /// The time one call may take.
    pub timeout_ms: u32,
    /// For request conditions: a failed call stops the request.
    pub interrupt_on_error: bool,
    /// Deliver every event in global order rather than in order per aggregate.
    pub strict_order: bool,
}

impl TargetSettings {
    /// Checks what the domain can check without I/O.
    pub fn validate(&self) -> Result<(), DomainError> {
        let mut violations = crate::Violations::new();
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_TARGET_NAME || name != self.name {
            violations.push(
                "name",
                format!("must be 1 to {MAX_TARGET_NAME} characters without surrounding spaces"),
            );
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            violations.push("timeout", "must be between 1 ms and 60 s");
        }
        violations.into_result()
    }
}

/// `action.target.added`: the settings and the sealed signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetAdded {
    /// The settings.
    #[serde(flatten)]
    pub settings: TargetSettings,
    /// The signing secret sealed by the keyring (`{keyId, nonce, ciphertext}`).
    pub secret: serde_json::Value,
}

/// `action.target.changed`: the settings after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetChanged {
    /// The settings.
    #[serde(flatten)]
    pub settings: TargetSettings,
}

/// `action.target.secret.rotated`: a new secret; the previous one stays valid (and is signed
/// with as well) until `previous_expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetSecretRotated {
    /// The new secret, sealed.
    pub secret: serde_json::Value,
    /// When the previous secret stops being used.
    pub previous_expires_at: chrono::DateTime<chrono::Utc>,
}

/// `action.target.disabled`: why (an administrator, a `410 Gone`, a failure period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDisabled {
    /// Why the target was disabled.
    pub reason: String,
}

empty_payload! {
    /// `action.target.enabled`: `{}`.
    TargetEnabled = "action.target.enabled";
    /// `action.target.removed`: `{}`.
    TargetRemoved = "action.target.removed";
}

impl EventPayload for TargetAdded {
    const EVENT_TYPE: &'static str = "action.target.added";
}
impl EventPayload for TargetChanged {
    const EVENT_TYPE: &'static str = "action.target.changed";
}
impl EventPayload for TargetSecretRotated {
    const EVENT_TYPE: &'static str = "action.target.secret.rotated";
}
impl EventPayload for TargetDisabled {
    const EVENT_TYPE: &'static str = "action.target.disabled";
}

event_enum! {
    /// Every event of a target.
    TargetEvent {
        Added(TargetAdded),
        Changed(TargetChanged),
        SecretRotated(TargetSecretRotated),
        Disabled(TargetDisabled),
        Enabled(TargetEnabled),
        Removed(TargetRemoved),
    }
}

/// The life of a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Never added.
    #[default]
    Absent,
    /// Called.
    Active,
    /// Not called; its deliveries wait.
    Disabled,
    /// Removed for good.
    Removed,
}

/// A target as rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    sequence: i64,
    state: TargetState,
    settings: Option<TargetSettings>,
}

impl Aggregate for Target {
    const TYPE: &'static str = "action.target";
    const SNAPSHOT_VERSION: i32 = 1;

    fn apply(&mut self, event: &StoredEvent) -> Result<(), DomainError> {
        if !accept(self, event)? {
            return Ok(());
        }
        match TargetEvent::decode(event)? {
            TargetEvent::Added(e) => {
                self.settings = Some(e.settings);
                self.state = TargetState::Active;
            }
            TargetEvent::Changed(e) => self.settings = Some(e.settings),
            TargetEvent::SecretRotated(_) => {}
            TargetEvent::Disabled(_) => self.state = TargetState::Disabled,
            TargetEvent::Enabled(_) => self.state = TargetState::Active,
            TargetEvent::Removed(_) => self.state = TargetState::Removed,
        }
        self.sequence = event.sequence;
        Ok(())
    }

    fn sequence(&self) -> i64 {
        self.sequence
    }
}

fn name_key(name: &str) -> String {
    name.to_lowercase()
}

impl Target {
    /// The state.
    pub fn state(&self) -> TargetState {
        self.state
    }

    /// The settings, once added.
    pub fn settings(&self) -> Option<&TargetSettings> {
        self.settings.as_ref()
    }

    fn existing(&self) -> Result<&TargetSettings, DomainError> {
        match (&self.state, &self.settings) {
            (TargetState::Active | TargetState::Disabled, Some(settings)) => Ok(settings),
            _ => Err(DomainError::NotFound),
        }
    }

    /// Adds the target with its sealed secret; claims its name.
    pub fn add(&self, settings: TargetSettings, secret: serde_json::Value) -> Result<Decision, DomainError> {
        if self.state != TargetState::Absent {
            return Err(DomainError::already_exists("target"));
        }
        settings.validate()?;
        let key = name_key(&settings.name);
        Ok(Decision::none()
            .event(&TargetAdded { settings, secret })?
            .claim(UNIQUE_TARGET_NAME, key))
    }

    /// Changes the settings (all of them, as given); renames move the name's claim.
    pub fn change(&self, settings: TargetSettings) -> Result<Decision, DomainError> {
        let current = self.existing()?;
        settings.validate()?;
        if *current == settings {
            return Ok(Decision::none());
        }
        let (old, new) = (name_key(&current.name), name_key(&settings.name));
        let mut decision = Decision::none().event(&TargetChanged { settings })?;
        if old != new {
            decision = decision
                .release(UNIQUE_TARGET_NAME, old)
                .claim(UNIQUE_TARGET_NAME, new);
        }
        Ok(decision)
    }

    /// Rotates the signing secret.
    pub fn rotate_secret(
        &self,
        secret: serde_json::Value,
        previous_expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Decision, DomainError> {
        self.existing()?;
        Decision::none().event(&TargetSecretRotated {
            secret,
            previous_expires_at,
        })
    }

    /// Disables the target; nothing if it is disabled already.
    pub fn disable(&self, reason: &str) -> Result<Decision, DomainError> {
        self.existing()?;
        if self.state == TargetState::Disabled {
            return Ok(Decision::none());
        }
        Decision::none().event(&TargetDisabled {
            reason: reason.to_owned(),
        })
    }

    /// Enables the target; nothing if it is active.
    pub fn enable(&self) -> Result<Decision, DomainError> {
        self.existing()?;
        if self.state == TargetState::Active {
            return Ok(Decision::none());
        }
        Decision::none().event(&TargetEnabled {})
    }

    /// Removes the target and frees its name.
    pub fn remove(&self) -> Result<Decision, DomainError> {
        let current = self.existing()?;
        Ok(Decision::none()
            .event(&TargetRemoved {})?
            .release(UNIQUE_TARGET_NAME, name_key(&current.name)))
    }
}

/// What an execution reacts to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    /// Every event.
    AllEvents,
    /// Events whose type starts with the group followed by a dot (`user.human` for `user.human.*`).
    EventGroup(String),
    /// One event type.
    Event(EventType),
    /// Every command-api request.
    AllRequests,
    /// Every method of one gRPC service (`cairn.user.v1.UserService`).
    Service(String),
    /// One gRPC method (`/cairn.user.v1.UserService/AddHumanUser`).
    Method(String),
}

impl Condition {
    /// Parses the stored and API form: `event:*`, `event:user.human.*`, `event:user.human.added`,
    /// `request:*`, `request:cairn.user.v1.UserService`, `request:/cairn.user.v1.UserService/AddHumanUser`
    /// (the leading slash of a method may be left out).
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let invalid = |why: &str| DomainError::invalid("condition", why);
        if let Some(rest) = value.strip_prefix("event:") {
            if rest == "*" {
                return Ok(Self::AllEvents);
            }
            if let Some(group) = rest.strip_suffix(".*") {
                EventType::parse(group).map_err(|_| {
                    invalid("an event group is lower-case dotted names followed by .*, such as user.human.*")
                })?;
                return Ok(Self::EventGroup(group.to_owned()));
            }
            return EventType::parse(rest)
                .map(Self::Event)
                .map_err(|_| invalid("an event type is lower-case dotted names, such as user.human.added"));
        }
        if let Some(rest) = value.strip_prefix("request:") {
            if rest == "*" {
                return Ok(Self::AllRequests);
            }
            let name_ok = |s: &str| {
                !s.is_empty()
                    && s.split('.').all(|part| {
                        !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
            };
            let path = rest.strip_prefix('/').unwrap_or(rest);
            return match path.split_once('/') {
                Some((service, method))
                    if name_ok(service)
                        && !method.is_empty()
                        && method.chars().all(|c| c.is_ascii_alphanumeric()) =>
                {
                    Ok(Self::Method(format!("/{service}/{method}")))
                }
                None if name_ok(path) && path.contains('.') => Ok(Self::Service(path.to_owned())),
                _ => Err(invalid(
                    "a request condition is *, a gRPC service such as cairn.user.v1.UserService, or a method such as /cairn.user.v1.UserService/AddHumanUser",
                )),
            };
        }
        Err(invalid("must start with event: or request:"))
    }

    /// The stored form (see [`Condition::parse`]).
    pub fn as_string(&self) -> String {
        match self {
            Self::AllEvents => "event:*".into(),
            Self::EventGroup(group) => format!("event:{group}.*"),
            Self::Event(t) => format!("event:{t}"),
            Self::AllRequests => "request:*".into(),
            Self::Service(s) => format!("request:{s}"),
            Self::Method(m) => format!("request:{m}"),
        }
    }

    /// Whether this is a request condition.
    pub fn is_request(&self) -> bool {
        matches!(self, Self::AllRequests | Self::Service(_) | Self::Method(_))
    }

    /// How specific a matching condition is (higher wins); `None` when it does not match the event
    /// type. An exact type beats every group, a longer group beats a shorter one, and "all" comes last.
    pub fn event_specificity(&self, event_type: &str) -> Option<usize> {
        match self {
            Self::Event(t) if t.as_str() == event_type => Some(usize::MAX),
            Self::EventGroup(group)
                if event_type.len() > group.len()
                    && event_type.starts_with(group.as_str())
                    && event_type.as_bytes()[group.len()] == b'.' =>
            {
                Some(group.len() + 1)
            }
            Self::AllEvents => Some(0),
            _ => None,
        }
    }

    /// How specific a matching request condition is for the gRPC path `/<service>/<method>`.
    pub fn request_specificity(&self, path: &str) -> Option<usize> {
        match self {
            Self::Method(m) if m == path => Some(2),
            Self::Service(s)
                if path
                    .strip_prefix('/')
                    .and_then(|p| p.split_once('/'))
                    .map(|(svc, _)| svc)
                    == Some(s.as_str()) =>
            {
                Some(1)
            }
            Self::AllRequests => Some(0),
            _ => None,
        }
    }
}

/// The most specific of `conditions` that matches `event_type`, as ZITADEL picks it.
pub fn most_specific_event<'a, T>(
    conditions: impl IntoIterator<Item = (&'a Condition, T)>,
    event_type: &str,
) -> Option<T> {
    conditions
        .into_iter()
        .filter_map(|(c, t)| c.event_specificity(event_type).map(|s| (s, t)))
        .max_by_key(|(s, _)| *s)
        .map(|(_, t)| t)
}

/// The most specific of `conditions` that matches the gRPC `path`.
pub fn most_specific_request<'a, T>(
    conditions: impl IntoIterator<Item = (&'a Condition, T)>,
    path: &str,
) -> Option<T> {
    conditions
        .into_iter()
        .filter_map(|(c, t)| c.request_specificity(path).map(|s| (s, t)))
        .max_by_key(|(s, _)| *s)
        .map(|(_, t)| t)
}

/// `action.execution.set`: the condition and its targets, in call order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionSet {
    /// The condition's stored form.
    pub condition: String,
    /// The targets, in order.
    pub targets: Vec<AggregateId>,
}

/// `action.execution.removed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRemoved {
    /// The condition's stored form.
    pub condition: String,
}

impl EventPayload for ExecutionSet {
    const EVENT_TYPE: &'static str = "action.execution.set";
}
impl EventPayload for ExecutionRemoved {
    const EVENT_TYPE: &'static str = "action.execution.removed";
}

event_enum! {
    /// Every event of an instance's executions.
    ExecutionEvent {
        Set(ExecutionSet),
        Removed(ExecutionRemoved),
    }
}

/// An instance's executions (the aggregate's id is the instance's id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Executions {
    sequence: i64,
    executions: BTreeMap<String, Vec<AggregateId>>,
}

impl Aggregate for Executions {
    const TYPE: &'static str = "action.execution";
    const SNAPSHOT_VERSION: i32 = 1;

    fn apply(&mut self, event: &StoredEvent) -> Result<(), DomainError> {
        if !accept(self, event)? {
            return Ok(());
        }
        match ExecutionEvent::decode(event)? {
            ExecutionEvent::Set(e) => {
                self.executions.insert(e.condition, e.targets);
            }
            ExecutionEvent::Removed(e) => {
                self.executions.remove(&e.condition);
            }
        }
        self.sequence = event.sequence;
        Ok(())
    }

    fn sequence(&self) -> i64 {
        self.sequence
    }
}

impl Executions {
    /// The executions, by condition.
    pub fn all(&self) -> &BTreeMap<String, Vec<AggregateId>> {
        &self.executions
    }

    /// Sets `condition` to call `targets` in order (each must exist: the caller checks that).
    pub fn set(&self, condition: &Condition, targets: Vec<AggregateId>) -> Result<Decision, DomainError> {
        if targets.is_empty() || targets.len() > MAX_EXECUTION_TARGETS {
            return Err(DomainError::invalid(
                "targets",
                format!("must name 1 to {MAX_EXECUTION_TARGETS} targets"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if !targets.iter().all(|t| seen.insert(*t)) {
            return Err(DomainError::invalid("targets", "names a target twice"));
        }
        let key = condition.as_string();
        if self.executions.get(&key) == Some(&targets) {
            return Ok(Decision::none());
        }
        if !self.executions.contains_key(&key) && self.executions.len() >= MAX_EXECUTIONS {
            return Err(DomainError::precondition(format!(
                "an instance may have at most {MAX_EXECUTIONS} executions"
            )));
        }
        Decision::none().event(&ExecutionSet {
            condition: key,
            targets,
        })
    }

    /// Removes `condition`'s execution.
    pub fn remove(&self, condition: &Condition) -> Result<Decision, DomainError> {
        let key = condition.as_string();
        if !self.executions.contains_key(&key) {
            return Err(DomainError::NotFound);
        }
        Decision::none().event(&ExecutionRemoved { condition: key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Condition {
        Condition::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn conditions_round_trip_and_bad_ones_say_why() {
        for s in [
            "event:*",
            "event:user.*",
            "event:user.human.*",
            "event:user.human.added",
            "request:*",
            "request:cairn.user.v1.UserService",
            "request:/cairn.user.v1.UserService/AddHumanUser",
        ] {
            assert_eq!(c(s).as_string(), s);
        }
        assert_eq!(
            c("request:cairn.user.v1.UserService/AddHumanUser").as_string(),
            "request:/cairn.user.v1.UserService/AddHumanUser"
        );
        for bad in [
            "user.added",
            "event:",
            "event:User.Added",
            "event:.*",
            "request:",
            "request:/x/",
            "request:a/b/c",
        ] {
            assert!(
                matches!(Condition::parse(bad), Err(DomainError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_most_specific_event_condition_wins() {
        let all = c("event:*");
        let user = c("event:user.*");
        let human = c("event:user.human.*");
        let exact = c("event:user.human.added");
        let list = [(&all, 0), (&user, 1), (&human, 2), (&exact, 3)];
        assert_eq!(most_specific_event(list, "user.human.added"), Some(3));
        assert_eq!(most_specific_event(list, "user.human.removed"), Some(2));
        assert_eq!(most_specific_event(list, "user.removed"), Some(1));
        assert_eq!(most_specific_event(list, "group.added"), Some(0));
        // `user.*` does not match `username.changed`, nor the bare group name.
        assert_eq!(most_specific_event([(&user, 1)], "username.changed"), None);
        assert_eq!(most_specific_event([(&user, 1)], "user"), None);
    }

    #[test]
    fn the_most_specific_request_condition_wins() {
        let all = c("request:*");
        let svc = c("request:cairn.user.v1.UserService");
        let m = c("request:/cairn.user.v1.UserService/AddHumanUser");
        let list = [(&all, 0), (&svc, 1), (&m, 2)];
        assert_eq!(
            most_specific_request(list, "/cairn.user.v1.UserService/AddHumanUser"),
            Some(2)
        );
        assert_eq!(
            most_specific_request(list, "/cairn.user.v1.UserService/GetUser"),
            Some(1)
        );
        assert_eq!(
            most_specific_request(list, "/cairn.group.v1.GroupService/AddGroup"),
            Some(0)
        );
        assert_eq!(
            most_specific_request([(&svc, 1)], "/cairn.user.v1.UserServiceX/A"),
            None
        );
    }
}
