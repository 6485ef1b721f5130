//! A user-supplied certificate: the TCP side serves HTTPS and WSS with it and
//! advertises HTTP/3 with Alt-Svc; and `rally cert` makes and reports the
//! development certificate.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{within, Server};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rally::protocol::{ClientMsg, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

fn client_tls(cert_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &cert_pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

#[tokio::test]
async fn a_real_certificate_serves_https_and_wss_and_advertises_http3() {
    // A certificate made elsewhere, handed to the server as PEM files.
    let dir = std::env::temp_dir().join(format!("rally-tls-{}", std::process::id()));
    let bundle =
        rally::cert::generate_dev(time::OffsetDateTime::now_utc(), time::Duration::days(5))
            .unwrap();
    rally::cert::write_dev(&dir, &bundle).unwrap();
    let (cert, key) = rally::cert::dev_paths(&dir);
    let server = Server::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let tls = client_tls(&std::fs::read(&cert).unwrap());

    // HTTPS on the TCP port, with Alt-Svc naming the UDP port.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/health")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let alt = resp
        .headers()
        .get("alt-svc")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(alt, format!("h3=\":{}\"; ma=86400", server.port));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");

    // Plain HTTP on the same port is not served any more.
    assert!(rally::client::http_get(&server.url(), "/health")
        .await
        .is_err());

    // WSS: a session over TLS.
    let url = format!("wss://localhost:{}/rally", server.port);
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async_tls_with_config(url, tcp, None, Some(connector))
            .await
            .unwrap();
    let hello = ClientMsg::Hello {
        version: 2,
        room: "tls".into(),
        name: "secure".into(),
        app: Bytes::new(),
    };
    ws.send(Message::Binary(hello.to_bytes())).await.unwrap();
    let first = within(5, "welcome over wss", ws.next())
        .await
        .unwrap()
        .unwrap();
    let Message::Binary(b) = first else {
        panic!("{first:?}")
    };
    assert!(matches!(
        ServerMsg::decode(&b).unwrap(),
        ServerMsg::Welcome(_)
    ));

    // /cert-hash reports the user's certificate.
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(server.cert_sha256, bundle.sha256_hex());
}

#[test]
fn cert_command_creates_reuses_and_prints_the_hash() {
    let dir = std::env::temp_dir().join(format!("rally-certcmd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rally"))
            .args(["cert", "--json", "--cert-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run();
    let again = run();
    assert_eq!(first["hex"], again["hex"], "a valid certificate is kept");
    let pem = std::fs::read(dir.join("dev.pem")).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    use sha2::Digest;
    assert_eq!(
        first["hex"],
        hex::encode(sha2::Sha256::digest(&der)).as_str()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With a real certificate the TCP listener speaks HTTP/2 (ALPN `h2`), and
/// an HTTP streaming session's stream and POSTs share that one connection
/// (PROTOCOL.md §11).
#[tokio::test]
async fn http_streaming_runs_over_one_http2_connection() {
    let dir = std::env::temp_dir().join(format!("rally-h2-{}", std::process::id()));
    let bundle =
        rally::cert::generate_dev(time::OffsetDateTime::now_utc(), time::Duration::days(5))
            .unwrap();
    rally::cert::write_dev(&dir, &bundle).unwrap();
    let (cert, key) = rally::cert::dev_paths(&dir);
    let server = Server::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let mut tls = (*client_tls(&std::fs::read(&cert).unwrap())).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let base = format!("https://localhost:{}", server.port);
    let open = http::Request::get(format!("{base}/rally/http"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(open).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let id = resp.headers()["rally-session"]
        .to_str()
        .unwrap()
        .to_string();
    let mut down = resp.into_body();
    let mut dec = rally::protocol::FrameDecoder::new(65_535);
    // The stream opens with a keep-alive Pong before anything is POSTed:
    // Firefox resolves fetch() only when body bytes arrive (§11.1).
    let opening = within(2, "the stream's opening Pong", async {
        loop {
            if let Some(m) = dec.decode().unwrap() {
                return ServerMsg::decode(&m).unwrap();
            }
            let data = down.frame().await.unwrap().unwrap().into_data().unwrap();
            dec.buffer().extend_from_slice(&data);
        }
    })
    .await;
    assert!(
        matches!(
            opening,
            ServerMsg::Pong {
                client_time_us: 0,
                ..
            }
        ),
        "{opening:?}"
    );
    // Hello, POSTed on the same connection.
    let hello = ClientMsg::Hello {
        version: 2,
        room: "h2".into(),
        name: "two".into(),
        app: Bytes::new(),
    };
    let mut frame = bytes::BytesMut::new();
    rally::protocol::encode_frame(&mut frame, &hello.to_bytes());
    let post = http::Request::post(format!("{base}/rally/http/{id}?seq=1"))
        .body(http_body_util::Full::new(frame.freeze()))
        .unwrap();
    let answer = send.send_request(post).await.unwrap();
    assert_eq!(answer.status(), 204);
    let first = within(5, "Welcome over h2", async {
        loop {
            if let Some(m) = dec.decode().unwrap() {
                return ServerMsg::decode(&m).unwrap();
            }
            let data = down.frame().await.unwrap().unwrap().into_data().unwrap();
            dec.buffer().extend_from_slice(&data);
        }
    })
    .await;
    assert!(matches!(first, ServerMsg::Welcome(_)), "{first:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
