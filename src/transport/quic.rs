//! QUIC front end: one quinn endpoint serving HTTP/3 requests and
//! WebTransport sessions (extended CONNECT, RFC 9220) on one UDP port, in
//! every draft's dialect (`dialect`).

mod dialect;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h3::server::RequestStream;
use h3::ConnectionState as _;
use http::{Method, Request, Response, StatusCode};
use tracing::Instrument;

use crate::http::{route, RALLY_PATH};
use crate::session::Opening;
use crate::shared::Shared;
use crate::transport::webtransport;

/// Time a client has to send a request's headers once its stream is open.
const REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type H3Conn = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// Longest wait for a client's SETTINGS after its CONNECT arrived.
const SETTINGS_WAIT: Duration = Duration::from_secs(3);

pub async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let peer = incoming.remote_address();
        let opening = Opening::now(Some(peer));
        let Some(guard) = shared.admit(peer.ip()) else {
            tracing::debug!(%peer, "QUIC connection refused: connection limit");
            incoming.refuse();
            continue;
        };
        let span = tracing::debug_span!("quic", %peer);
        let shared2 = shared.clone();
        shared.tasks.spawn(
            async move {
                let _guard = guard;
                // Boxed, so their sizes are not the task's for life: an
                // async fn is as large as its largest state, and the
                // handshake states are the largest (BENCHMARKS.md,
                // "Performance").
                let Some(wt) = Box::pin(connection(incoming, shared2.clone(), opening)).await
                else {
                    return;
                };
                let span = tracing::info_span!("wt", peer = %wt.quic.remote_address());
                Box::pin(webtransport::run(wt, shared2))
                    .instrument(span)
                    .await
            }
            .instrument(span),
        );
    }
}

/// One QUIC connection: serves its HTTP/3 requests until it ends or a
/// WebTransport session is accepted, which it returns to be run.
async fn connection(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    opening: Opening,
) -> Option<webtransport::Accepted> {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("QUIC handshake failed: {e}");
            return None;
        }
    };
    let quic = conn.clone();
    let mut builder = h3::server::builder();
    builder
        .enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1)
        .max_field_section_size(shared.cfg.limits.h3_max_header)
        .send_grease(true)
        .additional_settings(dialect::SETTINGS);
    let built = builder.build(h3_quinn::Connection::new(conn)).await;
    let mut h3conn = match built {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("HTTP/3 setup failed: {e}");
            return None;
        }
    };
    loop {
        let accepted = tokio::select! {
            a = h3conn.accept() => a,
            _ = shared.shutdown.cancelled() => {
                // RFC 9114 §5.2: GOAWAY, then let requests in flight finish.
                let _ = tokio::time::timeout(Duration::from_secs(1), h3conn.shutdown(0)).await;
                return None;
            }
        };
        let resolver = match accepted {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!("HTTP/3 connection ended: {e}");
                return None;
            }
        };
        let (req, stream) =
            match tokio::time::timeout(REQUEST_HEADER_TIMEOUT, resolver.resolve_request()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::debug!("bad HTTP/3 request: {e}");
                    continue;
                }
                Err(_) => {
                    tracing::debug!("HTTP/3 request headers timed out");
                    continue;
                }
            };
        if req.method() == Method::CONNECT {
            let is_wt = dialect::is_webtransport(req.extensions().get());
            if is_wt && req.uri().path() == RALLY_PATH {
                let origin = req
                    .headers()
                    .get(http::header::ORIGIN)
                    .and_then(|v| v.to_str().ok());
                let claims = match shared.authorize(origin, req.uri().query()) {
                    Ok(c) => c,
                    Err(refusal) => {
                        tokio::spawn(respond(stream, plain(refusal.status())));
                        continue;
                    }
                };
                let stream_id = stream.id().into_inner();
                if !await_peer_settings(&mut h3conn, &shared).await {
                    tracing::info!(
                        "CONNECT refused: the client's SETTINGS do not enable WebTransport"
                    );
                    // Served on like any refusal: returning would drop the
                    // connection, and its close the 400 not yet delivered.
                    tokio::spawn(respond(stream, plain(StatusCode::BAD_REQUEST)));
                    continue;
                }
                let headers = dialect::response_headers(req.headers());
                return match webtransport::Session::accept_with_headers(
                    req, stream, h3conn, headers,
                )
                .await
                {
                    Ok(session) => Some(webtransport::Accepted {
                        session: Arc::new(session),
                        connect_stream_id: stream_id,
                        quic,
                        claims,
                        opening,
                    }),
                    Err(e) => {
                        tracing::info!("WebTransport session refused: {e}");
                        None
                    }
                };
            }
            // Browsers report every refusal as an opaque handshake failure,
            // so say here what was refused.
            tracing::info!(
                path = req.uri().path(),
                webtransport = is_wt,
                "CONNECT refused: 404"
            );
            shared
                .metrics
                .connect_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(respond(stream, plain(StatusCode::NOT_FOUND)));
            continue;
        }
        tokio::spawn(request(req, stream, shared.clone()));
    }
}

/// Waits (bounded) until the client's SETTINGS enabling WebTransport have
/// arrived. RFC 9114 §7.2.4.2: "packets carrying the settings can be lost
/// or delayed", so a CONNECT can overtake them; h3-webtransport would refuse
/// such a session outright (seen under packet loss in the lab). Polling
/// `accept` drives the control stream; a request that arrives meanwhile is
/// served.
async fn await_peer_settings(h3conn: &mut H3Conn, shared: &Arc<Shared>) -> bool {
    let deadline = tokio::time::Instant::now() + SETTINGS_WAIT;
    while !h3conn.settings().enable_webtransport() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::select! {
            accepted = h3conn.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        match resolver.resolve_request().await {
                            // One session per connection: a second CONNECT is refused.
                            Ok((req, stream)) if req.method() == Method::CONNECT => {
                                respond(stream, plain(StatusCode::TOO_MANY_REQUESTS)).await
                            }
                            Ok((req, stream)) => request(req, stream, shared).await,
                            Err(e) => tracing::debug!("bad HTTP/3 request: {e}"),
                        }
                    });
                }
                Ok(None) | Err(_) => return false,
            },
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    true
}

fn plain(status: StatusCode) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

async fn request(req: Request<()>, stream: Stream, shared: Arc<Shared>) {
    shared
        .metrics
        .http_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = req.uri().path();
    let resp = match crate::cluster::http::route(req.method(), path, &shared).await {
        Some(r) => r,
        None => route(req.method(), path, req.headers(), &shared),
    };
    respond(stream, resp).await;
}

async fn respond(mut stream: Stream, resp: Response<Bytes>) {
    let (parts, body) = resp.into_parts();
    let head = Response::from_parts(parts, ());
    let result = async {
        stream.send_response(head).await?;
        if !body.is_empty() {
            stream.send_data(body).await?;
        }
        stream.finish().await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("HTTP/3 response failed: {e}");
    }
}
