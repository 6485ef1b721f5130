//! `GET /rooms/NAME` (where a room lives) and `GET /rooms` (the rooms of
//! the cluster), served by every node over HTTP/3 and HTTP/1.1
//! (PROTOCOL.md §13.2). Without `--redis` they answer for this one node, so
//! a client can always ask.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{hex_hashes, ClusterError, NodeRecord};
use crate::http::json_response;
use crate::protocol::valid_room_name;
use crate::shared::Shared;

/// Answers `/rooms` and `/rooms/NAME`; `None` for any other path.
pub async fn route(method: &Method, path: &str, shared: &Arc<Shared>) -> Option<Response<Bytes>> {
    let rest = path.strip_prefix("/rooms")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET only".into(),
        ));
    }
    Some(match rest.strip_prefix('/') {
        None | Some("") => rooms(shared).await,
        Some(name) => locate(name, shared).await,
    })
}

fn error(status: StatusCode, code: &str, reason: String) -> Response<Bytes> {
    let mut resp = json_response(status, json!({"error": code, "reason": reason}));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    resp
}

fn unavailable(e: ClusterError) -> Response<Bytes> {
    tracing::debug!(error = %e, "room lookup failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

/// This node as a record, for answers without a cluster.
fn this_node(shared: &Shared) -> NodeRecord {
    let list = shared.rooms.list();
    NodeRecord {
        addr: shared.node.clone(),
        cert_hashes: if shared.alt_svc.is_none() {
            hex_hashes(&shared.certs)
        } else {
            Vec::new()
        },
        sessions: shared.live.len() as u64,
        rooms: list.len() as u64,
        players: list.iter().map(|(_, p)| *p as u64).sum(),
        cpu: 0.0,
        draining: shared.shutdown.is_cancelled(),
        started_unix_ms: 0,
        room_players: list.into_iter().collect(),
    }
}

fn located(room: &str, rec: &NodeRecord, shared: &Shared, nodes: Vec<String>) -> Value {
    json!({
        "room": room,
        "node": rec.addr.id,
        "url": rec.addr.url,
        "wt_url": rec.addr.wt_url,
        "cert_hashes": rec.cert_hashes,
        "players": rec.room_players.get(room),
        "here": rec.addr.id == shared.node.id,
        "nodes": nodes,
    })
}

async fn locate(room: &str, shared: &Arc<Shared>) -> Response<Bytes> {
    if !valid_room_name(room) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_room",
            "room names are 1-32 of A-Z a-z 0-9 _ -".into(),
        );
    }
    let Some(cluster) = &shared.cluster else {
        let me = this_node(shared);
        let nodes = vec![me.addr.url.clone()];
        return json_response(StatusCode::OK, located(room, &me, shared, nodes));
    };
    if shared.rooms.is_local(room) && !cluster.is_draining() {
        let me = this_node(shared);
        let nodes = match cluster.nodes().await {
            Ok(n) => live_urls(&n),
            Err(_) => vec![me.addr.url.clone()],
        };
        return json_response(StatusCode::OK, located(room, &me, shared, nodes));
    }
    match cluster.locate(room).await {
        Ok(rec) => {
            let nodes = cluster
                .nodes()
                .await
                .map(|n| live_urls(&n))
                .unwrap_or_default();
            json_response(StatusCode::OK, located(room, &rec, shared, nodes))
        }
        Err(e) => unavailable(e),
    }
}

fn live_urls(nodes: &[NodeRecord]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| !n.draining)
        .map(|n| n.addr.url.clone())
        .collect()
}

fn node_json(n: &NodeRecord, shared: &Shared) -> Value {
    json!({
        "id": n.addr.id,
        "url": n.addr.url,
        "wt_url": n.addr.wt_url,
        "sessions": n.sessions,
        "rooms": n.rooms,
        "players": n.players,
        "cpu": n.cpu,
        "draining": n.draining,
        "local": n.addr.id == shared.node.id,
    })
}

async fn rooms(shared: &Arc<Shared>) -> Response<Bytes> {
    let nodes = match &shared.cluster {
        None => vec![this_node(shared)],
        Some(cluster) => match cluster.read_nodes().await {
            Ok(n) => n,
            Err(e) => return unavailable(e),
        },
    };
    let mut rooms = Vec::new();
    for n in &nodes {
        for (name, players) in &n.room_players {
            rooms.push(json!({
                "name": name,
                "players": players,
                "node": n.addr.id,
                "url": n.addr.url,
            }));
        }
    }
    let nodes: Vec<Value> = nodes.iter().map(|n| node_json(n, shared)).collect();
    json_response(StatusCode::OK, json!({"nodes": nodes, "rooms": rooms}))
}

/// The cluster's nodes as `/admin` lists them (this node alone without a
/// cluster, or when Redis cannot be read).
pub async fn nodes_json(shared: &Arc<Shared>) -> Vec<Value> {
    let nodes = match &shared.cluster {
        Some(cluster) => cluster
            .nodes()
            .await
            .unwrap_or_else(|_| vec![this_node(shared)]),
        None => vec![this_node(shared)],
    };
    nodes.iter().map(|n| node_json(n, shared)).collect()
}
