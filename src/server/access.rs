//! Who may do what on the user API and the UI: the server's own token (the built-in `admin`),
//! named tokens with a role and namespaces, and what each role may do.
//!
//! A request is authorized before anything else about it is looked at: the token names a
//! caller, the caller's role must reach the verb's, and then the namespace must be one of the
//! caller's. Tokens are kept as SHA-256 digests, in the store and in memory here, so a revoke
//! takes effect on the next request.

use super::AppError;
use crate::store::{Store, StoreError, TokenRecord};
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

/// The name the server's own `api-token` acts under.
pub const ADMIN: &str = "admin";
/// The name of a caller without a token (reads on a loopback listener).
pub const ANONYMOUS: &str = "anonymous";

/// What a token may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything in its namespaces except secret values (which no answer carries).
    Viewer,
    /// Also approves, syncs, rolls back, restarts, runs CronJobs and reads logs.
    Deployer,
    /// Also execs, port-forwards, and manages tokens and nodes.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "viewer" => Role::Viewer,
            "deployer" => Role::Deployer,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// Empty: every namespace.
    namespaces: Vec<String>,
}

impl Caller {
    /// A caller known only by name, with no rights: who a refused request came from.
    pub fn named(name: String) -> Caller {
        Caller { name, role: Role::Viewer, namespaces: vec![String::new()] }
    }

    /// Whether the caller may see and act in `namespace`.
    pub fn sees(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// Whether the caller sees every namespace (cluster-wide objects are theirs to see).
    pub fn sees_all(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// For an action on an object in `namespace`: 403 when it is not the caller's, whether or
    /// not the object exists.
    pub fn may_act_in(&self, namespace: &str) -> Result<(), AppError> {
        if self.sees(namespace) {
            Ok(())
        } else {
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                format!("the token `{}` may not act in the namespace {namespace}", self.name),
            ))
        }
    }

    /// For what spans every namespace (commits and their plans, nodes, metrics): 403 for a
    /// caller kept to some namespaces.
    pub fn cluster_wide(&self, what: &str) -> Result<(), AppError> {
        if self.sees_all() {
            Ok(())
        } else {
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the token `{}` is kept to the namespaces {}; {what} spans every namespace",
                    self.name,
                    self.namespaces.join(", ")
                ),
            ))
        }
    }

    /// Keeps the items of a JSON list whose `namespace` the caller sees, as [`Caller::visible`].
    pub fn visible_value(&self, mut value: serde_json::Value) -> serde_json::Value {
        if let (serde_json::Value::Array(items), false) = (&mut value, self.sees_all()) {
            items.retain(|item| self.sees_item(item));
        }
        value
    }

    /// Whether a listed item (as JSON) is in one of the caller's namespaces.
    fn sees_item(&self, item: &serde_json::Value) -> bool {
        item.get("namespace").and_then(serde_json::Value::as_str).is_some_and(|n| self.sees(n))
    }

    /// Keeps the items whose `namespace` the caller sees; items without one are kept only for
    /// a caller who sees every namespace.
    pub fn visible<T: serde::Serialize>(&self, items: Vec<T>) -> Vec<T> {
        if self.sees_all() {
            return items;
        }
        items.into_iter().filter(|item| serde_json::to_value(item).is_ok_and(|v| self.sees_item(&v))).collect()
    }
}

/// Who may do what on the user API.
#[derive(Clone)]
pub struct Access {
    admin_digest: [u8; 32],
    /// True on a non-loopback listener: reads need a token too.
    reads_need_token: bool,
    /// The shared secret of the Git host's webhook, when one is configured.
    pub(crate) webhook_secret: Option<Arc<str>>,
    /// Live named tokens by digest.
    tokens: Arc<RwLock<HashMap<[u8; 32], TokenRecord>>>,
}

/// A new token: 32 random bytes, hex, behind a prefix that says what it is.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("berth_{}", hex::encode(bytes))
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Access {
    pub fn new(token: &str, reads_need_token: bool, webhook_secret: Option<&str>) -> Access {
        Access {
            admin_digest: digest(token),
            reads_need_token,
            webhook_secret: webhook_secret.map(Arc::from),
            tokens: Arc::default(),
        }
    }

    /// Loads the named tokens the store keeps; revoked ones are left out.
    pub async fn load_tokens(&self, store: &Store) -> Result<(), StoreError> {
        let live = store.tokens().await?.into_iter().filter(|t| t.revoked_at.is_none());
        *self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner) = live.map(|t| (t.digest, t)).collect();
        Ok(())
    }

    /// Makes a token known at once (after the store has it).
    pub fn add(&self, token: TokenRecord) {
        self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(token.digest, token);
    }

    /// Forgets the token `name` at once.
    pub fn revoke(&self, name: &str) {
        self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, t| t.name != name);
    }

    /// Whether reads need a token (a listener that is not loopback).
    pub fn reads_need_token(&self) -> bool {
        self.reads_need_token
    }

    /// The caller `token` names, if it is a live token; the admin token is compared in
    /// constant time, a named one is found by its digest.
    pub fn identify(&self, token: &str, now: i64) -> Result<Caller, AppError> {
        let presented = digest(token);
        if bool::from(presented.ct_eq(&self.admin_digest)) {
            return Ok(Caller { name: ADMIN.to_owned(), role: Role::Admin, namespaces: Vec::new() });
        }
        let tokens = self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let wrong = || {
            AppError::new(
                StatusCode::UNAUTHORIZED,
                "the API token is wrong or revoked; use the server's api-token file or a token from `berth token create`",
            )
        };
        // Found by its digest: what is compared is never the token itself.
        let found = tokens.get(&presented).ok_or_else(wrong)?;
        if found.expires_at.is_some_and(|at| at <= now) {
            return Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                format!("the token `{}` has expired; ask an admin for a new one (`berth token create`)", found.name),
            ));
        }
        let role = Role::parse(&found.role).unwrap_or(Role::Viewer);
        Ok(Caller { name: found.name.clone(), role, namespaces: found.namespaces.clone() })
    }

    /// What the audit log calls whoever presented `token`: its name, or that it was wrong or
    /// missing.
    pub fn name_of(&self, token: Option<&str>) -> String {
        match token {
            Some(token) => self.identify(token, super::now()).map_or_else(|_| "(a wrong token)".to_owned(), |c| c.name),
            None => "(no token)".to_owned(),
        }
    }

    /// Whether `token` names a live token.
    pub fn accepts(&self, token: &str) -> bool {
        self.identify(token, super::now()).is_ok()
    }

    /// The caller of a request that needs `role` to do `what` (`approving`, `reading logs`), from its
    /// bearer token; without one, reads on loopback are an anonymous viewer's.
    pub fn authorize(&self, headers: &HeaderMap, role: Role, what: &str) -> Result<Caller, AppError> {
        self.authorize_token(super::agent_api::bearer(headers).ok(), role, what)
    }

    /// [`Access::authorize`] for a token given otherwise (the UI's form), or none.
    pub fn authorize_token(&self, token: Option<&str>, role: Role, what: &str) -> Result<Caller, AppError> {
        let caller = match token {
            Some(token) => self.identify(token, super::now())?,
            None if role == Role::Viewer && !self.reads_need_token => {
                Caller { name: ANONYMOUS.to_owned(), role: Role::Viewer, namespaces: Vec::new() }
            }
            None => {
                return Err(AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "this needs the API token, or a named one from `berth token create`: set BERTH_TOKEN, or pass --token-file (the server wrote its own to api-token in its state folder)",
                ));
            }
        };
        if caller.role < role {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the token `{}` is a {}; {what} needs a {} token",
                    caller.name,
                    caller.role.as_str(),
                    if role == Role::Admin { "admin" } else { "deployer or admin" }
                ),
            ));
        }
        Ok(caller)
    }

    /// A read: any token, or none on loopback.
    pub fn read(&self, headers: &HeaderMap) -> Result<Caller, AppError> {
        self.authorize(headers, Role::Viewer, "reading")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    fn record(name: &str, token: &str, role: Role, namespaces: &[&str], expires_at: Option<i64>) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            digest: digest(token),
            role: role.as_str().into(),
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            created_at: 0,
            expires_at,
            revoked_at: None,
        }
    }

    #[test]
    fn roles_reach_their_verbs_and_revoked_or_expired_tokens_do_not() {
        let access = Access::new("root", true, None);
        access.add(record("view", "v", Role::Viewer, &["shop"], None));
        access.add(record("ci", "d", Role::Deployer, &[], None));
        access.add(record("old", "o", Role::Admin, &[], Some(1)));
        assert_eq!(access.read(&bearer("root")).unwrap().name, ADMIN);
        let viewer = access.read(&bearer("v")).unwrap();
        assert!(viewer.sees("shop") && !viewer.sees("bank"));
        assert_eq!(
            access.authorize(&bearer("v"), Role::Deployer, "approving").unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(access.authorize(&bearer("d"), Role::Deployer, "approving").is_ok());
        assert_eq!(access.authorize(&bearer("d"), Role::Admin, "exec").unwrap_err().status, StatusCode::FORBIDDEN);
        let expired = access.read(&bearer("o")).unwrap_err();
        assert!(expired.status == StatusCode::UNAUTHORIZED && expired.message.contains("expired"), "{expired:?}");
        assert_eq!(access.read(&HeaderMap::new()).unwrap_err().status, StatusCode::UNAUTHORIZED);
        access.revoke("ci");
        assert_eq!(access.read(&bearer("d")).unwrap_err().status, StatusCode::UNAUTHORIZED);
        // On loopback a read needs no token, but a wrong one is still refused.
        let open = Access::new("root", false, None);
        assert_eq!(open.read(&HeaderMap::new()).unwrap().name, ANONYMOUS);
        assert_eq!(open.read(&bearer("nope")).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            open.authorize(&HeaderMap::new(), Role::Deployer, "approving").unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }
}
