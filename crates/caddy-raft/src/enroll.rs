//! Join tokens and the joining node's side of enrollment.
//!
//! A token is `caddyjoin.<CA fingerprint>.<secret>`. The state machine holds
//! only blake3(secret), with an expiry, and uses it once. A joining node
//! first learns the CA from the seed's TLS handshake and checks it against
//! the fingerprint, then sends the token and a CSR for a key it generated
//! over TLS verified by that CA, and receives a certificate naming its node
//! id. The CA key never travels.

use std::time::Duration;

use caddy_core::CaddyError;
use caddy_core::NodeId;
use caddy_store::CaddyNode;
use caddy_wire::tls::{LiveIdentity, NodeIdentity, NodeKeyRequest};

use crate::RaftError;
use crate::node::MembershipView;
use crate::pb;
use crate::peers::PeerClients;

const PREFIX: &str = "caddyjoin";

/// Builds a token from the CA fingerprint and the secret.
pub fn format_token(fingerprint: &str, secret: &str) -> String {
    format!("{PREFIX}.{fingerprint}.{secret}")
}

/// Splits a token into (CA fingerprint, secret).
pub fn parse_token(token: &str) -> Result<(String, String), CaddyError> {
    let mut parts = token.trim().split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(PREFIX), Some(fp), Some(secret), None)
            if fp.len() == 32 && !secret.is_empty() && fp.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok((fp.to_string(), secret.to_string()))
        }
        _ => Err(CaddyError::invalid("malformed join token (expected caddyjoin.<fingerprint>.<secret>)")),
    }
}

/// Hash under which a token's secret is registered.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// What enrollment gives a joining node.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The cluster CA certificate (pinned by the token).
    pub ca_cert_pem: String,
    /// The node's certificate chain (leaf, then CA) and its own key.
    pub identity: NodeIdentity,
    /// The certificate's generation.
    pub generation: u64,
}

/// Trades `token` and the CSR of `key` for a certificate naming `node_id`,
/// at the member listening for peers at `seed`. Retrying with the same key
/// after a lost answer gets the same certificate generation.
pub async fn enroll(seed: &str, token: &str, node_id: NodeId, key: &NodeKeyRequest) -> Result<Enrolled, RaftError> {
    let (fingerprint, _) = parse_token(token).map_err(|e| RaftError::Join(e.message))?;
    let chain = caddy_wire::tls::fetch_presented_chain(seed).await?;
    let ca_pem = caddy_wire::tls::pick_pinned_ca(&chain, &fingerprint).ok_or_else(|| {
        RaftError::Join(format!("{seed} did not present the CA pinned in the join token; refusing to send the token"))
    })?;
    let peers = PeerClients::new(&ca_pem, None, Duration::from_secs(10))?;
    let mut client = peers.newcomer_client(seed).map_err(|s| RaftError::Join(s.message().to_string()))?;
    let resp = client
        .enroll(pb::EnrollRequest { join_token: token.to_string(), node_id, csr_pem: key.csr_pem.clone() })
        .await
        .map_err(|s| RaftError::Join(format!("enrollment refused by {seed}: {}", s.message())))?
        .into_inner();
    let identity = NodeIdentity { cert_pem: format!("{}{ca_pem}", resp.cert_pem), key_pem: key.key_pem.clone() };
    // Refuses a certificate for another key or another node.
    let name = LiveIdentity::new(identity.clone())?.name();
    if name.id != node_id {
        return Err(RaftError::Join(format!("{seed} answered with a certificate for {name}, not node {node_id}")));
    }
    Ok(Enrolled { ca_cert_pem: ca_pem, identity, generation: name.generation })
}

/// Asks the cluster (through `seed`) to add this node; returns when it is a
/// voter (or a learner, with `learner_only`).
pub async fn request_membership(
    peers: &PeerClients,
    seed: &str,
    id: NodeId,
    node: &CaddyNode,
    learner_only: bool,
) -> Result<MembershipView, RaftError> {
    let mut client = peers.newcomer_client(seed).map_err(|s| RaftError::Join(s.message().to_string()))?;
    let resp = client
        .add_member(pb::AddMemberRequest {
            node_id: id,
            raft_addr: node.raft_addr.clone(),
            client_addr: node.client_addr.clone(),
            admin_addr: node.admin_addr.clone(),
            learner_only,
        })
        .await
        .map_err(|s| RaftError::Join(format!("{seed} refused to add node {id}: {}", s.message())))?
        .into_inner();
    Ok(MembershipView { voters: resp.voters, learners: resp.learners, status: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let fp = "0123456789abcdef0123456789abcdef";
        let t = format_token(fp, "s3cr3t");
        assert_eq!(parse_token(&t).unwrap(), (fp.to_string(), "s3cr3t".to_string()));
        for bad in [
            "",
            "caddyjoin",
            "caddyjoin.xyz.s",
            "other.0123456789abcdef0123456789abcdef.s",
            "caddyjoin.0123456789abcdef0123456789abcdef.",
        ] {
            assert!(parse_token(bad).is_err(), "{bad:?} accepted");
        }
    }
}
