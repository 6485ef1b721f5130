//! The transport lab: `rally compare` runs one game scenario over each
//! transport through a packet-level impaired path and reports what players
//! would feel. Layers: `impair` (pure per-packet decisions) and `stats`
//! (pure measurement arithmetic); `packet` (pure: which packets open a
//! connection) and `sse` (pure: the event-stream parser); `tun`, `netns`
//! and `forward` (the namespaces, TUN devices and the user-space link
//! between them); `probe` (the measuring clients, `rally lab-client`) with
//! `streaming` (its HTTP streaming clients) and `cert` (the h2 row's
//! certificate); `compare` (orchestration); `report` (JSON, table, HTML).
//! The server knows nothing of the lab.

pub mod cert;
pub mod compare;
pub mod forward;
pub mod impair;
pub mod netns;
pub mod packet;
pub mod probe;
pub mod report;
pub mod sse;
pub mod stats;
pub mod streaming;
pub mod tun;

pub use compare::{CompareArgs, LabTransport};
pub use probe::ProbeArgs;
