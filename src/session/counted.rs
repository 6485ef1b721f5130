//! Counting, in one place for every transport: the session's transport
//! halves and its room's direct path are wrapped so that each protocol
//! message in or out bumps the session's own counters ([`SessionInfo`]).
//!
//! Bytes are those of protocol messages (PROTOCOL.md §3): what the codec
//! decodes and encodes, without the transports' framing (length prefixes,
//! WebSocket headers, datagram prefixes) or what the kernel adds. The
//! wrappers are generic, so the session's calls stay static; the room's
//! direct path gains one indirect call per message, beside the transport's
//! own.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::live::{PathRtt, SessionInfo};
use super::{Carriage, TransportError, TransportRx, TransportTx};
use crate::kind::Channel;
use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::room::DirectSink;

pub(super) struct CountedRx<R> {
    pub inner: R,
    pub info: Arc<SessionInfo>,
}

impl<R: TransportRx> TransportRx for CountedRx<R> {
    async fn recv(&mut self) -> Result<Option<(Bytes, Channel)>, TransportError> {
        let got = self.inner.recv().await;
        if let Ok(Some((msg, _))) = &got {
            self.info.count_in(msg.len());
        }
        got
    }
}

pub(super) struct CountedTx<T> {
    pub inner: T,
    pub info: Arc<SessionInfo>,
}

impl<T: TransportTx> TransportTx for CountedTx<T> {
    async fn queue(&mut self, msg: Bytes) -> Result<(), TransportError> {
        let len = msg.len();
        self.inner.queue(msg).await?;
        self.info.count_out(len);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.inner.flush().await
    }

    async fn send_latest(&mut self, head: &[u8], body: &[u8]) -> Result<Carriage, TransportError> {
        let carriage = self.inner.send_latest(head, body).await?;
        self.info.count_out(head.len() + body.len());
        Ok(carriage)
    }

    async fn keepalive(&mut self) -> Result<(), TransportError> {
        self.inner.keepalive().await
    }

    async fn close(&mut self, code: Option<CloseCode>) {
        self.inner.close(code).await
    }

    fn direct_sink(&self, metrics: &Arc<Metrics>) -> Option<Arc<dyn DirectSink>> {
        let inner = self.inner.direct_sink(metrics)?;
        Some(Arc::new(CountedSink {
            inner,
            info: self.info.clone(),
        }))
    }

    fn rtt(&self) -> Option<PathRtt> {
        self.inner.rtt()
    }
}

/// The room's direct path to the session, counted like the session's own
/// sends.
struct CountedSink {
    inner: Arc<dyn DirectSink>,
    info: Arc<SessionInfo>,
}

impl DirectSink for CountedSink {
    fn try_send(&self, arena: &mut BytesMut, head: &[u8], body: &[u8]) -> bool {
        let sent = self.inner.try_send(arena, head, body);
        if sent {
            self.info.count_out(head.len() + body.len());
        }
        sent
    }

    fn arena_bytes(&self, len: usize) -> usize {
        self.inner.arena_bytes(len)
    }

    fn stop(&self) {
        self.inner.stop()
    }

    fn ordered(&self) -> bool {
        self.inner.ordered()
    }
}
