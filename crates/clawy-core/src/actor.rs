//! Who acts, and from where: the privilege tiers of API keys, the kinds of actor the
//! audit log names, and the client a request came from. Every state-changing domain
//! call takes an [`Actor`] so it can write the audit log (ACCESS-3).
//!
//! A leaf module (it imports only `names`), so the account, key, session, throttle
//! and audit modules can all use these types without importing each other.
//! (The server's `Caller` is the authenticated HTTP caller; it turns itself into an
//! [`Actor`] for domain calls.)

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::names::truncate_chars;

/// API key tiers, ordered: `Read < Manage < Admin` (AUTH-2).
/// read = GET own resources; manage = + lifecycle of own resources (instances, SSH
/// keys); admin = + API keys and account settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Read,
    Manage,
    Admin,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Read, Tier::Manage, Tier::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Read => "read",
            Tier::Manage => "manage",
            Tier::Admin => "admin",
        }
    }
    pub fn letter(self) -> char {
        match self {
            Tier::Read => 'r',
            Tier::Manage => 'm',
            Tier::Admin => 'a',
        }
    }
    pub fn from_letter(c: char) -> Option<Tier> {
        match c {
            'r' => Some(Tier::Read),
            'm' => Some(Tier::Manage),
            'a' => Some(Tier::Admin),
            _ => None,
        }
    }
    /// True if a key of this tier may do what `needed` requires.
    pub fn allows(self, needed: Tier) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of actor did something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorKind {
    /// Not signed in (signup, login attempts, report form).
    Anonymous,
    /// The platform itself (admin CLI, background jobs).
    System,
    /// A person signed in with a web session.
    User { user_id: String, email: String },
    /// A request authenticated with an API key.
    ApiKey {
        user_id: String,
        key_id: String,
        prefix: String,
        tier: Tier,
    },
    /// An operator acting on someone else's account or instance.
    Operator { user_id: String, email: String },
    /// The control plane's reconciler (ACCESS-3: its repairs are instance events).
    Reconciler,
}

impl ActorKind {
    /// The stored actor text: `user:<email>`, `api_key:<prefix>`, `operator:<email>`,
    /// `system`, `anonymous`, `reconciler`.
    pub fn describe(&self) -> String {
        match self {
            ActorKind::Anonymous => "anonymous".to_string(),
            ActorKind::System => "system".to_string(),
            ActorKind::Reconciler => "reconciler".to_string(),
            ActorKind::User { email, .. } => format!("user:{email}"),
            ActorKind::ApiKey { prefix, .. } => format!("api_key:{prefix}"),
            ActorKind::Operator { email, .. } => format!("operator:{email}"),
        }
    }

    /// The user the actor acts as, if any.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            ActorKind::User { user_id, .. }
            | ActorKind::ApiKey { user_id, .. }
            | ActorKind::Operator { user_id, .. } => Some(user_id),
            ActorKind::Anonymous | ActorKind::System | ActorKind::Reconciler => None,
        }
    }

    /// The API-key tier of the actor; `None` for web sessions and the system, which
    /// have the full rights of their account.
    pub fn api_key_tier(&self) -> Option<Tier> {
        match self {
            ActorKind::ApiKey { tier, .. } => Some(*tier),
            _ => None,
        }
    }
}

/// Where a request came from (the client address as resolved by
/// [`crate::config::ServerConfig::resolve_client_addr`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub addr: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn new(addr: IpAddr, user_agent: Option<&str>) -> Self {
        ClientInfo {
            addr: Some(addr),
            user_agent: user_agent.map(|s| truncate_chars(s, 256)),
        }
    }
    pub fn none() -> Self {
        ClientInfo::default()
    }
    pub fn addr_string(&self) -> Option<String> {
        self.addr.map(|a| a.to_string())
    }
}

/// Who acts, from where: passed to every state-changing domain call so it can write
/// the audit log. Built by the surfaces (`User::actor`, `ApiKey::actor`, the server's
/// `Caller::actor`) or for the platform itself ([`Actor::system`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    pub client: ClientInfo,
}

impl Actor {
    pub fn new(kind: ActorKind, client: ClientInfo) -> Self {
        Actor { kind, client }
    }
    pub fn system() -> Self {
        Actor::new(ActorKind::System, ClientInfo::none())
    }
    pub fn reconciler() -> Self {
        Actor::new(ActorKind::Reconciler, ClientInfo::none())
    }
    pub fn anonymous(client: ClientInfo) -> Self {
        Actor::new(ActorKind::Anonymous, client)
    }
    /// An operator acting on someone else's objects (ACCESS-3: recorded as
    /// `operator:<email>`).
    pub fn operator(user_id: &str, email: &str, client: ClientInfo) -> Self {
        Actor::new(
            ActorKind::Operator {
                user_id: user_id.to_string(),
                email: email.to_string(),
            },
            client,
        )
    }
    /// The stored actor text (see [`ActorKind::describe`]).
    pub fn describe(&self) -> String {
        self.kind.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_and_round_trip_their_letters() {
        assert!(Tier::Read < Tier::Manage && Tier::Manage < Tier::Admin);
        for t in Tier::ALL {
            assert_eq!(Tier::from_letter(t.letter()), Some(t));
        }
        assert!(Tier::Admin.allows(Tier::Read));
        assert!(!Tier::Read.allows(Tier::Manage));
    }

    #[test]
    fn actors_describe_themselves_for_the_log() {
        let op = Actor::operator("u1", "o@x.test", ClientInfo::none());
        assert_eq!(op.describe(), "operator:o@x.test");
        assert_eq!(op.kind.user_id(), Some("u1"));
        assert_eq!(Actor::system().describe(), "system");
        assert_eq!(Actor::reconciler().kind.api_key_tier(), None);
    }
}
