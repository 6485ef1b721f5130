//! Minimal HTTP/1.1 GET over hyper, for `/cert-hash` and `/health`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use url::Url;

use super::ClientError;

/// GETs `path` from the plain-HTTP origin `base`; returns status and body.
pub async fn http_get(base: &Url, path: &str) -> Result<(http::StatusCode, Bytes), ClientError> {
    if base.scheme() != "http" {
        return Err(ClientError::Url(format!(
            "{base}: only http:// is fetched directly"
        )));
    }
    let host = base
        .host_str()
        .ok_or_else(|| ClientError::Url(base.to_string()))?;
    let port = base.port_or_known_default().unwrap_or(80);
    let connect = |e: std::io::Error| ClientError::Connect(e.to_string());
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("HTTP client connection: {e}");
        }
    });
    let req = http::Request::get(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Url(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

/// Fetches and parses the server's `/cert-hash`.
pub async fn fetch_cert_hash(base: &Url) -> Result<[u8; 32], ClientError> {
    let (status, body) = http_get(base, "/cert-hash").await?;
    if !status.is_success() {
        return Err(ClientError::Connect(format!(
            "/cert-hash answered {status}"
        )));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let hex_str = v["hex"]
        .as_str()
        .ok_or_else(|| ClientError::Protocol("/cert-hash has no \"hex\"".into()))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out)
        .map_err(|e| ClientError::Protocol(format!("/cert-hash hex: {e}")))?;
    Ok(out)
}
