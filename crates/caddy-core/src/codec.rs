//! Sealed records: every value CADDY persists or sends between peers is
//! `[format version: u8][checksum: 8 bytes][postcard payload]`.
//!
//! The checksum (first 8 bytes of blake3 over version and payload) turns a
//! torn or bit-flipped record into a [`CodecError::Checksum`] instead of a
//! silently wrong value; the version byte lets a reader refuse formats it
//! does not know instead of misreading them.

use serde::{Serialize, de::DeserializeOwned};

const HEADER: usize = 9;

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// Fewer bytes than a header.
    #[error("record truncated: {0} bytes")]
    Truncated(usize),
    /// The checksum does not match the content: corruption.
    #[error("record checksum mismatch (corrupted data)")]
    Checksum,
    /// Written by a format this build does not understand.
    #[error("unknown record format version {found} (this build reads up to {supported})")]
    UnknownVersion {
        /// Version byte found.
        found: u8,
        /// Highest version this build reads.
        supported: u8,
    },
    /// Checksum matched but the payload is not the expected type.
    #[error("record payload malformed: {0}")]
    Malformed(String),
    /// The value could not be serialized.
    #[error("record could not be encoded: {0}")]
    Encode(String),
}

fn checksum(version: u8, payload: &[u8]) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[version]);
    hasher.update(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

/// Serializes `value` as a sealed record of format `version`.
pub fn seal<T: Serialize + ?Sized>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let payload = postcard::to_allocvec(value).map_err(|e| CodecError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(version);
    out.extend_from_slice(&checksum(version, &payload));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks and decodes a sealed record whose version is at most `supported`.
pub fn open<T: DeserializeOwned>(supported: u8, bytes: &[u8]) -> Result<(u8, T), CodecError> {
    if bytes.len() < HEADER {
        return Err(CodecError::Truncated(bytes.len()));
    }
    let version = bytes[0];
    let payload = &bytes[HEADER..];
    if bytes[1..HEADER] != checksum(version, payload) {
        return Err(CodecError::Checksum);
    }
    if version == 0 || version > supported {
        return Err(CodecError::UnknownVersion { found: version, supported });
    }
    let value = postcard::from_bytes(payload).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok((version, value))
}

/// Plain postcard encoding, for peer messages that travel inside an already
/// integrity-protected channel (TLS).
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_allocvec(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Plain postcard decoding; never panics on arbitrary input.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_detect_every_single_bit_flip() {
        let record = seal(1, &("key", 42u64, vec![1u8, 2, 3])).unwrap();
        let (v, back): (u8, (String, u64, Vec<u8>)) = open(1, &record).unwrap();
        assert_eq!((v, back), (1, ("key".to_string(), 42, vec![1, 2, 3])));
        for byte in 0..record.len() {
            for bit in 0..8 {
                let mut bad = record.clone();
                bad[byte] ^= 1 << bit;
                assert!(open::<(String, u64, Vec<u8>)>(1, &bad).is_err(), "flip {byte}:{bit} undetected");
            }
        }
        assert_eq!(open::<u8>(1, &record[..5]), Err(CodecError::Truncated(5)));
        let newer = seal(3, &7u8).unwrap();
        assert_eq!(open::<u8>(2, &newer), Err(CodecError::UnknownVersion { found: 3, supported: 2 }));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = open::<crate::Proposal>(1, &bytes);
            let _ = from_bytes::<crate::Proposal>(&bytes);
        }
    }
}

#[cfg(test)]
mod format_tests {
    /// `serde_bytes` must not change the stored form of a value: postcard
    /// writes a byte sequence and a byte string identically (length, then
    /// raw bytes), so records written before it still read back.
    #[test]
    fn byte_strings_keep_the_sequence_encoding() {
        #[derive(serde::Serialize)]
        struct AsSeq(Vec<u8>);
        #[derive(serde::Serialize)]
        struct AsBytes(#[serde(with = "serde_bytes")] Vec<u8>);
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(super::to_bytes(&AsSeq(data.clone())).unwrap(), super::to_bytes(&AsBytes(data)).unwrap());
    }
}
