//! Rally: a real-time game server speaking WebTransport over HTTP/3, with a
//! WebSocket fallback, a native client and a transport lab.
//!
//! Layers, from the wire up: `protocol` (pure codec), `transport` (adapters
//! and front ends), `session` (transport-agnostic session driver), `room`
//! (authoritative tick loop). `server` wires them together.

pub mod auth;
pub mod cert;
pub mod cli;
pub mod client;
pub mod config;
pub mod http;
pub mod lab;
pub mod load;
pub mod metrics;
pub mod protocol;
pub mod room;
pub mod server;
pub mod session;
pub mod transport;
