//! Per-tenant quotas and usage. Apply calls [`Usage::check`] before a change
//! and [`Usage::add`]/[`Usage::release`] as part of it, so a refused change
//! changes nothing. All arithmetic is overflow-checked.

use serde::{Deserialize, Serialize};

use crate::CaddyError;

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuotaKind {
    /// Number of users.
    Users,
    /// Bytes stored (keys plus values, documents, files).
    StorageBytes,
    /// Number of documents.
    Documents,
    /// Number of API keys (revoked keys excluded).
    ApiKeys,
    /// Requests per second, enforced by the rate limiter (not replicated
    /// usage: its "current" value is always 0 here).
    RequestsPerSecond,
}

impl QuotaKind {
    /// Every kind.
    pub const ALL: [QuotaKind; 5] = [
        QuotaKind::Users,
        QuotaKind::StorageBytes,
        QuotaKind::Documents,
        QuotaKind::ApiKeys,
        QuotaKind::RequestsPerSecond,
    ];

    /// Name used in messages (matches the [`Quotas`] field).
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Users => "max_users",
            QuotaKind::StorageBytes => "max_storage_bytes",
            QuotaKind::Documents => "max_documents",
            QuotaKind::ApiKeys => "max_api_keys",
            QuotaKind::RequestsPerSecond => "max_requests_per_second",
        }
    }
}

/// A tenant's limits; `0` allows none, `u64::MAX` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Most users.
    pub max_users: u64,
    /// Most bytes stored.
    pub max_storage_bytes: u64,
    /// Most documents.
    pub max_documents: u64,
    /// Most API keys.
    pub max_api_keys: u64,
    /// Most requests per second.
    pub max_requests_per_second: u64,
}

impl Default for Quotas {
    /// Defaults for a new tenant: 1,000 users, 10 GiB, 1,000,000 documents,
    /// 100 API keys, 1,000 requests per second.
    fn default() -> Self {
        Quotas {
            max_users: 1_000,
            max_storage_bytes: 10 * 1024 * 1024 * 1024,
            max_documents: 1_000_000,
            max_api_keys: 100,
            max_requests_per_second: 1_000,
        }
    }
}

impl Quotas {
    /// No limits.
    pub fn unlimited() -> Self {
        Quotas {
            max_users: u64::MAX,
            max_storage_bytes: u64::MAX,
            max_documents: u64::MAX,
            max_api_keys: u64::MAX,
            max_requests_per_second: u64::MAX,
        }
    }

    /// The limit of one kind.
    pub fn limit(&self, kind: QuotaKind) -> u64 {
        match kind {
            QuotaKind::Users => self.max_users,
            QuotaKind::StorageBytes => self.max_storage_bytes,
            QuotaKind::Documents => self.max_documents,
            QuotaKind::ApiKeys => self.max_api_keys,
            QuotaKind::RequestsPerSecond => self.max_requests_per_second,
        }
    }
}

/// A tenant's current consumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Users.
    pub users: u64,
    /// Bytes stored.
    pub storage_bytes: u64,
    /// Documents.
    pub documents: u64,
    /// API keys.
    pub api_keys: u64,
}

impl Usage {
    /// Current usage of one kind (0 for requests per second).
    pub fn current(&self, kind: QuotaKind) -> u64 {
        match kind {
            QuotaKind::Users => self.users,
            QuotaKind::StorageBytes => self.storage_bytes,
            QuotaKind::Documents => self.documents,
            QuotaKind::ApiKeys => self.api_keys,
            QuotaKind::RequestsPerSecond => 0,
        }
    }

    fn slot(&mut self, kind: QuotaKind) -> Option<&mut u64> {
        match kind {
            QuotaKind::Users => Some(&mut self.users),
            QuotaKind::StorageBytes => Some(&mut self.storage_bytes),
            QuotaKind::Documents => Some(&mut self.documents),
            QuotaKind::ApiKeys => Some(&mut self.api_keys),
            QuotaKind::RequestsPerSecond => None,
        }
    }

    /// Ok when using `delta` more of `kind` stays within `quotas`; otherwise
    /// ResourceExhausted naming the quota, its limit and current usage. For
    /// requests per second, `delta` is the rate including this request.
    pub fn check(&self, quotas: &Quotas, kind: QuotaKind, delta: u64) -> Result<(), CaddyError> {
        let (current, limit) = (self.current(kind), quotas.limit(kind));
        match current.checked_add(delta) {
            Some(total) if total <= limit => Ok(()),
            Some(_) => Err(CaddyError::exhausted(format!(
                "quota {} exceeded: limit {limit}, current usage {current}, this change needs {delta} more; \
                 free some up or ask the cluster operator to raise the quota",
                kind.as_str()
            ))),
            None => Err(CaddyError::exhausted(format!(
                "quota {}: current usage {current} plus {delta} overflows; the change is too large",
                kind.as_str()
            ))),
        }
    }

    /// [`Self::check`], then records the use.
    pub fn add(&mut self, quotas: &Quotas, kind: QuotaKind, delta: u64) -> Result<(), CaddyError> {
        self.check(quotas, kind, delta)?;
        if let Some(slot) = self.slot(kind) {
            *slot = slot.saturating_add(delta);
        }
        Ok(())
    }

    /// Records that `delta` of `kind` was freed (saturating at zero).
    pub fn release(&mut self, kind: QuotaKind, delta: u64) {
        if let Some(slot) = self.slot(kind) {
            *slot = slot.saturating_sub(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn exact_limit_is_ok_one_more_is_refused() {
        let quotas =
            Quotas { max_users: 3, max_storage_bytes: 100, max_documents: 0, max_api_keys: 1, ..Quotas::default() };
        for kind in QuotaKind::ALL.into_iter().filter(|k| *k != QuotaKind::RequestsPerSecond) {
            let mut usage = Usage::default();
            let limit = quotas.limit(kind);
            usage.add(&quotas, kind, limit).unwrap();
            let before = usage;
            let err = usage.add(&quotas, kind, 1).unwrap_err();
            assert_eq!(err.code, ErrorCode::ResourceExhausted);
            assert!(err.message.contains(kind.as_str()), "{}", err.message);
            assert!(err.message.contains(&format!("limit {limit}")), "{}", err.message);
            assert_eq!(usage, before, "a refused change changes nothing");
        }
        // Requests per second: the caller passes the rate including this request.
        let rps = quotas.max_requests_per_second;
        assert!(Usage::default().check(&quotas, QuotaKind::RequestsPerSecond, rps).is_ok());
        let err = Usage::default().check(&quotas, QuotaKind::RequestsPerSecond, rps + 1).unwrap_err();
        assert!(err.message.contains("max_requests_per_second"), "{}", err.message);
        let mut usage = Usage { storage_bytes: 60, ..Usage::default() };
        let err = usage.check(&quotas, QuotaKind::StorageBytes, 41).unwrap_err();
        assert!(err.message.contains("current usage 60"), "{}", err.message);
        usage.release(QuotaKind::StorageBytes, 100);
        assert_eq!(usage.storage_bytes, 0);
        usage.check(&quotas, QuotaKind::StorageBytes, 100).unwrap();
    }

    #[test]
    fn overflow_is_refused() {
        let quotas = Quotas::unlimited();
        let mut usage = Usage { storage_bytes: u64::MAX - 1, ..Usage::default() };
        usage.add(&quotas, QuotaKind::StorageBytes, 1).unwrap();
        let err = usage.add(&quotas, QuotaKind::StorageBytes, 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert!(err.message.contains("overflows"), "{}", err.message);
        assert_eq!(usage.storage_bytes, u64::MAX);
        assert!(usage.check(&quotas, QuotaKind::Users, u64::MAX).is_ok());
    }
}
