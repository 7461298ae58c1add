//! Length-delimited protobuf frames on a byte stream.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame larger than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Limit in force.
        limit: usize,
    },
    /// The bytes were not a valid protobuf message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The stream ended cleanly before a frame started.
    #[error("stream closed")]
    Closed,
    /// The stream ended in the middle of a frame or failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// True when the peer sent bytes that violate the protocol (as opposed to
    /// the connection going away).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(self, FrameError::TooLarge { .. } | FrameError::Malformed(_))
    }
}

/// Reads one frame and decodes it as `M`. Returns [`FrameError::Closed`] on a
/// clean end of stream before the length prefix.
pub async fn read_frame<M, R>(reader: &mut R, limit: usize) -> Result<M, FrameError>
where
    M: Message + Default,
    R: AsyncRead + Unpin,
{
    let mut len_buf = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = reader.read(&mut len_buf[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Err(FrameError::Closed);
            }
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        filled += n;
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).await?;
    Ok(M::decode(buf.as_slice())?)
}

/// Encodes `msg` and writes it as one frame.
pub async fn write_frame<M, W>(writer: &mut W, msg: &M) -> Result<(), FrameError>
where
    M: Message,
    W: AsyncWrite + Unpin,
{
    let len = msg.encoded_len();
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, limit: u32::MAX as usize })?;
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&len32.to_be_bytes());
    msg.encode(&mut buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    writer.write_all(&buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let req = pb::Request {
            credential: "x".into(),
            client_id: 7,
            sequence: 1,
            body: Some(pb::request::Body::Get(pb::GetRequest { key: "k".into(), serializable: false })),
            ..Default::default()
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).await.unwrap();
        let got: pb::Request = read_frame(&mut buf.as_slice(), 1024).await.unwrap();
        assert_eq!(got, req);

        let err = read_frame::<pb::Request, _>(&mut buf.as_slice(), 4).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");

        let mut garbage = vec![0, 0, 0, 3, 0xff, 0xff, 0xff];
        let err = read_frame::<pb::Request, _>(&mut garbage.as_slice(), 1024).await.unwrap_err();
        assert!(err.is_protocol_violation(), "{err}");
        garbage.truncate(5);
        let err = read_frame::<pb::Request, _>(&mut garbage.as_slice(), 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err}");
        let err = read_frame::<pb::Request, _>(&mut [].as_slice(), 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Closed), "{err}");
    }
}

#[cfg(test)]
mod garbage_tests {
    use super::*;
    use crate::pb;

    /// Arbitrary bytes on a stream yield a frame, a typed error or a clean
    /// close: never a panic, never an allocation past the limit.
    #[tokio::test]
    async fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && bytes.len() >= 4 {
                // A plausible length prefix, so decoding is reached too.
                let body = (bytes.len() - 4) as u32;
                bytes[..4].copy_from_slice(&body.to_be_bytes());
            }
            let _ = read_frame::<pb::Request, _>(&mut bytes.as_slice(), 1024).await;
            let _ = read_frame::<pb::Response, _>(&mut bytes.as_slice(), 1024).await;
        }
    }
}
