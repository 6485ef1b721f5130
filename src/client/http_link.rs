//! The native client's HTTP streaming link (PROTOCOL.md §11, `stream`
//! mode, HTTP/1.1 over plain TCP): one connection holds the response body
//! that carries the server's messages, a second one carries the `POST`s,
//! one at a time, numbered.

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use url::Url;

use super::ClientError;
use crate::protocol::{encode_frame, FrameDecoder, MAX_SERVER_MSG};

/// The answer to a `POST` handed to its connection (a task of its own, so
/// that a cancelled send does not cancel it).
type Answer = tokio::task::JoinHandle<hyper::Result<http::Response<Incoming>>>;

pub(super) struct HttpLink {
    down: Incoming,
    decoder: FrameDecoder,
    post: SendRequest<Full<Bytes>>,
    /// `/rally/http/ID`.
    post_path: String,
    authority: String,
    origin: Option<String>,
    /// Number of the last `POST` sent.
    seq: u64,
    /// The last `POST`, until its answer is read. Kept here rather than in
    /// the future of `send`, so that a cancelled send neither leaves a gap
    /// in the numbering nor has hyper drop a request it had not written.
    answer: Option<Answer>,
}

async fn connection(url: &Url) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let host = url
        .host_str()
        .ok_or_else(|| ClientError::Url(format!("{url} has no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("HTTP streaming connection: {e}");
        }
    });
    Ok(send)
}

fn closed(reason: impl std::fmt::Display) -> ClientError {
    ClientError::Closed {
        code: None,
        reason: reason.to_string(),
    }
}

impl HttpLink {
    /// Opens a session at the server whose origin is `base`.
    pub(super) async fn open(
        base: &Url,
        query: &str,
        origin: Option<&str>,
    ) -> Result<HttpLink, ClientError> {
        if base.scheme() != "http" {
            return Err(ClientError::Url(format!(
                "{base}: the native client streams over plain http only"
            )));
        }
        let authority = base[url::Position::BeforeHost..url::Position::AfterPort].to_string();
        let mut path = crate::transport::streaming::HTTP_PATH.to_string();
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        let mut get = connection(base).await?;
        let mut req = http::Request::get(&path).header(http::header::HOST, &authority);
        if let Some(o) = origin {
            req = req.header(http::header::ORIGIN, o);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let resp = get
            .send_request(req)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if resp.status() != http::StatusCode::OK {
            return Err(ClientError::Connect(format!(
                "GET {path}: HTTP {}",
                resp.status()
            )));
        }
        let id = resp
            .headers()
            .get(crate::transport::streaming::SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Protocol("no session header".into()))?
            .to_string();
        Ok(HttpLink {
            down: resp.into_body(),
            decoder: FrameDecoder::new(MAX_SERVER_MSG),
            post: connection(base).await?,
            post_path: format!("{}/{id}", crate::transport::streaming::HTTP_PATH),
            authority,
            origin: origin.map(str::to_string),
            seq: 0,
            answer: None,
        })
    }

    /// The next server message. Cancel-safe: a body chunk is taken only by
    /// the poll that returns it, and kept in the decoder.
    pub(super) async fn recv(&mut self) -> Result<Bytes, ClientError> {
        loop {
            match self.decoder.decode() {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            match self.down.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.buffer().extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(closed(e)),
                None => return Err(closed("the stream ended")),
            }
        }
    }

    /// Sends one message in a `POST` of its own and waits for its answer.
    /// Cancel-safe in the sense that matters: the message goes out, or not
    /// at all, with the next number; a cancelled send's answer is read by
    /// the next send.
    pub(super) async fn send(&mut self, msg: &[u8]) -> Result<(), ClientError> {
        // One POST at a time (PROTOCOL.md §11.2).
        self.settle().await?;
        self.post.ready().await.map_err(closed)?;
        let mut body = BytesMut::with_capacity(2 + msg.len());
        encode_frame(&mut body, msg);
        let seq = self.seq + 1;
        let uri = format!("{}?seq={seq}", self.post_path);
        let mut req = http::Request::post(uri)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(o) = &self.origin {
            req = req.header(http::header::ORIGIN, o);
        }
        let req = req
            .body(Full::new(body.freeze()))
            .map_err(|e| ClientError::Url(e.to_string()))?;
        // Handed to the connection now; the number is spent with it.
        self.seq = seq;
        self.answer = Some(tokio::spawn(self.post.send_request(req)));
        self.settle().await
    }

    /// Reads the answer to the `POST` in flight, if any.
    async fn settle(&mut self) -> Result<(), ClientError> {
        let Some(answer) = self.answer.as_mut() else {
            return Ok(());
        };
        let resp = answer.await;
        self.answer = None;
        let resp = resp.map_err(closed)?.map_err(closed)?;
        let status = resp.status();
        // Read the (short) answer so the connection can carry the next.
        let _ = resp.into_body().collect().await;
        match status {
            http::StatusCode::NO_CONTENT => Ok(()),
            http::StatusCode::NOT_FOUND => Err(closed("the session has ended")),
            s => Err(ClientError::Protocol(format!("POST answered {s}"))),
        }
    }
}
