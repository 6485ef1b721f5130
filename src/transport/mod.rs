//! Transport adapters: each translates one network stack to the session
//! layer's traits and does nothing else. Front ends (`quic`, `tcp`) accept
//! connections and route HTTP; adapters (`webtransport`, `websocket`) carry
//! one session.

pub mod quic;
pub mod streaming;
pub mod tcp;
pub mod tcp_info;
pub mod websocket;
pub mod webtransport;
pub mod wire;
