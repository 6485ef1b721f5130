//! A stream wrapper that polls its inner stream only after the inner
//! stream's own waker fired.
//!
//! The session loop `select!`s over reliable events, the snapshot slot and
//! the transport's receive side, so every wake-up (one per snapshot) polled
//! the receive side again, although nothing had arrived. For WebTransport
//! that poll locks quinn's connection state four times (stream read,
//! datagram read, accept_bi, accept_uni) and re-registers four wakers; for
//! WebSocket it locks the split stream and clears tungstenite's read buffer.
//! Gating the poll on the inner waker removes that work from the tick path.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use futures::Stream;

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pub struct PollWhenWoken<S> {
    inner: Pin<Box<S>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<S: Stream> PollWhenWoken<S> {
    pub fn new(inner: S) -> Self {
        let flag = Arc::new(Flag {
            // The first poll must reach the inner stream.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        PollWhenWoken {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<S: Stream> Stream for PollWhenWoken<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        // Register first, so a wake between the check and the return is not
        // lost.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        let mut inner_cx = Context::from_waker(&this.waker);
        let out = this.inner.as_mut().poll_next(&mut inner_cx);
        if out.is_ready() {
            // A ready stream may have more without waking us: poll it again
            // next time.
            this.flag.woken.store(true, Ordering::Release);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::sync::mpsc;

    use super::PollWhenWoken;

    #[tokio::test]
    async fn delivers_everything_in_order_across_waits() {
        let (tx, rx) = mpsc::channel::<u32>(4);
        let s =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
        let mut s = std::pin::pin!(PollWhenWoken::new(s));
        tokio::spawn(async move {
            for i in 0..100 {
                tx.send(i).await.unwrap();
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let got: Vec<u32> = s.by_ref().collect().await;
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn not_polled_again_until_woken() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        let pending = futures::stream::poll_fn(move |_cx| {
            p.fetch_add(1, Ordering::Relaxed);
            std::task::Poll::<Option<()>>::Pending
        });
        let mut s = PollWhenWoken::new(pending);
        for _ in 0..5 {
            assert!(futures::poll!(s.next()).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }
}
