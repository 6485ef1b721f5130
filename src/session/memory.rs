//! An in-memory transport: a session's two halves and the peer's end of
//! them, over channels. For tests of the session layer and of games, under
//! paused time, with no sockets.
//!
//! With `datagrams` the transport behaves like WebTransport (latest-only
//! messages travel as datagrams, never queued behind reliable ones);
//! without, like WebSocket (everything in one ordered stream).

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Carriage, TransportError, TransportRx, TransportTx};
use crate::kind::Channel;
use crate::protocol::{CloseCode, ErrorCode};

/// What the peer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Message(Bytes, Channel),
    /// The server closed the session (its close, if it sent one).
    Closed(Option<CloseCode>),
}

pub struct MemoryRx {
    from_peer: mpsc::Receiver<(Bytes, Channel)>,
}

pub struct MemoryTx {
    to_peer: mpsc::UnboundedSender<Delivered>,
    queued: Vec<Bytes>,
    datagrams: bool,
}

/// The client's end.
pub struct Peer {
    to_server: Option<mpsc::Sender<(Bytes, Channel)>>,
    from_server: mpsc::UnboundedReceiver<Delivered>,
}

/// A connected transport: the session's halves and the peer.
pub fn pair(datagrams: bool) -> (MemoryRx, MemoryTx, Peer) {
    let (to_server, from_peer) = mpsc::channel(64);
    let (to_peer, from_server) = mpsc::unbounded_channel();
    (
        MemoryRx { from_peer },
        MemoryTx {
            to_peer,
            queued: Vec::new(),
            datagrams,
        },
        Peer {
            to_server: Some(to_server),
            from_server,
        },
    )
}

fn gone() -> TransportError {
    TransportError::Closed("peer dropped".into())
}

impl TransportRx for MemoryRx {
    async fn recv(&mut self) -> Result<Option<(Bytes, Channel)>, TransportError> {
        Ok(self.from_peer.recv().await)
    }
}

impl MemoryTx {
    fn deliver(&self, d: Delivered) -> Result<(), TransportError> {
        self.to_peer.send(d).map_err(|_| gone())
    }
}

impl TransportTx for MemoryTx {
    async fn queue(&mut self, msg: Bytes) -> Result<(), TransportError> {
        self.queued.push(msg);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        for msg in std::mem::take(&mut self.queued) {
            self.deliver(Delivered::Message(msg, Channel::Reliable))?;
        }
        Ok(())
    }

    async fn send_latest(&mut self, head: &[u8], body: &[u8]) -> Result<Carriage, TransportError> {
        let msg = Bytes::from([head, body].concat());
        if self.datagrams {
            self.deliver(Delivered::Message(msg, Channel::Unreliable))?;
            Ok(Carriage::Datagram)
        } else {
            self.queued.push(msg);
            Ok(Carriage::Stream)
        }
    }

    async fn keepalive(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    async fn close(&mut self, code: Option<CloseCode>) {
        let _ = self.flush().await;
        let _ = self.deliver(Delivered::Closed(code));
    }
}

impl Peer {
    /// Sends one message as the client would, on `channel`.
    pub async fn send(&self, msg: Bytes, channel: Channel) {
        if let Some(tx) = &self.to_server {
            let _ = tx.send((msg, channel)).await;
        }
    }

    /// Ends the client's side, as a clean close of its connection.
    pub fn hang_up(&mut self) {
        self.to_server = None;
    }

    /// The next thing the server sent; `None` once the session is dropped.
    pub async fn recv(&mut self) -> Option<Delivered> {
        self.from_server.recv().await
    }

    /// The close code of a close the peer received, ignoring messages.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        while let Some(d) = self.recv().await {
            if let Delivered::Closed(c) = d {
                return c;
            }
        }
        None
    }
}

/// The close code the server uses for `code` (for assertions).
pub fn error_close(code: ErrorCode) -> CloseCode {
    CloseCode {
        code: code.close_code(),
        reason: code.name(),
    }
}
