//! The snapshot file format, shared by Raft snapshots and backups.
//!
//! ```text
//! "CADDYSNP" | format: u32 LE | payload length: u64 LE | blake3(payload): 32 bytes | payload
//! payload = frame*, frame = length: u32 LE | sealed SnapshotRecord
//! ```
//!
//! The first record is always [`SnapshotRecord::Header`]. A reader verifies
//! the magic, the format, the length and the whole-payload hash before it
//! decodes a single record, so a truncated or corrupted file is rejected
//! before anything is installed; each record is also individually sealed.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use caddy_core::codec;
use serde::{Deserialize, Serialize};

use crate::RECORD_VERSION;
use crate::types::{LogId, SnapshotMeta, StoredMembership};

const MAGIC: &[u8; 8] = b"CADDYSNP";
/// Snapshot container format written by this build.
pub const SNAPSHOT_FORMAT: u32 = 1;
const HEADER_LEN: u64 = 8 + 4 + 8 + 32;
/// Largest single record accepted when reading (a value is at most 16 MiB).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Why a snapshot file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a CADDY snapshot at all.
    #[error("not a CADDY snapshot (bad magic)")]
    BadMagic,
    /// Written by a newer format.
    #[error("snapshot format {0} is not supported (this build reads {SNAPSHOT_FORMAT})")]
    Format(u32),
    /// The file is shorter or longer than its header says.
    #[error("snapshot truncated or padded: header says {expected} payload bytes, file has {actual}")]
    Length {
        /// Payload bytes announced.
        expected: u64,
        /// Payload bytes present.
        actual: u64,
    },
    /// The payload hash does not match: corruption.
    #[error("snapshot checksum mismatch (corrupted file)")]
    Checksum,
    /// A record inside is malformed or out of place.
    #[error("snapshot record invalid: {0}")]
    Record(String),
    /// Filesystem failure.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl From<SnapshotError> for io::Error {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// Identity of this cluster incarnation and its admin credential hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Generated at bootstrap.
    pub cluster_id: String,
    /// blake3 of the admin bearer credential.
    pub admin_credential_hash: [u8; 32],
}

/// The state machine's own bookkeeping, stored as one record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmMeta {
    /// Last applied log id.
    pub applied: Option<LogId>,
    /// Last applied membership.
    pub membership: StoredMembership,
    /// Global key-value revision.
    pub revision: u64,
    /// Events at or below this revision have been compacted away.
    pub compacted: u64,
    /// Set by the first `InitCluster` (the only one applied).
    pub cluster: Option<ClusterInfo>,
}

/// One record of a snapshot. The table records carry the stored bytes as they
/// are in the state machine's tables (themselves sealed records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SnapshotRecord {
    /// Always first.
    Header(SmMeta),
    /// A key and its stored record.
    Kv(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A retained watch event.
    Event(u64, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A client session.
    Session(u64, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A join token of an older build (hash, expiry); ignored on install.
    JoinToken(#[serde(with = "serde_bytes")] Vec<u8>, u64),
    /// An identity record (see [`crate::identity`]).
    Ident(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A document record (see [`crate::docs`]).
    Doc(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A file-system record (see [`crate::files`]).
    File(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A join token or node certificate record (see [`crate::cluster`]).
    Cluster(String, #[serde(with = "serde_bytes")] Vec<u8>),
}

/// A snapshot file on disk with its metadata.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// What openraft knows it by.
    pub meta: SnapshotMeta,
    /// Where it is.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// Streams records into a new snapshot file, computing the header at the end.
pub(crate) struct SnapshotWriter {
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    len: u64,
}

impl SnapshotWriter {
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let mut file = File::create(path)?;
        file.write_all(&[0u8; HEADER_LEN as usize])?;
        Ok(Self { out: BufWriter::new(file), hasher: blake3::Hasher::new(), len: 0 })
    }

    pub(crate) fn push(&mut self, record: &SnapshotRecord) -> io::Result<()> {
        let bytes = codec::seal(RECORD_VERSION, record).map_err(io::Error::other)?;
        let len = u32::try_from(bytes.len()).map_err(io::Error::other)?.to_le_bytes();
        self.hasher.update(&len);
        self.hasher.update(&bytes);
        self.out.write_all(&len)?;
        self.out.write_all(&bytes)?;
        self.len += 4 + bytes.len() as u64;
        Ok(())
    }

    /// Writes the header and fsyncs; returns the file size.
    pub(crate) fn finish(self) -> io::Result<u64> {
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(MAGIC)?;
        file.write_all(&SNAPSHOT_FORMAT.to_le_bytes())?;
        file.write_all(&self.len.to_le_bytes())?;
        file.write_all(self.hasher.finalize().as_bytes())?;
        file.sync_all()?;
        Ok(HEADER_LEN + self.len)
    }
}

/// Checks a snapshot file end to end (magic, format, length, hash) and
/// returns its header record. The file is left positioned anywhere.
pub fn verify_snapshot_file(file: &mut File) -> Result<SmMeta, SnapshotError> {
    file.seek(SeekFrom::Start(0))?;
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut header).map_err(|_| SnapshotError::BadMagic)?;
    if &header[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let mut u32b = [0u8; 4];
    u32b.copy_from_slice(&header[8..12]);
    let format = u32::from_le_bytes(u32b);
    if format != SNAPSHOT_FORMAT {
        return Err(SnapshotError::Format(format));
    }
    let mut u64b = [0u8; 8];
    u64b.copy_from_slice(&header[12..20]);
    let expected = u64::from_le_bytes(u64b);
    let actual = file.metadata()?.len().saturating_sub(HEADER_LEN);
    if expected != actual {
        return Err(SnapshotError::Length { expected, actual });
    }
    let mut hasher = blake3::Hasher::new();
    let mut reader = BufReader::new(&mut *file);
    io::copy(&mut reader, &mut hasher)?;
    if hasher.finalize().as_bytes() != &header[20..52] {
        return Err(SnapshotError::Checksum);
    }
    let mut records = SnapshotReader::open(file)?;
    match records.next_record()? {
        Some(SnapshotRecord::Header(meta)) => Ok(meta),
        _ => Err(SnapshotError::Record("first record is not a header".into())),
    }
}

/// Reads a verified snapshot's metadata (verifying it first).
pub fn read_snapshot_meta(path: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let mut file = File::open(path)?;
    let meta = verify_snapshot_file(&mut file)?;
    Ok(SnapshotMeta { last_log_id: meta.applied, last_membership: meta.membership })
}

/// Iterates the records of a snapshot file (call [`verify_snapshot_file`] first).
pub(crate) struct SnapshotReader<'f> {
    input: BufReader<&'f mut File>,
}

impl<'f> SnapshotReader<'f> {
    pub(crate) fn open(file: &'f mut File) -> Result<Self, SnapshotError> {
        file.seek(SeekFrom::Start(HEADER_LEN))?;
        Ok(Self { input: BufReader::new(file) })
    }

    pub(crate) fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SnapshotError> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(SnapshotError::Record(format!("record of {len} bytes is over the limit")));
        }
        let mut buf = vec![0u8; len];
        self.input.read_exact(&mut buf)?;
        let (_, record) = codec::open(RECORD_VERSION, &buf).map_err(|e| SnapshotError::Record(e.to_string()))?;
        Ok(Some(record))
    }
}

/// fsyncs a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
