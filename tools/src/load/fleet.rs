//! Many lightweight native clients in this one process: each is a
//! [`Client`] driven by one task. WebSocket clients own a TCP socket each;
//! WebTransport clients share a wtransport endpoint (one UDP socket and its
//! driver task) in groups of `--wt-clients-per-socket`.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::task::JoinHandle;

use rally::client::{Client, ConnectOptions, WtEndpoint};

/// Extra attempts for a client whose connect failed.
pub const CONNECT_RETRIES: u64 = 2;

pub struct Fleet<T> {
    pub tasks: Vec<JoinHandle<T>>,
    /// Time from starting to connect to `Welcome`, per connected client.
    pub connect_ns: Vec<u64>,
    pub failures: u64,
    /// Connects that failed and were tried again (up to CONNECT_RETRIES).
    pub retries: u64,
    pub first_error: Option<String>,
    /// Wall time of the whole ramp.
    pub elapsed: Duration,
}

impl<T> Fleet<T> {
    /// One progress line: how many connected, how fast, retries, failures.
    pub fn summary(&self, what: &str, n: usize) -> String {
        let error = self
            .first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        format!(
            "{what} n={n}: {} connected in {:.1} s ({} retried, {} failed{error})",
            self.tasks.len(),
            self.elapsed.as_secs_f64(),
            self.retries,
            self.failures,
        )
    }
}

/// Connects `n` clients, at most `concurrency` handshakes at a time, and
/// hands each to its own task (`run`) as soon as it is connected, so early
/// clients read while later ones connect.
pub async fn ramp<T, F, Fut>(
    n: usize,
    concurrency: usize,
    opts_of: impl Fn(usize) -> ConnectOptions,
    run: F,
) -> Fleet<T>
where
    F: Fn(usize, Client) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = Instant::now();
    let mut attempts = futures::stream::iter(0..n)
        .map(|i| {
            let opts = opts_of(i);
            async move {
                let t0 = Instant::now();
                let mut r = Client::connect(opts.clone()).await;
                let mut retries = 0;
                // Seen under load: the server handles the CONNECT before the
                // client's SETTINGS and refuses with H3_SETTINGS_ERROR
                // (h3-webtransport checks settings not yet received). Count
                // and retry, so the scenario still gets its N clients.
                while r.is_err() && retries < CONNECT_RETRIES {
                    retries += 1;
                    r = Client::connect(opts.clone()).await;
                }
                (i, r, t0.elapsed(), retries)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut fleet = Fleet {
        tasks: Vec::with_capacity(n),
        connect_ns: Vec::with_capacity(n),
        failures: 0,
        retries: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    while let Some((i, r, took, retries)) = attempts.next().await {
        fleet.retries += retries;
        match r {
            Ok(client) => {
                fleet.connect_ns.push(took.as_nanos() as u64);
                fleet.tasks.push(tokio::spawn(run(i, client)));
            }
            Err(e) => {
                fleet.failures += 1;
                if fleet.first_error.is_none() {
                    tracing::warn!(client = i, "connect failed: {e}");
                    fleet.first_error = Some(e.to_string());
                }
            }
        }
    }
    fleet.elapsed = start.elapsed();
    fleet
}

/// Client endpoints for `n` WebTransport clients, `per` to a socket, pinning
/// `cert_hash`. With one socket per client (as browsers have), a thousand
/// clients meant a thousand endpoint driver tasks and sockets in this one
/// process: S2 could not connect 2 000 of them in five minutes (5 GB). The
/// server's work per connection is the same either way: QUIC routes by
/// connection id, not by address.
pub fn wt_endpoints(
    n: usize,
    per: usize,
    cert_hash: Option<[u8; 32]>,
) -> anyhow::Result<Vec<WtEndpoint>> {
    (0..n.div_ceil(per.max(1)))
        .map(|_| WtEndpoint::new(cert_hash).map_err(anyhow::Error::from))
        .collect()
}

/// Waits for every task, keeping the outputs of those that did not panic.
pub async fn join_all<T>(tasks: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(v) = t.await {
            out.push(v);
        }
    }
    out
}
