//! Rally's tools: what measures and exercises a Rally server from outside,
//! on top of the `rally` library. None of it is in a game server.
//!
//! - `bot`: native bots with a game-specific behaviour (`rally bot`)
//! - `soak`: churn, drops and resumes on both transports (`rally soak`)
//! - `load`: the load scenarios S1-S3 against a server child (`rally load`)
//! - `lab`: the transport comparison through packet-level impairment in
//!   network namespaces (`rally compare`)

pub mod bot;
pub mod lab;
pub mod load;
pub mod soak;
