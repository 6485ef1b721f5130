//! Rally: a real-time game server and library speaking WebTransport over
//! HTTP/3, with a WebSocket fallback, and native and browser clients.
//!
//! Rally owns everything between the socket and the game — transports,
//! sessions, delivery classes, input numbering, resume, limits, the tick
//! clock and snapshot fan-out; the game ([`game::Game`]) owns its state and
//! what the bytes mean. Start a server with [`Server::builder`].
//!
//! Layers, from the wire up: `protocol` (pure codec), `transport` (adapters
//! and front ends), `session` (transport-agnostic session driver), `room`
//! (the tick loop around a game). `server` wires them together; `games`
//! holds the built-in games; `client` is the native client.

pub mod admin;
pub mod auth;
pub mod cert;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod game;
pub mod games;
pub mod http;
pub mod kind;
pub mod launch;
pub mod metrics;
pub mod protocol;
pub mod room;
pub mod server;
pub mod session;
pub mod shared;
pub mod transport;

pub use bytes;
pub use game::{Ctx, Delivery, Game, Join, PlayerId, Reject, RoomInfo, To, View};
pub use server::Server;
