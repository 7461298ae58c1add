//! Join tokens and node certificates as a running node handles them.
//!
//! - Tokens are created, listed and revoked through Raft
//!   ([`caddy_store::cluster`] holds them, by hash).
//! - Enrolling a joiner ([`RaftNode::enroll_joiner`]): the token is consumed
//!   through Raft together with the issue of the joiner's certificate
//!   generation for the key in its CSR; then a node holding the CA key signs.
//! - Signing ([`RaftNode::sign_registered`]) happens only on a node that
//!   holds the CA key, and only for a (node, generation, key) the registry
//!   issued: a member cannot obtain a certificate the cluster did not decide
//!   to issue, and a signer never sees a private key.
//! - Rotation ([`RaftNode::rotate_own_cert`]): new key, `RenewNodeCert`
//!   (the old certificate stays valid), signature, durable write, switch of
//!   the live identity, then `ActivateNodeCert`, after which peers refuse
//!   the old certificate. [`RaftNode::rotate_all`] asks every member to do so.

use std::time::Duration;

use caddy_core::{CaddyError, Command, ErrorCode, NodeId, ReplyBody};
use caddy_store::cluster::{JoinToken, TokenState};
use caddy_wire::tls::{self, CaMaterial, NodeCertName, NodeIdentity};

use crate::node::RaftNode;
use crate::{enroll, now_ms, pb};

/// How long a member may take to rotate its certificate when asked.
const ROTATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a signing node may take to answer.
const SIGN_TIMEOUT: Duration = Duration::from_secs(10);

/// One rotation at a time in this process (a second `rotate-certs` waits).
static ROTATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Which join token to revoke.
#[derive(Debug, Clone)]
pub enum TokenRef {
    /// By the id `join-token --list` shows.
    Id(u64),
    /// By the token itself.
    Token(String),
}

fn tls_error(e: tls::TlsError) -> CaddyError {
    match e {
        tls::TlsError::Csr(_) | tls::TlsError::NodeName(_) | tls::TlsError::Pem(_) => {
            CaddyError::invalid(e.to_string())
        }
        other => CaddyError::internal(other.to_string()),
    }
}

fn local(e: std::io::Error) -> CaddyError {
    CaddyError::internal(format!("reading local state: {e}"))
}

fn generation_of(reply: ReplyBody) -> Result<u64, CaddyError> {
    match reply {
        ReplyBody::NodeCert { generation } => Ok(generation),
        other => Err(CaddyError::internal(format!("unexpected reply: {other:?}"))),
    }
}

/// Maps a refusal to the gRPC status a peer sees.
pub(crate) fn to_status(e: CaddyError) -> tonic::Status {
    match e.code {
        ErrorCode::InvalidArgument => tonic::Status::invalid_argument(e.message),
        ErrorCode::NotFound => tonic::Status::not_found(e.message),
        ErrorCode::AlreadyExists => tonic::Status::already_exists(e.message),
        ErrorCode::FailedPrecondition => tonic::Status::failed_precondition(e.message),
        ErrorCode::PermissionDenied => tonic::Status::permission_denied(e.message),
        ErrorCode::Unauthenticated => tonic::Status::unauthenticated(e.message),
        ErrorCode::ResourceExhausted => tonic::Status::resource_exhausted(e.message),
        ErrorCode::Unavailable => tonic::Status::unavailable(e.message),
        ErrorCode::Internal => tonic::Status::internal(e.message),
    }
}

impl RaftNode {
    fn node_tls(&self) -> Result<&crate::node::NodeTls, CaddyError> {
        self.tls().ok_or_else(|| CaddyError::precondition("this node runs without TLS material"))
    }

    /// Creates a single-use join token valid for `ttl`; returns the token,
    /// its id and its expiry (ms since the epoch).
    pub async fn create_join_token(&self, ttl: Duration) -> Result<(String, u64, u64), CaddyError> {
        let tls = self.node_tls()?;
        let fingerprint = tls::ca_fingerprint(&tls.ca_cert_pem).map_err(|e| CaddyError::internal(e.to_string()))?;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let expires_at_ms = now_ms().saturating_add(ttl.as_millis() as u64);
        let token_hash = enroll::secret_hash(&secret);
        let id = match self.propose(None, Command::CreateJoinToken { token_hash, expires_at_ms }).await? {
            ReplyBody::Created { id } => id,
            other => return Err(CaddyError::internal(format!("unexpected reply: {other:?}"))),
        };
        Ok((enroll::format_token(&fingerprint, &secret), id, expires_at_ms))
    }

    /// The join tokens the cluster keeps (linearizable).
    pub async fn join_tokens(&self) -> Result<Vec<JoinToken>, CaddyError> {
        self.read_barrier().await?;
        self.state_machine().join_tokens().map_err(local)
    }

    /// Revokes a join token; returns its id.
    pub async fn revoke_join_token(&self, which: TokenRef) -> Result<u64, CaddyError> {
        let id = match which {
            TokenRef::Id(id) => id,
            TokenRef::Token(token) => {
                let (_, secret) = enroll::parse_token(&token)?;
                self.read_barrier().await?;
                let found = self.state_machine().join_token_by_hash(&enroll::secret_hash(&secret)).map_err(local)?;
                found.map(|t| t.id).ok_or_else(|| CaddyError::new(ErrorCode::NotFound, "no such join token"))?
            }
        };
        self.propose(None, Command::RevokeJoinToken { id }).await?;
        Ok(id)
    }

    /// Admits node `node` with `token`: consumes the token and issues the
    /// node's next certificate generation for the key in `csr_pem` (one
    /// Raft entry), then has it signed. Returns the leaf certificate (PEM)
    /// and its generation.
    pub async fn enroll_joiner(&self, token: &str, node: NodeId, csr_pem: &str) -> Result<(String, u64), CaddyError> {
        let tls = self.node_tls()?;
        let (fingerprint, secret) = enroll::parse_token(token)?;
        let own = tls::ca_fingerprint(&tls.ca_cert_pem).map_err(|e| CaddyError::internal(e.to_string()))?;
        if own != fingerprint {
            return Err(CaddyError::new(ErrorCode::PermissionDenied, "join token belongs to another cluster"));
        }
        let key_hash = tls::csr_key_hash(csr_pem).map_err(tls_error)?;
        let token_hash = enroll::secret_hash(&secret);
        // Judge the token locally first: an unauthenticated caller must not
        // be able to append to the log with made-up tokens. Apply decides.
        self.read_barrier().await?;
        let known = self.state_machine().join_token_by_hash(&token_hash).map_err(local)?;
        if let Some(t) = &known
            && let TokenState::Revoked { .. } = t.state
        {
            return Err(CaddyError::new(ErrorCode::PermissionDenied, format!("join token {} was revoked", t.id)));
        }
        let usable = known.is_some_and(|t| match t.state {
            TokenState::Active => t.expires_at_ms > now_ms(),
            TokenState::Used { node: used_by, key_hash: used_key, .. } => used_by == node && used_key == key_hash,
            TokenState::Revoked { .. } => false,
        });
        if !usable {
            return Err(CaddyError::new(
                ErrorCode::PermissionDenied,
                "join token unknown, expired or used already; create one with `caddyctl cluster join-token`",
            ));
        }
        let generation = generation_of(self.propose(None, Command::EnrollNode { token_hash, node, key_hash }).await?)?;
        let cert = self.obtain_signature(node, generation, csr_pem).await?;
        tracing::info!(node_id = node, generation, "enrolled a joining node");
        Ok((cert, generation))
    }

    /// Signs `csr_pem` as `node` at `generation` with this node's CA key,
    /// if the cluster issued exactly that generation for exactly that key.
    pub async fn sign_registered(&self, node: NodeId, generation: u64, csr_pem: &str) -> Result<String, CaddyError> {
        let tls = self.node_tls()?;
        let ca_key =
            tls.ca_key_pem.clone().ok_or_else(|| CaddyError::precondition("this node does not hold the CA key"))?;
        let key_hash = tls::csr_key_hash(csr_pem).map_err(tls_error)?;
        self.read_barrier().await?;
        let issued = self.state_machine().node_cert(node).map_err(local)?;
        if !issued.is_some_and(|c| c.latest == generation && c.key_hash == Some(key_hash)) {
            return Err(CaddyError::new(
                ErrorCode::PermissionDenied,
                format!("the cluster did not issue certificate generation {generation} of node {node} for this key"),
            ));
        }
        let ca = CaMaterial { cert_pem: tls.ca_cert_pem.clone(), key_pem: ca_key };
        tls::sign_node_csr(&ca, csr_pem, NodeCertName { id: node, generation }).map_err(tls_error)
    }

    /// Gets a registered certificate signed: here if this node holds the CA
    /// key, else by the first member that does.
    async fn obtain_signature(&self, node: NodeId, generation: u64, csr_pem: &str) -> Result<String, CaddyError> {
        if self.node_tls()?.ca_key_pem.is_some() {
            return self.sign_registered(node, generation, csr_pem).await;
        }
        let peers = self.peers().ok_or_else(|| CaddyError::unavailable("no peer network"))?;
        let mut why = Vec::new();
        for (id, addr) in self.other_members() {
            let request = pb::SignRequest { node_id: node, generation, csr_pem: csr_pem.to_string() };
            let answer = match peers.client(&addr) {
                Ok(mut client) => tokio::time::timeout(SIGN_TIMEOUT, client.sign_node_cert(request)).await,
                Err(s) => Ok(Err(s)),
            };
            match answer {
                Ok(Ok(signed)) => return Ok(signed.into_inner().cert_pem),
                Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => {}
                Ok(Err(s)) => why.push(format!("node {id}: {}", s.message())),
                Err(_) => why.push(format!("node {id}: no answer")),
            }
        }
        Err(CaddyError::unavailable(format!(
            "no reachable member holding the cluster CA key signed the certificate (start the node holding tls/ca.key, normally the bootstrap node){}",
            if why.is_empty() { String::new() } else { format!("; {}", why.join("; ")) }
        )))
    }

    /// Replaces this node's key and certificate; returns the new generation.
    /// Its old certificate is refused by peers once this returns.
    pub async fn rotate_own_cert(&self) -> Result<u64, CaddyError> {
        let _one_at_a_time = ROTATION.lock().await;
        let tls = self.node_tls()?;
        let request = tls::new_node_key(&tls.extra_names).map_err(tls_error)?;
        let key_hash = tls::csr_key_hash(&request.csr_pem).map_err(tls_error)?;
        let node = self.id();
        let generation = generation_of(self.propose(None, Command::RenewNodeCert { node, key_hash }).await?)?;
        let leaf = self.obtain_signature(node, generation, &request.csr_pem).await?;
        let identity = NodeIdentity { cert_pem: format!("{leaf}{}", tls.ca_cert_pem), key_pem: request.key_pem };
        // Checked before it is written: a bad one must not replace a good one on disk.
        tls::LiveIdentity::new(identity.clone()).map_err(tls_error)?;
        if let Some(persist) = &tls.persist {
            persist(&identity).map_err(|e| CaddyError::internal(format!("storing the new certificate: {e}")))?;
        }
        tls.identity.replace(identity).map_err(tls_error)?;
        if let Some(peers) = self.peers() {
            peers.reset();
        }
        self.propose(None, Command::ActivateNodeCert { node, generation }).await?;
        tracing::info!(generation, "rotated this node's certificate");
        Ok(generation)
    }

    /// Asks every member (this one last) to rotate its certificate; returns
    /// each member's new generation or why it failed, by node id.
    pub async fn rotate_all(&self) -> Vec<(NodeId, Result<u64, CaddyError>)> {
        let mut results = Vec::new();
        for (id, addr) in self.other_members() {
            let result = async {
                let peers = self.peers().ok_or_else(|| CaddyError::unavailable("no peer network"))?;
                let mut client = peers.client(&addr).map_err(|s| CaddyError::unavailable(s.message().to_string()))?;
                let answer = tokio::time::timeout(ROTATE_TIMEOUT, client.rotate_cert(pb::Empty {}))
                    .await
                    .map_err(|_| CaddyError::unavailable("no answer in time"))?
                    .map_err(|s| CaddyError::unavailable(s.message().to_string()))?;
                Ok(answer.into_inner().generation)
            }
            .await;
            results.push((id, result));
        }
        results.push((self.id(), self.rotate_own_cert().await));
        results.sort_by_key(|(id, _)| *id);
        results
    }
}
