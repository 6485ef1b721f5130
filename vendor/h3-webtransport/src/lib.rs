//! Provides the client and server support for WebTransport sessions.
//!
//! # Relevant Links
//! WebTransport: <https://www.w3.org/TR/webtransport/#biblio-web-transport-http3>
//! WebTransport over HTTP/3: <https://datatracker.ietf.org/doc/html/draft-ietf-webtrans-http3/>
#![deny(missing_docs)]
// Rally patch: the 0.1.2 sources predate this lint; silence it rather than
// touch code the patch does not need.
#![allow(mismatched_lifetime_syntaxes)]

/// Server side WebTransport session support
pub mod server;
/// Webtransport stream types
pub mod stream;

pub use h3::webtransport::SessionId;
