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
//! Bounds: at most [`MAX_PER_DOC`] presences per document and
//! [`MAX_TOTAL`] per node; past them new presences are dropped.

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
                    let total = table.total;
                    let entries = table.docs.entry(key).or_default();
                    let fresh = !entries.contains_key(&who);
                    if fresh && (entries.len() >= MAX_PER_DOC || total >= MAX_TOTAL) {
                        metrics::counter!("caddy_presence_dropped_total").increment(1);
                        return false;
                    }
                    entries.insert(who, (p.clone(), Instant::now() + ttl));
                    if fresh {
                        table.total += 1;
                    }
                }
                PresenceMsg::Gone { tenant, doc, user, client } => {
                    let key = (tenant.clone(), doc.clone());
                    let removed = table.docs.get_mut(&key).and_then(|m| m.remove(&(user.clone(), *client))).is_some();
                    if removed {
                        table.total -= 1;
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
            let mut removed = 0;
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
                        removed += 1;
                    }
                    keep
                });
                !entries.is_empty()
            });
            table.total -= removed;
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

    #[test]
    fn a_document_holds_a_bounded_number_of_presences() {
        let hub = PresenceHub::default();
        for i in 0..MAX_PER_DOC as u64 {
            assert!(hub.apply(PresenceMsg::Set(presence("user-1", i, 60_000))));
        }
        assert!(!hub.apply(PresenceMsg::Set(presence("user-1", 9999, 60_000))));
        // Refreshing an existing one still works.
        assert!(hub.apply(PresenceMsg::Set(presence("user-1", 0, 60_000))));
        assert_eq!(hub.current("acme", "doc-1").len(), MAX_PER_DOC);
    }
}
