//! Files: metadata calls ([`Client::file`] and the `file_*` helpers),
//! streamed uploads from any `AsyncRead + AsyncSeek` and streamed (ranged)
//! downloads to any `AsyncWrite`, both with progress callbacks and resume.
//!
//! - An upload reads its source twice, one chunk at a time: once to hash
//!   every chunk, once to send the chunks the server asks for. An
//!   interrupted upload is sent again on the same exactly-once lane; the
//!   server then asks only for the chunks it did not receive, and a commit
//!   that happened before the interruption is answered, not repeated.
//! - A download that breaks is resumed from the byte it reached, pinned to
//!   the version it started with.
//!
//! Memory stays bounded by one chunk on either side.

use std::time::Duration;

use caddy_core::files::{
    Access, CHUNK_BYTES, FileAnswer, FileCall, FileInfo, FileQuery, FolderInfo, LinkInfo, ShareInfo, StorageUsage,
    TrashEntry, VersionInfo,
};
use caddy_wire::{read_frame, write_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::client::unexpected;
use crate::error::settle;
use crate::pb::{self, request::Body as Req, response::Body as Resp};
use crate::{Client, ClientError, ErrorCode, Outcome};

/// How many times a transfer is resumed after a failure before giving up.
const RESUME_ATTEMPTS: u32 = 8;
/// Pause before resuming.
const RESUME_PAUSE: Duration = Duration::from_millis(500);

/// Where a new upload goes and what it is.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// The new file's name (ignored with `new_version_of`).
    pub name: String,
    /// Its folder (`None`: the root).
    pub folder: Option<String>,
    /// Upload a new version of this file instead of a new file.
    pub new_version_of: Option<String>,
    /// Media type (empty: guessed from the name).
    pub media_type: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// Which bytes to download.
#[derive(Debug, Clone, Default)]
pub struct DownloadOptions {
    /// A version (default: the current one).
    pub version: Option<u64>,
    /// First byte.
    pub offset: u64,
    /// How many bytes (default: to the end).
    pub length: Option<u64>,
}

/// What a download delivered.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// The file as the server described it.
    pub file: FileInfo,
    /// The version the bytes belong to.
    pub version: u64,
    /// Bytes written.
    pub bytes: u64,
}

fn decode(bytes: &[u8]) -> Result<FileAnswer, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("undecodable file answer: {e}")))
}

fn unexpected_file(expected: &str, got: &FileAnswer) -> ClientError {
    let kind = serde_json::to_value(got)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_default();
    ClientError::Protocol(format!("expected a {expected} answer, got {kind}"))
}

fn resumable(e: &ClientError) -> bool {
    e.code() == ErrorCode::Unavailable
}

fn file_of(answer: FileAnswer) -> Result<FileInfo, ClientError> {
    match answer {
        FileAnswer::File(f) => Ok(f),
        other => Err(unexpected_file("file", &other)),
    }
}

fn stream_error(e: caddy_wire::FrameError, what: &str) -> ClientError {
    if e.is_protocol_violation() {
        ClientError::Protocol(e.to_string())
    } else {
        ClientError::Unavailable(format!("{what} interrupted: {e}"))
    }
}

async fn next_file_frame(recv: &mut quinn::RecvStream, max_frame: usize) -> Result<pb::FileResponse, ClientError> {
    match read_frame::<pb::Response, _>(recv, max_frame).await {
        Ok(pb::Response { body: Some(Resp::File(f)), .. }) => Ok(f),
        Ok(pb::Response { body: Some(Resp::Error(err)), .. }) => Err(ClientError::from_pb(err)),
        Ok(pb::Response { body: Some(other), .. }) => Err(unexpected("file", &other)),
        Ok(pb::Response { body: None, .. }) => Err(ClientError::Protocol("response without a body".into())),
        Err(e) => Err(stream_error(e, "file stream")),
    }
}

/// Hashes a source chunk by chunk; returns its size and chunk hashes.
async fn hash_chunks<R: AsyncRead + AsyncSeek + Unpin>(source: &mut R) -> Result<(u64, Vec<String>), ClientError> {
    source.seek(std::io::SeekFrom::Start(0)).await?;
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let (mut size, mut hashes) = (0u64, Vec::new());
    loop {
        let n = read_full(source, &mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hashes.push(blake3::hash(&buf[..n]).to_hex().to_string());
        if n < buf.len() {
            break;
        }
    }
    Ok((size, hashes))
}

/// Fills `buf` unless the source ends first; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(source: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = source.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// One page of a folder's content.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderPage {
    /// The folder listed (`None`: the root).
    pub folder: Option<FolderInfo>,
    /// Its subfolders on this page.
    pub folders: Vec<FolderInfo>,
    /// Its files on this page.
    pub files: Vec<FileInfo>,
    /// The `after` cursor of the next page, if there is one.
    pub next: Option<String>,
}

impl Client {
    /// Sends one metadata call (not an upload or download).
    pub async fn file(&self, call: &FileCall) -> Result<FileAnswer, ClientError> {
        if matches!(call, FileCall::Upload { .. } | FileCall::Download { .. }) {
            return Err(ClientError::Config("use file_upload / file_download for transfers".into()));
        }
        let bytes = serde_json::to_vec(call).map_err(|e| ClientError::Protocol(format!("encoding call: {e}")))?;
        let write = !call.is_read();
        let (first, _) = self.call_stream(Req::File(pb::FileRequest { call: bytes }), write, None).await?;
        let Resp::File(first) = first else { return settle(write, Err(unexpected("file", &first))) };
        settle(write, decode(&first.answer))
    }

    /// Uploads `source` as a new file or a new version. `progress(sent,
    /// total)` is called as chunks go out (chunks the cluster already holds
    /// count as sent).
    pub async fn file_upload<R, P>(
        &self,
        source: &mut R,
        options: &UploadOptions,
        mut progress: P,
    ) -> Result<FileInfo, ClientError>
    where
        R: AsyncRead + AsyncSeek + Unpin,
        P: FnMut(u64, u64),
    {
        let (size, chunks) = hash_chunks(source).await?;
        let call = FileCall::Upload {
            name: options.name.clone(),
            folder: options.folder.clone(),
            file: options.new_version_of.clone(),
            size,
            media_type: options.media_type.clone(),
            tags: options.tags.clone(),
            chunks,
        };
        let bytes = serde_json::to_vec(&call).map_err(|e| ClientError::Protocol(format!("encoding call: {e}")))?;
        let lane = self.write_lane();
        let mut attempt = 0;
        // Some attempt went out and ended without an answer: the upload
        // may have committed, even if a later attempt never got through.
        let mut in_doubt = false;
        loop {
            let body = Req::File(pb::FileRequest { call: bytes.clone() });
            let lane_ids = lane.lane();
            let result =
                self.upload_once(body, lane_ids.client_id, lane_ids.sequence, source, size, &mut progress).await;
            in_doubt |= result.as_ref().is_err_and(|e| e.outcome() == Outcome::Unknown);
            match result {
                Err(e) if resumable(&e) && attempt < RESUME_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!(error = %e, attempt, "upload interrupted; resuming");
                    tokio::time::sleep(RESUME_PAUSE).await;
                }
                Err(e) if in_doubt => {
                    let e = e.after_doubt();
                    // A typed refusal is still definitive (but for one with
                    // a retry-after); a lane dropped unused is in doubt for
                    // good.
                    if e.outcome() == Outcome::NotApplied {
                        lane.complete();
                    }
                    return Err(e);
                }
                // A definitive answer (success, refusal), or nothing ever
                // sent: the lane can carry the next write.
                other => {
                    lane.complete();
                    return other;
                }
            }
        }
    }

    async fn upload_once<R, P>(
        &self,
        body: Req,
        client_id: u64,
        sequence: u64,
        source: &mut R,
        size: u64,
        progress: &mut P,
    ) -> Result<FileInfo, ClientError>
    where
        R: AsyncRead + AsyncSeek + Unpin,
        P: FnMut(u64, u64),
    {
        let (first, send, recv) = self.open_duplex(body, client_id, sequence).await?;
        // The upload call is on the server: whatever fails from here on
        // may come after its commit.
        settle(true, self.upload_chunks(first, send, recv, source, size, progress).await)
    }

    /// The rest of an upload once its call was answered: the chunks the
    /// server asked for, then its final answer.
    async fn upload_chunks<R, P>(
        &self,
        first: Resp,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        source: &mut R,
        size: u64,
        progress: &mut P,
    ) -> Result<FileInfo, ClientError>
    where
        R: AsyncRead + AsyncSeek + Unpin,
        P: FnMut(u64, u64),
    {
        let Resp::File(first) = first else { return Err(unexpected("file", &first)) };
        let need = match decode(&first.answer)? {
            FileAnswer::Need { chunks } => chunks,
            // Already committed (a retried upload whose answer was lost).
            FileAnswer::File(f) => return Ok(f),
            other => return Err(unexpected_file("need", &other)),
        };
        let needed_bytes: u64 = need
            .iter()
            .map(|i| {
                let start = u64::from(*i) * u64::from(CHUNK_BYTES);
                size.saturating_sub(start).min(u64::from(CHUNK_BYTES))
            })
            .sum();
        let mut sent = size.saturating_sub(needed_bytes);
        progress(sent, size);
        let mut buf = vec![0u8; CHUNK_BYTES as usize];
        for index in need {
            let start = u64::from(index) * u64::from(CHUNK_BYTES);
            if start >= size {
                return Err(ClientError::Protocol(format!("server asked for chunk {index} past the end")));
            }
            let len = (size - start).min(u64::from(CHUNK_BYTES)) as usize;
            source.seek(std::io::SeekFrom::Start(start)).await?;
            let n = read_full(source, &mut buf[..len]).await?;
            if n != len {
                return Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file changed while it was being uploaded",
                )));
            }
            let chunk = pb::FileChunk { index, data: buf[..len].to_vec() };
            if let Err(e) = write_frame(&mut send, &chunk).await {
                // The server may have refused the upload: prefer its answer.
                if let Ok(f) = next_file_frame(&mut recv, self.max_frame_bytes()).await {
                    return file_of(decode(&f.answer)?);
                }
                return Err(stream_error(e, "upload"));
            }
            sent += len as u64;
            progress(sent, size);
        }
        let _ = send.finish();
        let last = next_file_frame(&mut recv, self.max_frame_bytes()).await?;
        file_of(decode(&last.answer)?)
    }

    /// Uploads a local file; the name defaults to the file's own.
    pub async fn file_upload_path<P: FnMut(u64, u64)>(
        &self,
        path: &std::path::Path,
        options: &UploadOptions,
        progress: P,
    ) -> Result<FileInfo, ClientError> {
        let mut options = options.clone();
        if options.name.is_empty() && options.new_version_of.is_none() {
            options.name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        }
        let mut file = tokio::fs::File::open(path).await?;
        self.file_upload(&mut file, &options, progress).await
    }

    /// Downloads a file (or, with `link`, a share link's file without a
    /// credential) into `sink`. `progress(written, total)`.
    pub async fn file_download<W, P>(
        &self,
        file: Option<&str>,
        link: Option<&str>,
        options: &DownloadOptions,
        sink: &mut W,
        mut progress: P,
    ) -> Result<Downloaded, ClientError>
    where
        W: AsyncWrite + Unpin,
        P: FnMut(u64, u64),
    {
        let mut version = options.version;
        let mut offset = options.offset;
        let mut remaining = options.length;
        let mut written = 0u64;
        let mut described: Option<(FileInfo, u64, u64)> = None;
        let mut attempt = 0;
        loop {
            let call = FileCall::Download {
                file: file.map(str::to_owned),
                link: link.map(str::to_owned),
                version,
                offset,
                length: remaining,
            };
            let result = self.download_once(&call, sink, &mut written, &mut described, &mut progress).await;
            match result {
                Ok(()) => break,
                Err(e) if resumable(&e) && attempt < RESUME_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!(error = %e, written, "download interrupted; resuming");
                    if let Some((_, v, total)) = &described {
                        version = Some(*v);
                        offset = options.offset + written;
                        remaining = Some(total.saturating_sub(written));
                    }
                    tokio::time::sleep(RESUME_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
        sink.flush().await?;
        let (file, version, _) = described.ok_or_else(|| ClientError::Protocol("download without an answer".into()))?;
        Ok(Downloaded { file, version, bytes: written })
    }

    async fn download_once<W, P>(
        &self,
        call: &FileCall,
        sink: &mut W,
        written: &mut u64,
        described: &mut Option<(FileInfo, u64, u64)>,
        progress: &mut P,
    ) -> Result<(), ClientError>
    where
        W: AsyncWrite + Unpin,
        P: FnMut(u64, u64),
    {
        let bytes = serde_json::to_vec(call).map_err(|e| ClientError::Protocol(format!("encoding call: {e}")))?;
        let (first, mut recv) = self.call_stream(Req::File(pb::FileRequest { call: bytes }), false, None).await?;
        let Resp::File(first) = first else { return Err(unexpected("file", &first)) };
        let (file, version, length) = match decode(&first.answer)? {
            FileAnswer::Download { file, version, length, .. } => (file, version, length),
            other => return Err(unexpected_file("download", &other)),
        };
        // The first answer fixes the total; a resumed one covers the rest.
        let total = described.as_ref().map(|d| d.2).unwrap_or(length);
        if described.is_none() {
            *described = Some((file, version, length));
        }
        let mut more = first.more;
        let mut got = 0u64;
        progress(*written, total);
        while more {
            let frame = next_file_frame(&mut recv, self.max_frame_bytes()).await?;
            got += frame.payload.len() as u64;
            if got > length {
                return Err(ClientError::Protocol("server sent more bytes than it announced".into()));
            }
            sink.write_all(&frame.payload).await?;
            *written += frame.payload.len() as u64;
            progress(*written, total);
            more = frame.more;
        }
        if got != length {
            return Err(ClientError::Unavailable(format!("download ended after {got} of {length} bytes")));
        }
        Ok(())
    }

    /// Downloads to a local path (written to a temporary file beside it,
    /// then renamed, so a failed download leaves no partial file).
    pub async fn file_download_path<P: FnMut(u64, u64)>(
        &self,
        file: Option<&str>,
        link: Option<&str>,
        options: &DownloadOptions,
        path: &std::path::Path,
        progress: P,
    ) -> Result<Downloaded, ClientError> {
        let tmp = path.with_extension(format!("part-{}", std::process::id()));
        let mut out = tokio::fs::File::create(&tmp).await?;
        let result = self.file_download(file, link, options, &mut out, progress).await;
        match result {
            Ok(d) => {
                out.sync_all().await?;
                drop(out);
                tokio::fs::rename(&tmp, path).await?;
                Ok(d)
            }
            Err(e) => {
                drop(out);
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Creates a folder.
    pub async fn file_mkdir(&self, name: &str, parent: Option<&str>) -> Result<FolderInfo, ClientError> {
        match self.file(&FileCall::Mkdir { name: name.into(), parent: parent.map(str::to_owned) }).await? {
            FileAnswer::Folder(f) => Ok(f),
            other => Err(unexpected_file("folder", &other)),
        }
    }

    /// One page of a folder (`None`: the root): its subfolders and files.
    pub async fn file_list(
        &self,
        folder: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<FolderPage, ClientError> {
        let call =
            FileCall::List { folder: folder.map(str::to_owned), after: after.map(str::to_owned), limit: Some(limit) };
        match self.file(&call).await? {
            FileAnswer::List { folder, folders, files, next } => Ok(FolderPage { folder, folders, files, next }),
            other => Err(unexpected_file("list", &other)),
        }
    }

    /// A file's or folder's description.
    pub async fn file_info(&self, id: &str) -> Result<FileAnswer, ClientError> {
        self.file(&FileCall::Info { id: id.into() }).await
    }

    /// Moves a file or folder into `to` (`root` for the root).
    pub async fn file_move(&self, id: &str, to: &str) -> Result<FileAnswer, ClientError> {
        self.file(&FileCall::Mv { id: id.into(), to: to.into() }).await
    }

    /// Renames a file or folder.
    pub async fn file_rename(&self, id: &str, name: &str) -> Result<FileAnswer, ClientError> {
        self.file(&FileCall::Rename { id: id.into(), name: name.into() }).await
    }

    /// Replaces a file's tags.
    pub async fn file_set_tags(&self, file: &str, tags: &[String]) -> Result<FileInfo, ClientError> {
        file_of(self.file(&FileCall::Tags { file: file.into(), tags: tags.to_vec() }).await?)
    }

    /// A file's stored versions, newest first.
    pub async fn file_versions(&self, file: &str) -> Result<Vec<VersionInfo>, ClientError> {
        match self.file(&FileCall::Versions { file: file.into() }).await? {
            FileAnswer::Versions { versions } => Ok(versions),
            other => Err(unexpected_file("versions", &other)),
        }
    }

    /// Makes an old version current again (as a new version).
    pub async fn file_restore_version(&self, file: &str, version: u64) -> Result<FileInfo, ClientError> {
        file_of(self.file(&FileCall::RestoreVersion { file: file.into(), version }).await?)
    }

    /// Shares a file with a user or team (`user-N`/`team-N`).
    pub async fn file_share(
        &self,
        file: &str,
        with: &str,
        access: Access,
        expires_ms: Option<u64>,
    ) -> Result<Vec<ShareInfo>, ClientError> {
        let call = FileCall::Share { file: file.into(), with: with.into(), access, expires_ms };
        self.shares_of(self.file(&call).await?)
    }

    /// Ends a share.
    pub async fn file_unshare(&self, file: &str, with: &str) -> Result<Vec<ShareInfo>, ClientError> {
        self.shares_of(self.file(&FileCall::Unshare { file: file.into(), with: with.into() }).await?)
    }

    /// A file's shares.
    pub async fn file_shares(&self, file: &str) -> Result<Vec<ShareInfo>, ClientError> {
        self.shares_of(self.file(&FileCall::Shares { file: file.into() }).await?)
    }

    fn shares_of(&self, answer: FileAnswer) -> Result<Vec<ShareInfo>, ClientError> {
        match answer {
            FileAnswer::Shares { shares } => Ok(shares),
            other => Err(unexpected_file("shares", &other)),
        }
    }

    /// Creates a share link; returns it and its token (shown only now).
    pub async fn file_link(&self, file: &str, expires_ms: Option<u64>) -> Result<(LinkInfo, String), ClientError> {
        match self.file(&FileCall::Link { file: file.into(), expires_ms }).await? {
            FileAnswer::Link { link, token: Some(token) } => Ok((link, token)),
            other => Err(unexpected_file("link", &other)),
        }
    }

    /// Removes a share link.
    pub async fn file_unlink(&self, file: &str, link: u64) -> Result<(), ClientError> {
        self.file(&FileCall::Unlink { file: file.into(), link }).await.map(|_| ())
    }

    /// A file's share links.
    pub async fn file_links(&self, file: &str) -> Result<Vec<LinkInfo>, ClientError> {
        match self.file(&FileCall::Links { file: file.into() }).await? {
            FileAnswer::Links { links } => Ok(links),
            other => Err(unexpected_file("links", &other)),
        }
    }

    /// Marks or unmarks a file as favorite.
    pub async fn file_favorite(&self, file: &str, on: bool) -> Result<FileInfo, ClientError> {
        let call =
            if on { FileCall::Favorite { file: file.into() } } else { FileCall::Unfavorite { file: file.into() } };
        file_of(self.file(&call).await?)
    }

    /// The caller's favorite files.
    pub async fn file_favorites(&self) -> Result<Vec<FileInfo>, ClientError> {
        self.files_of(self.file(&FileCall::Favorites).await?)
    }

    /// The caller's recently opened or changed files, newest first.
    pub async fn file_recent(&self) -> Result<Vec<FileInfo>, ClientError> {
        self.files_of(self.file(&FileCall::Recent).await?)
    }

    /// Files matching `query`, one page.
    pub async fn file_search(
        &self,
        query: &FileQuery,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<FileInfo>, Option<String>), ClientError> {
        let call = FileCall::Search { query: query.clone(), after: after.map(str::to_owned), limit: Some(limit) };
        match self.file(&call).await? {
            FileAnswer::Files { files, next } => Ok((files, next)),
            other => Err(unexpected_file("files", &other)),
        }
    }

    fn files_of(&self, answer: FileAnswer) -> Result<Vec<FileInfo>, ClientError> {
        match answer {
            FileAnswer::Files { files, .. } => Ok(files),
            other => Err(unexpected_file("files", &other)),
        }
    }

    /// Moves a file, folder or document to the trash.
    pub async fn file_trash(&self, id: &str) -> Result<(), ClientError> {
        self.file(&FileCall::Rm { id: id.into() }).await.map(|_| ())
    }

    /// What is in the trash.
    pub async fn file_trash_list(&self) -> Result<Vec<TrashEntry>, ClientError> {
        match self.file(&FileCall::Trash).await? {
            FileAnswer::Trash { items } => Ok(items),
            other => Err(unexpected_file("trash", &other)),
        }
    }

    /// Brings an item back from the trash.
    pub async fn file_restore(&self, id: &str) -> Result<FileAnswer, ClientError> {
        self.file(&FileCall::Restore { id: id.into() }).await
    }

    /// Deletes a trashed item for good.
    pub async fn file_purge(&self, id: &str) -> Result<(), ClientError> {
        self.file(&FileCall::Purge { id: id.into() }).await.map(|_| ())
    }

    /// The tenant's storage use and quota.
    pub async fn storage_usage(&self) -> Result<StorageUsage, ClientError> {
        match self.file(&FileCall::Usage).await? {
            FileAnswer::Usage(u) => Ok(u),
            other => Err(unexpected_file("usage", &other)),
        }
    }
}
