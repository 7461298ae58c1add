//! Chunk addresses: the blake3 hash of a chunk's content and the tenant that
//! owns it.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::BlobError;

/// Longest tenant name accepted in a chunk key.
pub const MAX_TENANT_LEN: usize = 64;

/// The blake3 hash of a chunk's bytes: its content address.
///
/// Orders by its bytes, which is also the order of its lowercase hex form.
/// Serializes as a 64-character lowercase hex string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// The hash of `data` (blake3).
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// The 64-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 64-character hex form (either case).
    pub fn parse(text: &str) -> Result<Self, BlobError> {
        if text.len() != 64 {
            return Err(BlobError::InvalidKey(format!(
                "chunk hash must be 64 hex characters, got {} characters",
                text.len()
            )));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out)
            .map_err(|_| BlobError::InvalidKey("chunk hash must contain only hex characters".into()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", self.to_hex())
    }
}

impl Serialize for ChunkHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = ChunkHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-character hex blake3 hash")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ChunkHash, E> {
                ChunkHash::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(HexVisitor)
    }
}

/// Checks a tenant name before it is used in a path: 1 to 64 characters, each
/// one of `a-z`, `0-9` or `-`.
pub fn validate_tenant(tenant: &str) -> Result<(), BlobError> {
    if tenant.is_empty() || tenant.len() > MAX_TENANT_LEN {
        return Err(BlobError::InvalidKey(format!(
            "tenant name must be 1 to {MAX_TENANT_LEN} characters, got {}",
            tenant.len()
        )));
    }
    if !tenant.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(BlobError::InvalidKey(format!(
            "tenant name {:?} may contain only a-z, 0-9 and '-'",
            truncate_for_message(tenant)
        )));
    }
    Ok(())
}

fn truncate_for_message(s: &str) -> &str {
    match s.char_indices().nth(MAX_TENANT_LEN) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Orders two tenant names the way their storage paths order: as if each
/// were followed by `/`. This differs from plain string order only when one
/// name is a prefix of the other followed by `-` (`"a-b"` sorts before `"a"`
/// because `-` < `/`), and keeps [`ChunkKey`] order equal to the
/// lexicographic order of object-store keys.
pub fn tenant_path_cmp(a: &str, b: &str) -> Ordering {
    a.bytes().chain(std::iter::once(b'/')).cmp(b.bytes().chain(std::iter::once(b'/')))
}

/// The address of one stored chunk: its tenant and the blake3 of its bytes.
///
/// Keys order by tenant (in path order, see [`tenant_path_cmp`]), then by
/// hash; this is the order of [`BlobStore::list`](crate::BlobStore::list) on
/// every backend. The tenant is not checked on construction through the
/// public fields; every store operation validates it before use.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkKey {
    /// Owning tenant (`[a-z0-9-]{1,64}`).
    pub tenant: String,
    /// Content address.
    pub hash: ChunkHash,
}

impl ChunkKey {
    /// A key with a validated tenant name.
    pub fn new(tenant: impl Into<String>, hash: ChunkHash) -> Result<Self, BlobError> {
        let key = Self { tenant: tenant.into(), hash };
        key.validate()?;
        Ok(key)
    }

    /// The key for `data` under `tenant` (hashes `data`).
    pub fn for_data(tenant: impl Into<String>, data: &[u8]) -> Result<Self, BlobError> {
        Self::new(tenant, ChunkHash::of(data))
    }

    /// Checks the tenant name (see [`validate_tenant`]).
    pub fn validate(&self) -> Result<(), BlobError> {
        validate_tenant(&self.tenant)
    }
}

impl Ord for ChunkKey {
    fn cmp(&self, other: &Self) -> Ordering {
        tenant_path_cmp(&self.tenant, &other.tenant).then_with(|| self.hash.cmp(&other.hash))
    }
}

impl PartialOrd for ChunkKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.hash)
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkKey({}/{})", self.tenant, self.hash)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hash_hex_round_trip_and_serde() {
        let h = ChunkHash::of(b"hello");
        assert_eq!(h.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(ChunkHash::parse(&h.to_hex()).unwrap(), h);
        assert_eq!(ChunkHash::parse(&h.to_hex().to_uppercase()).unwrap(), h);
        assert_eq!(h.to_string(), h.to_hex());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", h.to_hex()));
        assert_eq!(serde_json::from_str::<ChunkHash>(&json).unwrap(), h);
        assert!(serde_json::from_str::<ChunkHash>("\"abc\"").is_err());
        let key = ChunkKey::new("t1", h).unwrap();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<ChunkKey>(&json).unwrap(), key);
    }

    #[test]
    fn bad_hashes_refused() {
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert!(matches!(ChunkHash::parse(bad), Err(BlobError::InvalidKey(_))));
        }
        // Multi-byte characters with a byte length of 64 are refused too.
        assert!(ChunkHash::parse(&"é".repeat(32)).is_err());
    }

    #[test]
    fn tenant_rules() {
        for ok in ["a", "tenant-1", "0", &"a".repeat(64)] {
            validate_tenant(ok).unwrap();
        }
        for bad in ["", "A", "../x", "a/b", "a b", ".", "é", &"a".repeat(65)] {
            assert!(matches!(validate_tenant(bad), Err(BlobError::InvalidKey(_))), "{bad:?}");
        }
    }

    #[test]
    fn key_order_matches_path_order() {
        let h = ChunkHash([0; 32]);
        let mut keys: Vec<ChunkKey> =
            ["a", "a-b", "ab", "a0", "b"].iter().map(|t| ChunkKey::new(*t, h).unwrap()).collect();
        keys.sort();
        let mut paths: Vec<String> = keys.iter().map(|k| format!("{}/{}", k.tenant, k.hash)).collect();
        let sorted_keys = paths.clone();
        paths.sort();
        assert_eq!(paths, sorted_keys);
    }
}
