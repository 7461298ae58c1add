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
//!
//! Invariant: every record the writer produces, the reader accepts. A table
//! value longer than [`PIECE_BYTES`] (a compacted document can be hundreds
//! of MiB) is written as a [`SnapshotRecord::Large`] record holding the
//! record with its value left empty, followed by [`SnapshotRecord::Piece`]s
//! of at most [`PIECE_BYTES`] that the reader joins back; so no frame is
//! ever longer than a piece plus its key, and the reader's frame bound
//! ([`MAX_FRAME`]) is above that by construction. The joined value grows as
//! pieces arrive: a header cannot make the reader allocate ahead of data.
//!
//! Format 1 (before pieces) is read as it is: it is format 2 without them.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use caddy_core::codec;
use serde::{Deserialize, Serialize};

use crate::RECORD_VERSION;
use crate::types::{LogId, SnapshotMeta, StoredMembership};

const MAGIC: &[u8; 8] = b"CADDYSNP";
/// Snapshot container format written by this build.
pub const SNAPSHOT_FORMAT: u32 = 2;
/// Oldest format this build still reads.
const OLDEST_FORMAT: u32 = 1;
const HEADER_LEN: u64 = 8 + 4 + 8 + 32;
/// Values longer than this are written in pieces of this size.
pub const PIECE_BYTES: usize = 4 * 1024 * 1024;
/// Largest single frame accepted when reading: a piece, or a value up to a
/// piece, plus a key (at most a few KiB) and the record's envelope.
const MAX_FRAME: usize = PIECE_BYTES + 1024 * 1024;
/// Largest value joined from pieces: what a redb value can hold.
const MAX_JOINED: u64 = u32::MAX as u64;

// Frames are bounded by construction, not by luck.
const _: () = assert!(MAX_FRAME > PIECE_BYTES + caddy_core::limits::MAX_KEY_BYTES + 64);

/// Why a snapshot file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a CADDY snapshot at all.
    #[error("not a CADDY snapshot (bad magic)")]
    BadMagic,
    /// Written by a newer format.
    #[error("snapshot format {0} is not supported (this build reads {OLDEST_FORMAT} to {SNAPSHOT_FORMAT})")]
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
    /// A client session of a build before scoped lanes (not written any
    /// more; skipped on install).
    Session(u64, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A join token of an older build (hash, expiry); ignored on install.
    JoinToken(#[serde(with = "serde_bytes")] Vec<u8>, u64),
    /// An identity record (see [`crate::identity`]).
    Ident(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A document record (see [`crate::docs`]).
    Doc(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A file-system record (see [`crate::files`]).
    File(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A record whose value is too long for one frame: the record with an
    /// empty value, then `len` bytes of [`SnapshotRecord::Piece`]s.
    Large {
        /// The record, its value left empty.
        record: Box<SnapshotRecord>,
        /// Length of the value the pieces add up to.
        len: u64,
    },
    /// The next part of a [`SnapshotRecord::Large`] value.
    Piece(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A client session lane (see [`crate::sessions`]); [`SnapshotRecord::Session`]
    /// is what builds before scoped lanes wrote, and is skipped on install.
    ClientSession(#[serde(with = "serde_bytes")] Vec<u8>, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A join token or node certificate record (see [`crate::cluster`]).
    Cluster(String, #[serde(with = "serde_bytes")] Vec<u8>),
}

impl SnapshotRecord {
    /// The stored value a table record carries.
    fn value_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            SnapshotRecord::Kv(_, v)
            | SnapshotRecord::Event(_, v)
            | SnapshotRecord::Session(_, v)
            | SnapshotRecord::Ident(_, v)
            | SnapshotRecord::Doc(_, v)
            | SnapshotRecord::File(_, v)
            | SnapshotRecord::ClientSession(_, v)
            | SnapshotRecord::Cluster(_, v) => Some(v),
            SnapshotRecord::Header(_)
            | SnapshotRecord::JoinToken(..)
            | SnapshotRecord::Large { .. }
            | SnapshotRecord::Piece(_) => None,
        }
    }
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
    piece_bytes: usize,
}

impl SnapshotWriter {
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let mut file = File::create(path)?;
        file.write_all(&[0u8; HEADER_LEN as usize])?;
        Ok(Self { out: BufWriter::new(file), hasher: blake3::Hasher::new(), len: 0, piece_bytes: PIECE_BYTES })
    }

    /// Splits values at `bytes` instead of [`PIECE_BYTES`] (tests of the
    /// piece boundaries, without writing megabytes).
    #[cfg(test)]
    pub(crate) fn with_piece_bytes(mut self, bytes: usize) -> Self {
        self.piece_bytes = bytes.clamp(1, PIECE_BYTES);
        self
    }

    /// Appends a record, in pieces if its value is longer than a piece.
    pub(crate) fn push(&mut self, record: SnapshotRecord) -> io::Result<()> {
        let mut record = record;
        let value = match record.value_mut() {
            Some(v) if v.len() > self.piece_bytes => std::mem::take(v),
            _ => return self.push_frame(&record),
        };
        let len = value.len() as u64;
        if len > MAX_JOINED {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a stored value of {len} bytes is over the snapshot limit of {MAX_JOINED} bytes"),
            ));
        }
        self.push_frame(&SnapshotRecord::Large { record: Box::new(record), len })?;
        for piece in value.chunks(self.piece_bytes) {
            self.push_frame(&SnapshotRecord::Piece(piece.to_vec()))?;
        }
        Ok(())
    }

    fn push_frame(&mut self, record: &SnapshotRecord) -> io::Result<()> {
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
    if !(OLDEST_FORMAT..=SNAPSHOT_FORMAT).contains(&format) {
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

    /// The next whole record (pieces already joined), or `None` at the end.
    pub(crate) fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SnapshotError> {
        let Some(record) = self.next_frame()? else { return Ok(None) };
        let (mut record, len) = match record {
            SnapshotRecord::Large { record, len } => (*record, len),
            SnapshotRecord::Piece(_) => return Err(SnapshotError::Record("a piece outside a large record".into())),
            other => return Ok(Some(other)),
        };
        if len > MAX_JOINED {
            return Err(SnapshotError::Record(format!("a value of {len} bytes is over the limit of {MAX_JOINED}")));
        }
        let mut joined = Vec::new();
        while (joined.len() as u64) < len {
            match self.next_frame()? {
                Some(SnapshotRecord::Piece(piece)) if joined.len() as u64 + piece.len() as u64 <= len => {
                    joined.extend_from_slice(&piece);
                }
                Some(SnapshotRecord::Piece(_)) => {
                    return Err(SnapshotError::Record(format!("pieces add up to more than the {len} bytes announced")));
                }
                _ => return Err(SnapshotError::Record(format!("a large record ends before its {len} bytes"))),
            }
        }
        match record.value_mut() {
            Some(value) if value.is_empty() => *value = joined,
            _ => return Err(SnapshotError::Record("a large record that holds no empty table value".into())),
        }
        Ok(Some(record))
    }

    fn next_frame(&mut self) -> Result<Option<SnapshotRecord>, SnapshotError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::{Rng, SeedableRng};

    use super::*;

    fn write(path: &Path, piece: usize, records: &[SnapshotRecord]) {
        let mut writer = SnapshotWriter::create(path).unwrap().with_piece_bytes(piece);
        writer.push(SnapshotRecord::Header(SmMeta::default())).unwrap();
        for r in records {
            writer.push(r.clone()).unwrap();
        }
        writer.finish().unwrap();
    }

    fn read_all(path: &Path) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        let mut file = File::open(path)?;
        verify_snapshot_file(&mut file)?;
        let mut reader = SnapshotReader::open(&mut file)?;
        let mut out = Vec::new();
        while let Some(r) = reader.next_record()? {
            if !matches!(r, SnapshotRecord::Header(_)) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Whatever the writer writes, the reader gives back, for value sizes
    /// around every piece boundary and in every kind of table record.
    #[test]
    fn every_value_size_around_the_piece_bounds_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for piece in [1usize, 7, 64] {
            let mut sizes = vec![0usize, 1, 2];
            for k in 1..=3 {
                sizes.extend([k * piece - 1, k * piece, k * piece + 1]);
            }
            sizes.extend((0..20).map(|_| rng.random_range(0..5 * piece + 3)));
            let mut records = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                let value: Vec<u8> = (0..*size).map(|_| rng.random()).collect();
                records.push(match i % 6 {
                    0 => SnapshotRecord::Kv(format!("k{i}"), value),
                    1 => SnapshotRecord::Event(i as u64, value),
                    2 => SnapshotRecord::Session(i as u64, value),
                    3 => SnapshotRecord::Ident(format!("i{i}"), value),
                    4 => SnapshotRecord::Doc(format!("d{i}"), value),
                    _ => SnapshotRecord::File(format!("f{i}"), value),
                });
                records.push(SnapshotRecord::JoinToken(vec![i as u8; 32], i as u64));
            }
            let path = dir.path().join(format!("p{piece}.snap"));
            write(&path, piece, &records);
            assert_eq!(read_all(&path).unwrap(), records, "piece size {piece}");
        }
    }

    /// The production piece size: a value over the old 64 MiB frame limit
    /// (a large compacted document) is written and read back.
    #[test]
    fn a_value_larger_than_any_frame_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.snap");
        let value: Vec<u8> = (0..65 * 1024 * 1024 + 3).map(|i| (i % 253) as u8).collect();
        let mut writer = SnapshotWriter::create(&path).unwrap();
        writer.push(SnapshotRecord::Header(SmMeta::default())).unwrap();
        writer.push(SnapshotRecord::Doc("t/acme/s/0000000000000001".into(), value.clone())).unwrap();
        writer.finish().unwrap();
        let back = read_all(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert!(matches!(&back[0], SnapshotRecord::Doc(k, v) if k == "t/acme/s/0000000000000001" && *v == value));
    }

    /// Piece sequences the writer never makes are refused, not misread.
    #[test]
    fn malformed_piece_sequences_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let large = |len| SnapshotRecord::Large { record: Box::new(SnapshotRecord::Kv("k".into(), Vec::new())), len };
        let cases: Vec<(&str, Vec<SnapshotRecord>)> = vec![
            ("a piece alone", vec![SnapshotRecord::Piece(vec![1])]),
            ("too few pieces", vec![large(4), SnapshotRecord::Piece(vec![1, 2])]),
            ("too many bytes", vec![large(2), SnapshotRecord::Piece(vec![1, 2, 3])]),
            (
                "another record inside",
                vec![large(2), SnapshotRecord::Kv("x".into(), vec![1]), SnapshotRecord::Piece(vec![1])],
            ),
            (
                "no table value",
                vec![
                    SnapshotRecord::Large { record: Box::new(SnapshotRecord::Piece(vec![])), len: 1 },
                    SnapshotRecord::Piece(vec![1]),
                ],
            ),
            ("over the bound", vec![large(MAX_JOINED + 1)]),
        ];
        for (i, (what, frames)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("bad{i}.snap"));
            let mut writer = SnapshotWriter::create(&path).unwrap();
            writer.push_frame(&SnapshotRecord::Header(SmMeta::default())).unwrap();
            for f in &frames {
                writer.push_frame(f).unwrap();
            }
            writer.finish().unwrap();
            assert!(matches!(read_all(&path), Err(SnapshotError::Record(_))), "{what} was accepted");
        }
    }
}
