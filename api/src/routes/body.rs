//! Reading a request body once the route's gate passed ([`super::route`]): bounded, refused
//! from its `Content-Length` before a byte is read when it declares too much, and as soon as
//! a chunked body grows past the bound.

use std::pin::pin;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::http::header::CONTENT_LENGTH;
use warp::http::HeaderMap;
use warp::{Filter, Rejection};

use super::route::{gate, Gate, Pass, Route};
use crate::app::RegistryApp;
use crate::error::ApiError;

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// It is, or declares to be, larger than the route accepts.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The route's limit in bytes.
        limit: u64,
    },
    /// The connection failed or the client stopped while sending it.
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            BodyError::Unreadable(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

/// The body of a request whose `headers` came with it, of at most `limit` bytes. A body in
/// one chunk is handed on without a copy.
pub async fn read<S, B>(headers: &HeaderMap, body: S, limit: u64) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        let n = chunk.remaining();
        len = len.saturating_add(n);
        if len > max {
            return Err(BodyError::TooLarge { limit });
        }
        let bytes = chunk.copy_to_bytes(n);
        match (&mut first, &mut joined) {
            (None, None) => first = Some(bytes),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(f.len() + bytes.len());
                buf.extend_from_slice(f);
                buf.extend_from_slice(&bytes);
                first = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&bytes),
        }
    }
    Ok(match (first, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

/// A request that passed its gate, with its body.
pub type GatedBody = Result<(Pass, Bytes), ApiError>;

/// The gate of `route`, then, once it passed, the body of at most `limit` bytes (see
/// [`read`]); never rejects.
pub fn gated(
    app: &RegistryApp,
    route: &'static Route,
    limit: u64,
) -> impl Filter<Extract = (GatedBody,), Error = Rejection> + Clone {
    gate(app, route)
        .and(warp::body::stream())
        .then(move |gate: Gate, body| async move {
            let pass = gate?;
            let bytes = read(&pass.headers, body, limit).await?;
            Ok((pass, bytes))
        })
}
