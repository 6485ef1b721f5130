//! Provides the client and server support for WebTransport sessions.
//!
//! # Relevant Links
//! WebTransport: <https://www.w3.org/TR/webtransport/#biblio-web-transport-http3>
//! WebTransport over HTTP/3: <https://datatracker.ietf.org/doc/html/draft-ietf-webtrans-http3/>
#![deny(missing_docs)]
// Rally patch: vendored upstream code, kept as published: the lints it
// predates are silenced rather than the code changed.
#![allow(mismatched_lifetime_syntaxes, clippy::all)]

/// Server side WebTransport session support
pub mod server;
/// Webtransport stream types
pub mod stream;

pub use h3::webtransport::SessionId;
