//! Document presence: who is looking where, fanned out to every document
//! watcher in the cluster and never written to the Raft log.
//!
//! Every node keeps a table of live presences (its own clients' and those
//! gossiped by peers). A client's presence is set on the node it talks to,
//! which delivers it to its local watchers and gossips it once to every
//! other member; each member expires it on its own clock when it is not
//! refreshed within its TTL, and tells its watchers it is gone. A member
//! that was down simply misses presences until their next refresh.
//!
//! Bounds: at most [`MAX_PER_DOC`] presences per document (of which
//! [`MAX_PER_USER_PER_DOC`] for one user), [`MAX_PER_CLIENT`] documents per
//! client, [`MAX_PER_USER`] presences per user, [`MAX_PER_TENANT`] per tenant
//! and [`MAX_TOTAL`] per node; past them new presences are dropped (and
//! counted in `caddy_presence_dropped_total`). So one client, one user or
//! one tenant cannot take the table, or a document's slots, from the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use caddy_core::docs::Presence;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Presences kept per document.
pub const MAX_PER_DOC: usize = 256;
/// Presences kept per node.
pub const MAX_TOTAL: usize = 100_000;
/// Presences one tenant may hold on a node.
pub const MAX_PER_TENANT: usize = 10_000;
/// Presences one user may hold on a node (all their clients).
pub const MAX_PER_USER: usize = 512;
/// Clients of one user present in one document.
pub const MAX_PER_USER_PER_DOC: usize = 16;
/// Documents one client may be present in.
pub const MAX_PER_CLIENT: usize = 64;
/// Longest TTL a presence may ask for.
const MAX_TTL: Duration = Duration::from_secs(300);

/// A presence change, as watchers and peers receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PresenceMsg {
    /// Set or refreshed.
    Set(Presence),
    /// Left, or expired.
    Gone {
        /// Tenant.
        tenant: String,
        /// Document.
        doc: String,
        /// Who.
        user: String,
        /// Which client.
        client: u64,
    },
}

impl PresenceMsg {
    /// The document it is about.
    pub fn doc(&self) -> (&str, &str) {
        match self {
            PresenceMsg::Set(p) => (&p.tenant, &p.doc),
            PresenceMsg::Gone { tenant, doc, .. } => (tenant, doc),
        }
    }
}

type DocKey = (String, String);
type Who = (String, u64);

#[derive(Default)]
struct Table {
    docs: HashMap<DocKey, HashMap<Who, (Presence, Instant)>>,
    total: usize,
    per_tenant: HashMap<String, usize>,
    /// By (tenant, user).
    per_user: HashMap<(String, String), usize>,
    /// By (tenant, user, client).
    per_client: HashMap<(String, String, u64), usize>,
}

fn bump<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K, up: bool) {
    if up {
        *counts.entry(key).or_default() += 1;
    } else if let std::collections::hash_map::Entry::Occupied(mut e) = counts.entry(key) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

impl Table {
    /// Keeps the per-tenant, per-user and per-client counts in step with
    /// one presence added (`up`) or removed.
    fn count(&mut self, tenant: &str, user: &str, client: u64, up: bool) {
        if up {
            self.total += 1;
        } else {
            self.total -= 1;
        }
        bump(&mut self.per_tenant, tenant.to_owned(), up);
        bump(&mut self.per_user, (tenant.to_owned(), user.to_owned()), up);
        bump(&mut self.per_client, (tenant.to_owned(), user.to_owned(), client), up);
    }

    /// Why a new presence of `p` would break a bound, if it would.
    fn over_bound(&self, p: &Presence, in_doc: &HashMap<Who, (Presence, Instant)>) -> Option<&'static str> {
        let user_key = (p.tenant.clone(), p.user.clone());
        if in_doc.len() >= MAX_PER_DOC {
            Some("document")
        } else if in_doc.keys().filter(|(user, _)| *user == p.user).count() >= MAX_PER_USER_PER_DOC {
            Some("user_in_document")
        } else if self.per_client.get(&(p.tenant.clone(), p.user.clone(), p.client)).copied().unwrap_or(0)
            >= MAX_PER_CLIENT
        {
            Some("client")
        } else if self.per_user.get(&user_key).copied().unwrap_or(0) >= MAX_PER_USER {
            Some("user")
        } else if self.per_tenant.get(&p.tenant).copied().unwrap_or(0) >= MAX_PER_TENANT {
            Some("tenant")
        } else if self.total >= MAX_TOTAL {
            Some("node")
        } else {
            None
        }
    }
}

/// This node's presence table.
#[derive(Clone)]
pub struct PresenceHub {
    table: Arc<Mutex<Table>>,
    tx: broadcast::Sender<PresenceMsg>,
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for PresenceHub {
    fn default() -> Self {
        PresenceHub { table: Arc::default(), tx: broadcast::channel(4096).0 }
    }
}

impl PresenceHub {
    /// Follows presence changes on this node.
    pub fn subscribe(&self) -> broadcast::Receiver<PresenceMsg> {
        self.tx.subscribe()
    }

    /// Live presences of one document.
    pub fn current(&self, tenant: &str, doc: &str) -> Vec<Presence> {
        let now = Instant::now();
        lock(&self.table)
            .docs
            .get(&(tenant.to_owned(), doc.to_owned()))
            .map(|m| m.values().filter(|(_, exp)| *exp > now).map(|(p, _)| p.clone()).collect())
            .unwrap_or_default()
    }

    /// Records a change and tells local watchers. Returns false when it was
    /// dropped (bounds).
    pub fn apply(&self, msg: PresenceMsg) -> bool {
        {
            let mut table = lock(&self.table);
            match &msg {
                PresenceMsg::Set(p) => {
                    let ttl = Duration::from_millis(p.ttl_ms).min(MAX_TTL);
                    let key = (p.tenant.clone(), p.doc.clone());
                    let who = (p.user.clone(), p.client);
                    let empty = HashMap::new();
                    let in_doc = table.docs.get(&key).unwrap_or(&empty);
                    let fresh = !in_doc.contains_key(&who);
                    if fresh && let Some(bound) = table.over_bound(p, in_doc) {
                        metrics::counter!("caddy_presence_dropped_total", "bound" => bound).increment(1);
                        return false;
                    }
                    table.docs.entry(key).or_default().insert(who, (p.clone(), Instant::now() + ttl));
                    if fresh {
                        table.count(&p.tenant, &p.user, p.client, true);
                    }
                }
                PresenceMsg::Gone { tenant, doc, user, client } => {
                    let key = (tenant.clone(), doc.clone());
                    let removed = table.docs.get_mut(&key).and_then(|m| m.remove(&(user.clone(), *client))).is_some();
                    if removed {
                        table.count(tenant, user, *client, false);
                    }
                    if table.docs.get(&key).is_some_and(HashMap::is_empty) {
                        table.docs.remove(&key);
                    }
                }
            }
        }
        let _ = self.tx.send(msg);
        true
    }

    /// Drops expired presences, telling watchers each is gone.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let mut table = lock(&self.table);
            table.docs.retain(|(tenant, doc), entries| {
                entries.retain(|(user, client), (_, expires)| {
                    let keep = *expires > now;
                    if !keep {
                        gone.push(PresenceMsg::Gone {
                            tenant: tenant.clone(),
                            doc: doc.clone(),
                            user: user.clone(),
                            client: *client,
                        });
                    }
                    keep
                });
                !entries.is_empty()
            });
            for msg in &gone {
                if let PresenceMsg::Gone { tenant, user, client, .. } = msg {
                    table.count(tenant, user, *client, false);
                }
            }
        }
        for msg in gone {
            let _ = self.tx.send(msg);
        }
    }

    /// Runs the expiry sweep and takes in peers' presence gossip until
    /// `shutdown` flips.
    pub async fn run(self, node: caddy_raft::RaftNode, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut gossip = node.subscribe_gossip();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep(),
                msg = gossip.recv() => match msg {
                    Ok(data) => match caddy_core::codec::from_bytes::<PresenceMsg>(&data) {
                        Ok(msg) => {
                            self.apply(msg);
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable presence gossip dropped"),
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "presence gossip lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = crate::run::stopped(&mut shutdown) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use caddy_core::docs::PresenceState;

    fn presence(user: &str, client: u64, ttl_ms: u64) -> Presence {
        Presence {
            tenant: "acme".into(),
            doc: "doc-1".into(),
            user: user.into(),
            client,
            state: PresenceState::default(),
            ttl_ms,
        }
    }

    #[test]
    fn presences_expire_and_watchers_hear_it() {
        let hub = PresenceHub::default();
        let mut rx = hub.subscribe();
        assert!(hub.apply(PresenceMsg::Set(presence("user-1", 1, 50))));
        assert!(hub.apply(PresenceMsg::Set(presence("user-2", 2, 60_000))));
        assert_eq!(hub.current("acme", "doc-1").len(), 2);
        std::thread::sleep(Duration::from_millis(80));
        hub.sweep();
        let users: Vec<String> = hub.current("acme", "doc-1").into_iter().map(|p| p.user).collect();
        assert_eq!(users, vec!["user-2".to_string()]);
        let mut seen = Vec::new();
        while let Ok(m) = rx.try_recv() {
            seen.push(m);
        }
        assert!(matches!(seen.last(), Some(PresenceMsg::Gone { user, .. }) if user == "user-1"), "{seen:?}");
        hub.apply(PresenceMsg::Gone { tenant: "acme".into(), doc: "doc-1".into(), user: "user-2".into(), client: 2 });
        assert!(hub.current("acme", "doc-1").is_empty());
        assert_eq!(lock(&hub.table).total, 0);
    }

    fn at(tenant: &str, doc: &str, user: &str, client: u64) -> PresenceMsg {
        PresenceMsg::Set(Presence { tenant: tenant.into(), doc: doc.into(), ..presence(user, client, 60_000) })
    }

    #[test]
    fn a_document_holds_a_bounded_number_of_presences() {
        let hub = PresenceHub::default();
        for i in 0..MAX_PER_DOC as u64 {
            assert!(hub.apply(at("acme", "doc-1", &format!("user-{i}"), i)));
        }
        assert!(!hub.apply(at("acme", "doc-1", "user-9999", 9999)));
        // Refreshing an existing one still works.
        assert!(hub.apply(at("acme", "doc-1", "user-0", 0)));
        assert_eq!(hub.current("acme", "doc-1").len(), MAX_PER_DOC);
    }

    /// One client, inventing client ids and documents, cannot take a
    /// document's slots or the node's table from other users and tenants.
    #[test]
    fn one_client_or_user_cannot_fill_the_table() {
        let hub = PresenceHub::default();
        // Many client ids of one user in one document.
        let mut held = 0;
        for client in 0..1000 {
            held += usize::from(hub.apply(at("acme", "doc-1", "user-1", client)));
        }
        assert_eq!(held, MAX_PER_USER_PER_DOC);
        assert!(hub.apply(at("acme", "doc-1", "user-2", 1)), "another user is kept out of the document");
        // One client across many documents.
        let mut held = 0;
        for d in 0..1000 {
            held += usize::from(hub.apply(at("acme", &format!("doc-x{d}"), "user-3", 7)));
        }
        assert_eq!(held, MAX_PER_CLIENT);
        // One user with many clients across many documents.
        let mut held = 0;
        for i in 0..5000u64 {
            held += usize::from(hub.apply(at("acme", &format!("doc-y{}", i / 8), "user-4", i)));
        }
        assert_eq!(held, MAX_PER_USER);
        // One tenant, many users.
        for u in 0..((MAX_PER_TENANT / MAX_PER_USER) + 2) {
            for i in 0..MAX_PER_USER as u64 {
                hub.apply(at("acme", &format!("doc-z{u}-{}", i / 8), &format!("spam-{u}"), i));
            }
        }
        assert!(!hub.apply(at("acme", "doc-new", "user-5", 1)), "the tenant went over its bound");
        assert!(hub.apply(at("globex", "doc-1", "user-1", 1)), "another tenant was kept out");
        // Counts follow removals: a freed slot can be taken again.
        hub.apply(PresenceMsg::Gone { tenant: "acme".into(), doc: "doc-1".into(), user: "user-1".into(), client: 0 });
        assert!(hub.apply(at("acme", "doc-1", "user-1", 5000)));
    }
}
