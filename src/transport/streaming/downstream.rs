//! The downstream of an HTTP streaming session (PROTOCOL.md §11.3): the
//! server's messages waiting for the stream to take them or for a poll.
//!
//! The rule, exactly as §11.3 states it: at most [`MAX_BYTES`] wait (each
//! message counted as its frame, §2), and among them at most
//! [`MAX_LATEST`] latest-only messages (Snapshot, AppUnreliable). A message
//! that would pass either bound first drops the oldest latest-only messages
//! waiting (newest wins; the caller counts them). Reliable messages are
//! never dropped: when they alone leave no room, the writer waits for the
//! reader. A reader that takes nothing while messages wait for the
//! slow-peer timeout makes the next push fail as stalled, which closes the
//! session `too_slow` (§8).
//!
//! A stream's downstream keeps at most one Snapshot ([`STREAM_SNAPSHOTS`]):
//! its body takes messages only when the socket takes writes, so what
//! waits here waits for the socket, and only the newest tick is worth
//! sending then (§5). Polls keep up to [`MAX_LATEST`], as before.
//!
//! [`Queue`] is the rule, pure (messages and `now` in); [`Downstream`] puts
//! it between the session (writer) and the response body or polls
//! (reader).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::protocol::FRAME_HEADER_LEN;

/// Bytes of messages (with their frame headers) that may wait.
pub const MAX_BYTES: usize = 64 * 1024;
/// Latest-only messages that may wait: a slow reader gets fresh state, not
/// a backlog of stale snapshots.
pub const MAX_LATEST: usize = 16;
/// Snapshots that may wait for a stream (`stream`, `sse`): the newest
/// replaces the one waiting, as WebSocket's newest-wins slot does.
pub const STREAM_SNAPSHOTS: usize = 1;

/// A message's delivery class, as far as waiting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Kept until taken.
    Reliable,
    /// A Snapshot: newest wins.
    Snapshot,
    /// Any other latest-only message (AppUnreliable): newest wins.
    Unreliable,
}

/// Latest-only messages dropped to make room, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub snapshots: u64,
    pub unreliable: u64,
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Reliable messages leave no room: wait for the reader (the message
    /// comes back).
    Full(Bytes),
    /// The reader took nothing for the slow-peer timeout.
    Stalled,
}

/// The waiting messages and the bounds on them. Pure.
#[derive(Debug)]
pub struct Queue {
    msgs: VecDeque<(Bytes, Class)>,
    bytes: usize,
    latest: usize,
    /// Snapshots waiting (counted in `latest` too), and how many may.
    snapshots: usize,
    max_snapshots: usize,
    /// When the queue last went from empty to non-empty: the reader has
    /// taken nothing since.
    waiting_since: Instant,
    dropped: Dropped,
    /// The writer is done: once what waits is taken, the downstream ends.
    closed: bool,
    /// The reader is gone (the response body was dropped).
    reader_gone: bool,
}

fn framed_len(msg: &Bytes) -> usize {
    FRAME_HEADER_LEN + msg.len()
}

impl Queue {
    /// A queue where up to [`MAX_LATEST`] snapshots wait (polls).
    #[cfg(test)]
    pub fn new(now: Instant) -> Self {
        Self::with_snapshots(now, MAX_LATEST)
    }

    /// A queue where at most `max_snapshots` (1 or more) snapshots wait;
    /// a newer one drops the oldest.
    pub fn with_snapshots(now: Instant, max_snapshots: usize) -> Self {
        Queue {
            msgs: VecDeque::new(),
            bytes: 0,
            latest: 0,
            snapshots: 0,
            max_snapshots: max_snapshots.clamp(1, MAX_LATEST),
            waiting_since: now,
            dropped: Dropped::default(),
            closed: false,
            reader_gone: false,
        }
    }

    /// Queues `msg`, dropping the oldest latest-only messages waiting when
    /// it would pass a bound. `stall`: refuse when the reader has taken
    /// nothing for that long while messages waited.
    pub fn push(
        &mut self,
        msg: Bytes,
        class: Class,
        now: Instant,
        stall: Option<Duration>,
    ) -> Result<(), Refused> {
        if let Some(limit) = stall {
            if !self.msgs.is_empty() && now.duration_since(self.waiting_since) >= limit {
                return Err(Refused::Stalled);
            }
        }
        // Dropping what waits is not the reader taking it: the stall clock
        // runs on from the oldest message still untaken.
        let was_empty = self.msgs.is_empty();
        let size = framed_len(&msg);
        if class == Class::Snapshot {
            while self.snapshots >= self.max_snapshots {
                self.drop_oldest(|c| c == Class::Snapshot);
            }
        }
        if class != Class::Reliable {
            while self.latest >= MAX_LATEST {
                self.drop_oldest(|c| c != Class::Reliable);
            }
        }
        while self.bytes + size > MAX_BYTES && self.latest > 0 {
            self.drop_oldest(|c| c != Class::Reliable);
        }
        // One message larger than the bound alone waits for an empty queue.
        if self.bytes + size > MAX_BYTES && !self.msgs.is_empty() {
            return Err(Refused::Full(msg));
        }
        if was_empty {
            self.waiting_since = now;
        }
        self.bytes += size;
        if class != Class::Reliable {
            self.latest += 1;
        }
        if class == Class::Snapshot {
            self.snapshots += 1;
        }
        self.msgs.push_back((msg, class));
        Ok(())
    }

    /// Drops the oldest message of a class `which` picks; never call it
    /// with one that picks a reliable message.
    fn drop_oldest(&mut self, which: impl Fn(Class) -> bool) {
        let Some(i) = self.msgs.iter().position(|&(_, c)| which(c)) else {
            return;
        };
        // `i` was just found in `msgs`.
        let Some((msg, class)) = self.msgs.remove(i) else {
            return;
        };
        self.bytes -= framed_len(&msg);
        self.latest -= 1;
        match class {
            Class::Snapshot => {
                self.snapshots -= 1;
                self.dropped.snapshots += 1
            }
            _ => self.dropped.unreliable += 1,
        }
    }

    /// Everything waiting, in order.
    pub fn take(&mut self) -> Vec<Bytes> {
        self.bytes = 0;
        self.latest = 0;
        self.snapshots = 0;
        self.msgs.drain(..).map(|(m, _)| m).collect()
    }

    /// The latest-only messages dropped since the last call.
    pub fn take_dropped(&mut self) -> Dropped {
        std::mem::take(&mut self.dropped)
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Bytes waiting, frame headers included.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The queue between the session and its reader.
pub struct Downstream {
    // std Mutex: each section is a few queue operations, never across
    // .await.
    queue: Mutex<Queue>,
    /// Something to read, or the end.
    readable: Notify,
    /// Room, or the reader gone.
    writable: Notify,
}

/// What a reader found.
pub struct Taken {
    pub msgs: Vec<Bytes>,
    /// The writer closed and nothing is left: the downstream has ended.
    pub ended: bool,
}

/// The writer could not queue.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The reader is gone.
    Gone,
    /// The reader took nothing for the slow-peer timeout.
    Stalled,
}

impl Downstream {
    /// A downstream where up to `max_snapshots` snapshots wait (see
    /// [`Queue::with_snapshots`]).
    pub fn new(max_snapshots: usize) -> Arc<Self> {
        Arc::new(Downstream {
            queue: Mutex::new(Queue::with_snapshots(Instant::now(), max_snapshots)),
            readable: Notify::new(),
            writable: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg`, waiting for room when reliable messages fill the
    /// queue. Returns what was dropped to make room.
    pub async fn push(
        &self,
        mut msg: Bytes,
        class: Class,
        stall: Option<Duration>,
    ) -> Result<Dropped, PushError> {
        let mut dropped = Dropped::default();
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            // Registered before the check, so a take in between wakes us.
            room.as_mut().enable();
            {
                let mut q = self.lock();
                if q.reader_gone {
                    return Err(PushError::Gone);
                }
                let pushed = q.push(msg, class, Instant::now(), stall);
                let d = q.take_dropped();
                dropped.snapshots += d.snapshots;
                dropped.unreliable += d.unreliable;
                match pushed {
                    Ok(()) => return Ok(dropped),
                    Err(Refused::Stalled) => return Err(PushError::Stalled),
                    Err(Refused::Full(m)) => msg = m,
                }
            }
            // The reader may be waiting for the flush that never came.
            self.readable.notify_waiters();
            room.await;
        }
    }

    /// Wakes the reader: what was queued may be taken.
    pub fn flush(&self) {
        self.readable.notify_waiters();
    }

    /// The writer is done; the reader takes what is left, then the end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_waiters();
    }

    /// The reader is gone: the writer's next push fails.
    pub fn reader_gone(&self) {
        self.lock().reader_gone = true;
        self.writable.notify_waiters();
    }

    /// Everything waiting now (possibly nothing).
    pub fn take(&self) -> Taken {
        let taken = {
            let mut q = self.lock();
            let msgs = q.take();
            Taken {
                msgs,
                ended: q.closed,
            }
        };
        self.writable.notify_waiters();
        taken
    }

    /// Waits until something waits or the writer has closed, then takes
    /// it all.
    pub async fn next(&self) -> Taken {
        loop {
            let ready = self.readable.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let q = self.lock();
                if !q.is_empty() || q.closed {
                    break;
                }
            }
            ready.await;
        }
        self.take()
    }

    /// Whether the writer has closed and nothing is left to take.
    pub fn ended(&self) -> bool {
        let q = self.lock();
        q.closed && q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, len: usize) -> Bytes {
        let mut v = vec![0u8; len];
        v[0] = ty;
        Bytes::from(v)
    }

    fn kinds(q: &mut Queue) -> Vec<(u8, usize)> {
        q.take().iter().map(|m| (m[0], m.len())).collect()
    }

    #[test]
    fn at_most_sixteen_latest_only_wait_and_the_newest_win() {
        let now = Instant::now();
        let mut q = Queue::new(now);
        q.push(msg(0x81, 10), Class::Reliable, now, None).unwrap();
        for i in 0..40u8 {
            let mut m = vec![0x84, i];
            m.resize(20, 0);
            q.push(Bytes::from(m), Class::Snapshot, now, None).unwrap();
        }
        assert_eq!(q.take_dropped().snapshots, 40 - MAX_LATEST as u64);
        let got = q.take();
        assert_eq!(got.len(), 1 + MAX_LATEST);
        assert_eq!(got[0][0], 0x81, "the reliable message is kept, first");
        let ticks: Vec<u8> = got[1..].iter().map(|m| m[1]).collect();
        assert_eq!(ticks, (24..40).collect::<Vec<u8>>(), "the newest, in order");
    }

    /// A stream's queue: one snapshot waits, the newest; the reliable and
    /// other latest-only messages around it keep their order.
    #[test]
    fn a_stream_keeps_only_the_newest_snapshot_waiting() {
        let now = Instant::now();
        let mut q = Queue::with_snapshots(now, STREAM_SNAPSHOTS);
        q.push(msg(0x81, 10), Class::Reliable, now, None).unwrap();
        for i in 0..5u8 {
            q.push(Bytes::from(vec![0x84, i]), Class::Snapshot, now, None)
                .unwrap();
            q.push(Bytes::from(vec![0x88, i]), Class::Unreliable, now, None)
                .unwrap();
        }
        q.push(msg(0x87, 10), Class::Reliable, now, None).unwrap();
        assert_eq!(q.take_dropped().snapshots, 4);
        let got: Vec<(u8, u8)> = q.take().iter().map(|m| (m[0], m[1])).collect();
        assert_eq!(
            got,
            [
                (0x81, 0),
                (0x88, 0),
                (0x88, 1),
                (0x88, 2),
                (0x88, 3),
                (0x84, 4),
                (0x88, 4),
                (0x87, 0)
            ]
        );
        // Taken: the next snapshot waits again.
        q.push(Bytes::from(vec![0x84, 9]), Class::Snapshot, now, None)
            .unwrap();
        assert_eq!(q.take_dropped().snapshots, 0);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_latest_only_never_a_reliable_one() {
        let now = Instant::now();
        let mut q = Queue::new(now);
        // 2000-byte snapshots: the byte bound bites before the count.
        q.push(msg(0x81, 100), Class::Reliable, now, None).unwrap();
        for _ in 0..MAX_LATEST {
            q.push(msg(0x84, 2000), Class::Snapshot, now, None).unwrap();
        }
        // The 17th latest-only message: the oldest snapshot makes room.
        q.push(msg(0x88, 40), Class::Unreliable, now, None).unwrap();
        assert_eq!(q.take_dropped().snapshots, 1);
        // Reliable messages take the place of the oldest latest-only ones...
        for _ in 0..40 {
            q.push(msg(0x87, 1000), Class::Reliable, now, None).unwrap();
            assert!(q.bytes() <= MAX_BYTES);
        }
        let d = q.take_dropped();
        assert!(d.snapshots > 0 && d.unreliable == 0, "{d:?}");
        // ...and when only reliable ones are left, the writer must wait.
        while q.push(msg(0x87, 1000), Class::Reliable, now, None).is_ok() {}
        assert_eq!(q.take_dropped().unreliable, 1, "the newest went last");
        let left = MAX_BYTES - q.bytes();
        if left > FRAME_HEADER_LEN {
            q.push(
                msg(0x87, left - FRAME_HEADER_LEN),
                Class::Reliable,
                now,
                None,
            )
            .unwrap();
        }
        assert!(matches!(
            q.push(msg(0x84, 100), Class::Snapshot, now, None),
            Err(Refused::Full(_))
        ));
        let got = kinds(&mut q);
        assert_eq!(got[0], (0x81, 100));
        assert!(got[1..].iter().all(|&(t, _)| t == 0x87), "{got:?}");
        assert!(got.iter().map(|(_, n)| n + 2).sum::<usize>() <= MAX_BYTES);
    }

    #[test]
    fn a_message_larger_than_the_bound_waits_for_an_empty_queue() {
        let now = Instant::now();
        let mut q = Queue::new(now);
        q.push(msg(0x81, 10), Class::Reliable, now, None).unwrap();
        let big = msg(0x87, MAX_BYTES);
        let Err(Refused::Full(big)) = q.push(big, Class::Reliable, now, None) else {
            panic!("a too-big message went in beside another");
        };
        q.take();
        q.push(big, Class::Reliable, now, None).unwrap();
        assert_eq!(q.take().len(), 1);
    }

    #[test]
    fn a_reader_that_takes_nothing_for_the_limit_stalls_the_next_push() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(5);
        let mut q = Queue::new(t0);
        q.push(msg(0x84, 10), Class::Snapshot, t0, Some(limit))
            .unwrap();
        let t1 = t0 + Duration::from_secs(4);
        q.push(msg(0x84, 10), Class::Snapshot, t1, Some(limit))
            .unwrap();
        // Taken: the clock starts again with the next message.
        q.take();
        let t2 = t0 + Duration::from_secs(6);
        q.push(msg(0x84, 10), Class::Snapshot, t2, Some(limit))
            .unwrap();
        let t3 = t2 + limit;
        assert_eq!(
            q.push(msg(0x87, 10), Class::Reliable, t3, Some(limit)),
            Err(Refused::Stalled)
        );
        assert_eq!(
            q.push(msg(0x84, 10), Class::Snapshot, t3, Some(limit)),
            Err(Refused::Stalled)
        );
        // Without a limit (the Error too_slow that follows) it queues.
        q.push(msg(0x86, 10), Class::Reliable, t3, None).unwrap();
    }

    /// On a stream each snapshot replaces the one waiting, so the queue
    /// is never empty for long; a reader that takes none of them still
    /// stalls.
    #[test]
    fn replaced_snapshots_that_nobody_takes_still_stall() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(5);
        let mut q = Queue::with_snapshots(t0, STREAM_SNAPSHOTS);
        for ms in (0..5_000).step_by(16) {
            let t = t0 + Duration::from_millis(ms);
            q.push(msg(0x84, 10), Class::Snapshot, t, Some(limit))
                .unwrap();
        }
        assert_eq!(
            q.push(msg(0x84, 10), Class::Snapshot, t0 + limit, Some(limit)),
            Err(Refused::Stalled)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_waits_for_room_and_the_reader_sees_the_end_after_the_rest() {
        let d = Downstream::new(MAX_LATEST);
        let big = msg(0x87, MAX_BYTES - 10);
        d.push(big.clone(), Class::Reliable, None).await.unwrap();
        let d2 = d.clone();
        let writer = tokio::spawn(async move {
            d2.push(msg(0x87, 100), Class::Reliable, None)
                .await
                .unwrap();
            d2.close();
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "no room: the writer waits");
        let first = d.next().await;
        assert_eq!((first.msgs.len(), first.ended), (1, false));
        writer.await.unwrap();
        let rest = d.next().await;
        assert_eq!((rest.msgs.len(), rest.ended), (1, true));
        assert!(d.ended());
        d.reader_gone();
        assert_eq!(
            d.push(msg(0x84, 10), Class::Snapshot, None).await,
            Err(PushError::Gone)
        );
    }
}
