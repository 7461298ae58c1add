//! Who may speak to a node over the peer protocol, and what a member may
//! ask the leader to propose on its behalf.
//!
//! A peer is known by the node name in its certificate ([`NodeCertName`]:
//! id and generation), which the CA signed. A name is *current* when its id
//! is in this node's membership view (voters and learners of the newest
//! configuration in its log) and its generation is at least the one the
//! replicated registry accepts for the id ([`caddy_store::cluster::NodeCert`]).
//!
//! Rules, per call ([`PeerRule`]):
//! - `Enroll` needs no certificate (a join token, checked through Raft).
//! - `Identify` needs any node certificate from the CA: a member asks a
//!   newcomer who it is.
//! - `AddMember` needs an enrolled node adding itself: the certificate's id
//!   is the id to add and its generation is current for that id.
//! - Raft calls (`AppendEntries`, `InstallSnapshot`, `Vote`, `PreVote`) need
//!   a current name, except on a node whose membership view is empty (a
//!   joiner before its first entries), which accepts any node certificate.
//! - Everything else needs a current name.
//!
//! Caveat: the view is this node's; a node that missed the addition of a
//! member (it was cut off while the member joined) refuses that member until
//! it learns of it, so if the newcomer becomes leader the lagging node
//! catches up only once leadership moves to a node it knows
//! (`caddyctl cluster transfer-leader`).

use caddy_core::{Command, NodeId};
use caddy_store::cluster::NodeCert;
use caddy_wire::tls::NodeCertName;

/// What a peer call requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRule {
    /// A current member.
    Member,
    /// A current member, or any certified node while this node knows no membership.
    Raft,
    /// Any node certificate from the cluster CA.
    Certified,
    /// The enrolled node `id`, adding itself.
    SelfJoin(NodeId),
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its id is not in the membership.
    #[error("{0} is not a member of this cluster")]
    NotMember(NodeCertName),
    /// The cluster issued a newer certificate for its id.
    #[error("{name} was superseded: this cluster accepts generation {accepted_from} or later for that node")]
    Superseded {
        /// The caller.
        name: NodeCertName,
        /// The oldest generation accepted.
        accepted_from: u64,
    },
    /// Its generation is newer than any the cluster issued for its id.
    #[error("{name} was never issued: the newest generation this cluster issued for that node is {latest}")]
    NotIssued {
        /// The caller.
        name: NodeCertName,
        /// The newest generation issued.
        latest: u64,
    },
    /// Its id was never enrolled.
    #[error("{0} was never enrolled with a join token")]
    NotEnrolled(NodeCertName),
    /// It asked for another node than itself.
    #[error("{name} may only add itself, not node {asked}")]
    NotItself {
        /// The caller.
        name: NodeCertName,
        /// The id it asked to add.
        asked: NodeId,
    },
}

/// What a node knows when it judges a caller.
pub trait View {
    /// Whether the membership view is empty (nothing replicated yet).
    fn knows_no_membership(&self) -> bool;
    /// Whether `id` is a voter or learner in the membership view.
    fn is_member(&self, id: NodeId) -> bool;
    /// The registry's record of `id`'s certificates.
    fn cert(&self, id: NodeId) -> Option<NodeCert>;
}

type Metrics = openraft::type_config::alias::WatchReceiverOf<
    caddy_store::TypeConfig,
    openraft::RaftMetrics<caddy_store::TypeConfig>,
>;

/// A running node's [`View`]: its Raft membership view and its state machine.
pub struct NodeView {
    metrics: Metrics,
    sm: caddy_store::StateMachineStore,
}

impl NodeView {
    pub(crate) fn new(metrics: Metrics, sm: caddy_store::StateMachineStore) -> Self {
        Self { metrics, sm }
    }
}

impl View for NodeView {
    fn knows_no_membership(&self) -> bool {
        use openraft::async_runtime::WatchReceiver;
        self.metrics.borrow_watched().membership_config.membership().nodes().next().is_none()
    }

    fn is_member(&self, id: NodeId) -> bool {
        use openraft::async_runtime::WatchReceiver;
        self.metrics.borrow_watched().membership_config.membership().get_node(&id).is_some()
    }

    fn cert(&self, id: NodeId) -> Option<NodeCert> {
        match self.sm.node_cert(id) {
            Ok(cert) => cert,
            Err(e) => {
                // Unreadable registry: refuse rather than accept a revoked certificate.
                tracing::error!(node = id, error = %e, "reading the node certificate registry");
                Some(NodeCert { accepted_from: u64::MAX, latest: u64::MAX, key_hash: None, changed_ms: 0 })
            }
        }
    }
}

fn current_generation(name: NodeCertName, cert: Option<&NodeCert>) -> Result<(), Refusal> {
    // No record: the id was never enrolled nor rotated, so its only
    // certificate is the one it made itself (bootstrap, upgrade).
    let accepted_from = cert.map_or(0, |c| c.accepted_from);
    if name.generation < accepted_from {
        return Err(Refusal::Superseded { name, accepted_from });
    }
    // A generation the cluster never issued was signed outside it (a copy
    // of the CA key): it would outlive every rotation of the id.
    let latest = cert.map_or(1, |c| c.latest.max(1));
    if name.generation > latest {
        return Err(Refusal::NotIssued { name, latest });
    }
    Ok(())
}

/// Judges a caller named `name` for a call under `rule`.
pub fn authorize(view: &impl View, name: NodeCertName, rule: PeerRule) -> Result<(), Refusal> {
    match rule {
        PeerRule::Certified => Ok(()),
        PeerRule::Raft if view.knows_no_membership() => Ok(()),
        PeerRule::Raft | PeerRule::Member => {
            if !view.is_member(name.id) {
                return Err(Refusal::NotMember(name));
            }
            current_generation(name, view.cert(name.id).as_ref())
        }
        PeerRule::SelfJoin(asked) => {
            if asked != name.id {
                return Err(Refusal::NotItself { name, asked });
            }
            let cert = view.cert(name.id).ok_or(Refusal::NotEnrolled(name))?;
            current_generation(name, Some(&cert))
        }
    }
}

/// Whether a member may have the leader propose `command` for it (a
/// forwarded write). Commands that name a node may only be forwarded by
/// that node; commands no member proposes for others are refused.
pub fn forwardable(command: &Command, caller: NodeId) -> Result<(), String> {
    let own = |node: NodeId| {
        if node == caller { Ok(()) } else { Err(format!("node {caller} cannot act as node {node}")) }
    };
    // Exhaustive on purpose: a new command is refused until someone decides.
    match command {
        Command::Call(_)
        | Command::FilesSweep { .. }
        | Command::RenderSweep { .. }
        | Command::CreateJoinToken { .. }
        | Command::RevokeJoinToken { .. }
        | Command::EnrollNode { .. } => Ok(()),
        Command::RenderClaim { node, .. }
        | Command::RenderRenew { node, .. }
        | Command::RenderFinish { node, .. }
        | Command::RenewNodeCert { node, .. }
        | Command::ActivateNodeCert { node, .. } => own(*node),
        // Only a leader proposes it (its own sweep loop, which the next
        // leader's replaces): a member forwarding one with a short retention
        // could otherwise erase audit history.
        Command::AuditSweep { .. } => Err("audit sweeps are proposed by the leader only".into()),
        // Only the bootstrap node proposes it, as the first leader.
        Command::InitCluster { .. } => Err("the cluster's identity is never set through another node".into()),
        // Unauthorized, unaudited writes no server path proposes.
        Command::Noop | Command::KvPut { .. } | Command::KvDelete { .. } | Command::AddJoinToken { .. } => {
            Err(format!("{} is not forwarded between nodes", command.name()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use caddy_core::identity::api::{Call, Op, Principal};

    use super::*;

    #[derive(Default)]
    struct Fake {
        members: BTreeSet<NodeId>,
        certs: BTreeMap<NodeId, NodeCert>,
    }

    impl View for Fake {
        fn knows_no_membership(&self) -> bool {
            self.members.is_empty()
        }
        fn is_member(&self, id: NodeId) -> bool {
            self.members.contains(&id)
        }
        fn cert(&self, id: NodeId) -> Option<NodeCert> {
            self.certs.get(&id).cloned()
        }
    }

    fn name(id: NodeId, generation: u64) -> NodeCertName {
        NodeCertName { id, generation }
    }

    fn record(accepted_from: u64) -> NodeCert {
        NodeCert { accepted_from, latest: accepted_from, key_hash: None, changed_ms: 0 }
    }

    fn view() -> Fake {
        let rotating = NodeCert { accepted_from: 3, latest: 4, key_hash: None, changed_ms: 0 };
        Fake { members: [1, 2, 3].into(), certs: [(2, rotating), (9, record(2))].into() }
    }

    #[test]
    fn members_pass_at_a_current_generation_only() {
        let v = view();
        for rule in [PeerRule::Member, PeerRule::Raft] {
            assert_eq!(authorize(&v, name(1, 1), rule), Ok(()), "bootstrap's own certificate, no record");
            assert_eq!(authorize(&v, name(2, 3), rule), Ok(()));
            assert_eq!(authorize(&v, name(2, 4), rule), Ok(()), "a newer one not yet activated");
            assert_eq!(
                authorize(&v, name(2, 2), rule),
                Err(Refusal::Superseded { name: name(2, 2), accepted_from: 3 })
            );
            // Generations the cluster never issued (signed with a copy of the CA key).
            assert_eq!(authorize(&v, name(2, 5), rule), Err(Refusal::NotIssued { name: name(2, 5), latest: 4 }));
            assert_eq!(authorize(&v, name(1, 2), rule), Err(Refusal::NotIssued { name: name(1, 2), latest: 1 }));
            assert_eq!(authorize(&v, name(9, 2), rule), Err(Refusal::NotMember(name(9, 2))), "enrolled, not added");
            assert_eq!(authorize(&v, name(4, 1), rule), Err(Refusal::NotMember(name(4, 1))));
        }
        assert_eq!(authorize(&v, name(4, 1), PeerRule::Certified), Ok(()));
    }

    #[test]
    fn a_node_that_knows_no_membership_takes_raft_calls_only() {
        let v = Fake::default();
        assert_eq!(authorize(&v, name(7, 2), PeerRule::Raft), Ok(()));
        assert_eq!(authorize(&v, name(7, 2), PeerRule::Member), Err(Refusal::NotMember(name(7, 2))));
    }

    #[test]
    fn a_joiner_adds_only_itself_once_enrolled() {
        let v = view();
        assert_eq!(authorize(&v, name(9, 2), PeerRule::SelfJoin(9)), Ok(()));
        assert_eq!(
            authorize(&v, name(9, 2), PeerRule::SelfJoin(5)),
            Err(Refusal::NotItself { name: name(9, 2), asked: 5 })
        );
        assert_eq!(
            authorize(&v, name(9, 1), PeerRule::SelfJoin(9)),
            Err(Refusal::Superseded { name: name(9, 1), accepted_from: 2 })
        );
        // Signed by the CA, but never enrolled through a token.
        assert_eq!(authorize(&v, name(5, 7), PeerRule::SelfJoin(5)), Err(Refusal::NotEnrolled(name(5, 7))));
    }

    #[test]
    fn the_forward_whitelist() {
        let call = Command::Call(Box::new(Call {
            principal: Principal::Operator,
            tenant: None,
            request_id: "r".into(),
            client_addr: String::new(),
            op: Op::KvDelete { key: "k".into(), if_revision: None },
        }));
        assert!(forwardable(&call, 2).is_ok());
        assert!(forwardable(&Command::EnrollNode { token_hash: [0; 32], node: 9, key_hash: [0; 32] }, 2).is_ok());
        assert!(forwardable(&Command::CreateJoinToken { token_hash: [0; 32], expires_at_ms: 1 }, 2).is_ok());
        assert!(forwardable(&Command::FilesSweep { trash_retention_ms: 1 }, 2).is_ok());
        let sweep = Command::AuditSweep {
            retention: caddy_core::identity::AuditRetention::DEFAULT,
            from: caddy_core::identity::SweepFrom::Start,
        };
        assert!(forwardable(&sweep, 2).is_err(), "only a leader prunes audit chains");
        let init = Command::InitCluster { cluster_id: "x".into(), admin_credential_hash: [0; 32] };
        assert!(forwardable(&init, 1).is_err());
        for raw in [
            Command::Noop,
            Command::KvPut { key: "c/k".into(), value: vec![], if_revision: None },
            Command::KvDelete { key: "c/k".into(), if_revision: None },
            Command::AddJoinToken { token_hash: [0; 32], expires_at_ms: 1 },
        ] {
            assert!(forwardable(&raw, 2).is_err(), "{raw:?}");
        }
        // Commands naming a node: that node only.
        let claim = |node| Command::RenderClaim { node, lease_ms: 1, max_attempts: 1 };
        assert!(forwardable(&claim(2), 2).is_ok());
        assert!(forwardable(&claim(3), 2).is_err());
        assert!(forwardable(&Command::RenewNodeCert { node: 2, key_hash: [0; 32] }, 2).is_ok());
        assert!(forwardable(&Command::RenewNodeCert { node: 3, key_hash: [0; 32] }, 2).is_err());
        assert!(forwardable(&Command::ActivateNodeCert { node: 3, generation: 4 }, 2).is_err());
    }
}
