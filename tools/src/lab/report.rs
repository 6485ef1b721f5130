//! The comparison report: the JSON document (schema `rally-compare/1`,
//! described in docs/LAB.md), the text table, and the HTML page with CDF
//! plots, the staleness timeline and an automatic reading. Pure: data in,
//! strings out.

use std::fmt::Write as _;

use plotters::prelude::*;
use serde::Serialize;

use super::forward::LinkStats;
use super::stats::Dist;

pub const SCHEMA: &str = "rally-compare/1";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub scenario: Scenario,
    pub results: Vec<TransportResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub transports: Vec<String>,
    /// Measured clients per transport.
    pub clients: usize,
    /// Idle players added to reach the snapshot size: always 0 since the
    /// `synthetic` game sets the size (kept for readers of the schema).
    pub filler_clients: usize,
    /// Players in the room: the measured clients.
    pub players: usize,
    /// The game the server ran (`Welcome.game`): `synthetic` when the lab
    /// starts the server.
    pub game: String,
    /// The `synthetic` game's snapshot payload (`--game-opt payload=N`);
    /// `null` when the lab did not start the server.
    pub payload_bytes: Option<usize>,
    pub duration_s: f64,
    /// `--poll-interval`: milliseconds between two polls of the `poll` row.
    pub poll_interval_ms: u64,
    pub tick_hz: u16,
    pub snapshot_every: u16,
    /// `--snapshot-bytes`, when given.
    pub snapshot_bytes_requested: Option<usize>,
    /// Snapshot message size the clients received: the 17-byte header and
    /// the game's payload.
    pub snapshot_bytes: usize,
    pub impairment: Impairment,
    /// `namespaces` (impaired path through the forwarder), `loopback`
    /// (no root or no namespace support: unimpaired) or `external`
    /// (`--url`: unimpaired, no server-side figures).
    pub network: String,
    /// Why the network is what it is, in words.
    pub network_note: String,
    pub server: String,
    pub clock: String,
    pub started_unix: u64,
    pub host: Host,
}

#[derive(Debug, Clone, Serialize)]
pub struct Impairment {
    /// Applied in each direction.
    pub loss_pct: f64,
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub reorder_pct: f64,
    pub rate_kbit: Option<u64>,
    pub queue_limit_ms: f64,
    pub seed: u64,
    /// False when the run could not impair the path.
    pub applied: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub rally_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Wire {
    pub server_to_client: LinkStats,
    pub client_to_server: LinkStats,
}

/// One client's staleness over the measurement, binned.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// Which measured client (0: the first).
    pub client: usize,
    /// Width of a bin.
    pub bin_ms: f64,
    /// Per bin from the start of the measurement: the largest staleness
    /// of the snapshots that arrived in it; `null` when none arrived.
    pub max_ms: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransportResult {
    /// `wt-datagram`, `wt-stream`, `ws`, `http-stream`, `h2-stream`,
    /// `sse`, `long-poll` or `poll`; with `/full` after it for whole
    /// snapshots when `--delta on,off` measured both.
    pub transport: String,
    /// The clients asked for snapshots as deltas (PROTOCOL.md §5.1).
    #[serde(default)]
    pub delta: bool,
    /// Snapshots whose whole state was compared with the game's state at
    /// their tick (every one the clients received), and how many differed.
    #[serde(default)]
    pub states_checked: u64,
    #[serde(default)]
    pub state_mismatches: u64,
    /// Snapshots that came as deltas and were made whole; deltas ignored
    /// (a baseline the client did not have: never, when the server follows
    /// the rules).
    #[serde(default)]
    pub deltas_applied: u64,
    #[serde(default)]
    pub deltas_ignored: u64,
    pub rtt_ms: Dist,
    pub staleness_ms: Dist,
    pub jitter_ms: Dist,
    /// Mean over clients of the RFC 3550 smoothed jitter at the end.
    pub rfc3550_jitter_ms: f64,
    /// Distinct snapshot ticks received / snapshots the server sent.
    pub delivered_ratio: f64,
    pub snapshots_received: u64,
    pub snapshots_distinct: u64,
    pub snapshots_expected: u64,
    pub snapshots_on_datagram: u64,
    pub snapshots_on_stream: u64,
    pub out_of_order: u64,
    pub inputs_sent: u64,
    /// Server→client bytes offered to the link (IP packets, all headers,
    /// retransmissions and acknowledgements included) / snapshots
    /// received. `null` when the path has no forwarder to count.
    pub bytes_per_snapshot: Option<f64>,
    /// Bytes of the snapshot messages received (Rally's bytes: type byte
    /// to the end of the payload, no framing or encoding).
    pub snapshot_message_bytes: u64,
    /// Share of the server→client bytes that were not snapshot messages:
    /// (wire − snapshot_message_bytes) / wire. IP, TCP/UDP, QUIC, TLS and
    /// HTTP headers, framing, base64, acknowledgements, retransmissions.
    pub header_share: Option<f64>,
    /// Client→server bytes offered to the link / inputs sent.
    pub upstream_bytes_per_input: Option<f64>,
    /// Bytes of the messages the clients sent (inputs).
    pub sent_message_bytes: u64,
    /// Share of the client→server bytes that were not those messages.
    pub upstream_header_share: Option<f64>,
    pub wire: Option<Wire>,
    pub connect_ms: Dist,
    /// Failed connect attempts; each client retries up to three times.
    pub connect_failures: usize,
    /// TCP and QUIC connections the clients opened over the whole row
    /// (connect phase included), counted on the wire by the forwarder.
    pub connections_opened: Option<u64>,
    pub connections_per_client: Option<f64>,
    /// HTTP requests (GETs and POSTs) the clients made during the
    /// measurement; `null` for WebTransport and WebSocket.
    pub http_requests: Option<u64>,
    /// Server CPU (user + system) during the measurement / snapshots
    /// received by the measured clients. `null` without a local server.
    pub cpu_us_per_msg: Option<f64>,
    pub server_cpu_ms: Option<f64>,
    pub errors: u64,
    /// The first client's staleness over time, binned.
    pub staleness_timeline: Timeline,
    #[serde(skip)]
    pub rtt_cdf: Vec<(f64, f64)>,
    #[serde(skip)]
    pub staleness_cdf: Vec<(f64, f64)>,
    /// The first client's snapshots: (seconds into the measurement,
    /// staleness ms), for the plot.
    #[serde(skip)]
    pub timeline: Vec<(f64, f64)>,
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.prec$}"))
}

/// The terminal table.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<17} {:>16} {:>22} {:>9} {:>13} {:>11} {:>6} {:>6} {:>14} {:>10} {:>7} {:>9}",
        "transport",
        "rtt p50/p99 ms",
        "staleness p50/p99 ms",
        "delivered",
        "jitter p99 ms",
        "bytes/snap",
        "hdr %",
        "conns",
        "connect p50 ms",
        "cpu µs/msg",
        "deltas",
        "states ok"
    );
    for t in &r.results {
        let _ = writeln!(
            s,
            "{:<17} {:>16} {:>22} {:>8.1}% {:>13.2} {:>11} {:>6} {:>6} {:>14.1} {:>10} {:>7} {:>9}",
            t.transport,
            format!("{:.1}/{:.1}", t.rtt_ms.p50, t.rtt_ms.p99),
            format!("{:.1}/{:.1}", t.staleness_ms.p50, t.staleness_ms.p99),
            t.delivered_ratio * 100.0,
            t.jitter_ms.p99,
            opt(t.bytes_per_snapshot, 0),
            opt(t.header_share.map(|h| h * 100.0), 0),
            opt(t.connections_per_client, 1),
            t.connect_ms.p50,
            opt(t.cpu_us_per_msg, 1),
            t.deltas_applied,
            if t.state_mismatches == 0 {
                format!("{}", t.states_checked)
            } else {
                format!("{} BAD", t.state_mismatches)
            },
        );
    }
    s
}

/// "X's" for a transport, as the reading uses it.
fn possessive(transport: &str) -> String {
    match transport {
        "wt-datagram" => "the datagram path's".into(),
        "wt-stream" => "the WebTransport stream's".into(),
        "ws" => "WebSocket's".into(),
        "http-stream" => "the HTTP/1.1 stream's".into(),
        "h2-stream" => "the HTTP/2 stream's".into(),
        "sse" => "SSE's".into(),
        "long-poll" => "long polling's".into(),
        "poll" => "polling's".into(),
        other => format!("{other}'s"),
    }
}

/// The impairment in words.
pub fn conditions(s: &Scenario) -> String {
    let i = &s.impairment;
    if !i.applied {
        return "an unimpaired path".into();
    }
    let mut parts = Vec::new();
    if i.loss_pct > 0.0 {
        parts.push(format!("{}% loss", i.loss_pct));
    }
    if i.delay_ms > 0.0 {
        parts.push(format!("{} ms delay", i.delay_ms));
    }
    if i.jitter_ms > 0.0 {
        parts.push(format!("±{} ms jitter", i.jitter_ms));
    }
    if i.reorder_pct > 0.0 {
        parts.push(format!("{}% reordering", i.reorder_pct));
    }
    if let Some(r) = i.rate_kbit {
        parts.push(format!("a {r} kbit/s link"));
    }
    if parts.is_empty() {
        return "a clean path through the lab link".into();
    }
    let last = parts.pop().unwrap_or_default();
    let joined = if parts.is_empty() {
        last
    } else {
        format!("{} and {last}", parts.join(", "))
    };
    format!("{joined} each way")
}

fn ratio_phrase(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return "not comparable (no baseline samples)".into();
    }
    let r = a / b;
    if r >= 1.0 {
        format!("{r:.1}×")
    } else {
        format!("{:.0}% of", r * 100.0)
    }
}

/// A short reading of the result, generated from the figures.
pub fn reading(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let cond = conditions(&r.scenario);
    let base = r
        .results
        .iter()
        .find(|t| t.transport == "wt-datagram")
        .or(r.results.first());
    if let Some(base) = base {
        for t in r.results.iter().filter(|t| t.transport != base.transport) {
            out.push(format!(
                "Under {cond}, {} p99 staleness was {} {} ({:.1} ms vs {:.1} ms); its p99 input→ack RTT was {} ({:.1} ms vs {:.1} ms).",
                possessive(&t.transport),
                ratio_phrase(t.staleness_ms.p99, base.staleness_ms.p99),
                possessive(&base.transport),
                t.staleness_ms.p99,
                base.staleness_ms.p99,
                ratio_phrase(t.rtt_ms.p99, base.rtt_ms.p99),
                t.rtt_ms.p99,
                base.rtt_ms.p99,
            ));
        }
    }
    if !r.results.is_empty() {
        let parts: Vec<String> = r
            .results
            .iter()
            .map(|t| format!("{} {:.1}%", t.transport, t.delivered_ratio * 100.0))
            .collect();
        out.push(format!(
            "Snapshots delivered (distinct ticks received / sent): {}. Datagrams lose what the network loses; the reliable carriages retransmit what is lost{}.",
            parts.join(", "),
            match r
                .results
                .iter()
                .filter(|t| t.transport != "wt-datagram" && t.delivered_ratio < 1.0)
                .map(|t| t.transport.as_str())
                .collect::<Vec<_>>()
            {
                v if v.is_empty() => ", so they pay in lateness instead".to_string(),
                v => format!(
                    ", but the server's newest-wins slot skipped ticks while {} stalled",
                    v.join(", ")
                ),
            }
        ));
    }
    let bytes: Vec<String> = r
        .results
        .iter()
        .filter_map(|t| {
            t.bytes_per_snapshot.map(|b| {
                format!(
                    "{} {b:.0} B ({})",
                    t.transport,
                    opt(t.header_share.map(|h| h * 100.0), 0) + "%"
                )
            })
        })
        .collect();
    if !bytes.is_empty() {
        out.push(format!(
            "Server→client bytes on the wire per delivered snapshot of {} B (IP headers, acknowledgements and retransmissions included; in brackets the share that is not snapshot bytes): {}.",
            r.scenario.snapshot_bytes,
            bytes.join(", ")
        ));
    }
    let conns: Vec<String> = r
        .results
        .iter()
        .filter_map(|t| {
            t.connections_per_client
                .map(|c| format!("{} {c:.1}", t.transport))
        })
        .collect();
    if !conns.is_empty() {
        out.push(format!(
            "Connections opened per client over the row (TCP or QUIC, counted on the wire, retries included): {}.",
            conns.join(", ")
        ));
    }
    let clients_s = r.scenario.clients as f64 * r.scenario.duration_s;
    let requests: Vec<String> = r
        .results
        .iter()
        .filter_map(|t| {
            t.http_requests
                .filter(|_| clients_s > 0.0)
                .map(|n| format!("{} {:.0}", t.transport, n as f64 / clients_s))
        })
        .collect();
    if !requests.is_empty() {
        out.push(format!(
            "HTTP requests per client per second (POSTs carrying inputs, and polls): {}.",
            requests.join(", ")
        ));
    }
    let connect: Vec<String> = r
        .results
        .iter()
        .map(|t| format!("{} {:.1} ms", t.transport, t.connect_ms.p50))
        .collect();
    if !connect.is_empty() {
        out.push(format!(
            "Connecting (session handshake through Welcome) took p50 {}.",
            connect.join(", ")
        ));
    }
    for t in &r.results {
        if t.transport == "wt-datagram" && t.snapshots_on_stream > 0 {
            out.push(format!(
                "Note: {} of wt-datagram's snapshots travelled on the stream because they did not fit a datagram.",
                t.snapshots_on_stream
            ));
        }
        if t.connect_failures > 0 || t.errors > 0 {
            out.push(format!(
                "Note: {} had {} failed connect attempts (retried) and {} errors.",
                t.transport, t.connect_failures, t.errors
            ));
        }
    }
    out
}

fn color(i: usize, transport: &str) -> RGBColor {
    match transport {
        "wt-datagram" => RGBColor(31, 119, 180),
        "wt-stream" => RGBColor(255, 127, 14),
        "ws" => RGBColor(214, 39, 40),
        "http-stream" => RGBColor(44, 160, 44),
        "h2-stream" => RGBColor(148, 103, 189),
        "sse" => RGBColor(140, 86, 75),
        "long-poll" => RGBColor(227, 119, 194),
        "poll" => RGBColor(127, 127, 127),
        _ => {
            let (r, g, b) = Palette99::pick(i).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    }
}

/// An SVG plot of one CDF per transport; x is cut at the largest p99.9 so
/// the body stays readable (the maxima are in the table).
pub fn cdf_svg(
    title: &str,
    results: &[TransportResult],
    pick: impl Fn(&TransportResult) -> &[(f64, f64)],
    cut: impl Fn(&TransportResult) -> f64,
) -> String {
    let mut svg = String::new();
    let x_max = results.iter().map(&cut).fold(0.0f64, f64::max).max(1.0) * 1.05;
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (760, 380)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0f64..1.0f64)?;
        chart
            .configure_mesh()
            .x_desc("milliseconds")
            .y_desc("fraction of samples ≤ x")
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        for (i, t) in results.iter().enumerate() {
            let c = color(i, &t.transport);
            // A step plot: the CDF is flat between samples.
            let mut pts = vec![(0.0, 0.0)];
            let mut last_y = 0.0;
            for &(x, y) in pick(t) {
                let x = x.min(x_max);
                pts.push((x, last_y));
                pts.push((x, y));
                last_y = y;
            }
            pts.push((x_max, last_y));
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
                .label(t.transport.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = drawn {
        return format!("<p>plot failed: {}</p>", html_escape(&e.to_string()));
    }
    svg
}

/// At most `max` points of a time series: past that, each run of
/// consecutive points keeps its largest value (a stall stays visible).
pub fn thin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .filter_map(|c| c.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)))
        .collect()
}

/// Points per line of the staleness timeline.
const TIMELINE_POINTS: usize = 3000;

/// One SVG of staleness over time: a strip per transport, one line each
/// (the first client's snapshots by arrival time), on the same axes. A
/// head-of-line stall is a gap and then a spike: what was held arrives at
/// once, as old as the stall. Values above the y axis (cut at 1.2 × the
/// largest p99.9) are drawn at its top.
pub fn timeline_svg(results: &[TransportResult], duration_s: f64) -> String {
    let mut svg = String::new();
    let n = results.len().max(1);
    let strip = 110u32;
    let x_max = results
        .iter()
        .filter_map(|t| t.timeline.last().map(|p| p.0))
        .fold(duration_s, f64::max)
        .max(0.1);
    let y_max = results
        .iter()
        .map(|t| t.staleness_ms.p999)
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.2;
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root =
            SVGBackend::with_string(&mut svg, (900, 44 + strip * n as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(44);
        title.titled(
            "Snapshot staleness over time (first client of each transport)",
            ("sans-serif", 18),
        )?;
        for (i, (t, area)) in results.iter().zip(body.split_evenly((n, 1))).enumerate() {
            let c = color(i, &t.transport);
            let mut chart = ChartBuilder::on(&area)
                .margin_right(16)
                .margin_top(4)
                .x_label_area_size(22)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
            chart
                .configure_mesh()
                .y_desc("ms")
                .y_labels(3)
                .x_labels(10)
                .light_line_style(RGBColor(240, 240, 240))
                .label_style(("sans-serif", 12))
                .axis_desc_style(("sans-serif", 12))
                .draw()?;
            let pts = thin(&t.timeline, TIMELINE_POINTS)
                .into_iter()
                .map(|(x, y)| (x, y.min(y_max)));
            chart.draw_series(LineSeries::new(pts, c.stroke_width(1)))?;
            chart.draw_series(std::iter::once(Text::new(
                t.transport.clone(),
                (x_max * 0.01, y_max * 0.97),
                ("sans-serif", 14).into_font().color(&c),
            )))?;
        }
        root.present()?;
        Ok(())
    })();
    if let Err(e) = drawn {
        return format!("<p>plot failed: {}</p>", html_escape(&e.to_string()));
    }
    svg
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn dist_cells(d: &Dist) -> String {
    format!(
        "<td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>",
        d.p50, d.p90, d.p99, d.p999, d.max
    )
}

/// The whole HTML report (self-contained: inline CSS and SVG).
pub fn html(r: &Report) -> String {
    let s = &r.scenario;
    let e = html_escape;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Rally transport lab: {cond}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; margin-bottom: .2em; }}
.sub {{ color: #666; margin-top: 0; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: .9em; }}
th, td {{ border: 1px solid #ddd; padding: .3em .55em; text-align: right; }}
th {{ background: #f4f4f4; }}
td:first-child, th:first-child {{ text-align: left; }}
.reading li {{ margin: .4em 0; }}
.plots svg {{ max-width: 100%; height: auto; display: block; margin: 1em 0; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }}
dt {{ color: #666; }}
dd {{ margin: 0; }}
.note {{ color: #666; font-size: .85em; }}
</style></head><body>
<h1>Rally transport lab</h1>
<p class="sub">{clients} measured clients per transport, {dur} s each, {hz} Hz, {bytes}-byte snapshots, under {cond}.</p>
<h2>Reading</h2><ul class="reading">"#,
        cond = e(&conditions(s)),
        clients = s.clients,
        dur = s.duration_s,
        hz = s.tick_hz,
        bytes = s.snapshot_bytes,
    );
    for line in reading(r) {
        let _ = write!(h, "<li>{}</li>", e(&line));
    }
    h.push_str("</ul>\n<h2>Results</h2>\n<table><tr><th>transport</th><th>delivered</th><th>jitter p99 ms</th><th>RFC 3550 jitter ms</th><th>bytes / snapshot</th><th>header share</th><th>up bytes / input</th><th>up header share</th><th>connections / client</th><th>HTTP requests</th><th>connect p50 ms</th><th>server CPU µs / msg</th><th>on datagram / stream</th><th>failed connects / errors</th></tr>");
    let pct = |v: Option<f64>| opt(v.map(|x| x * 100.0), 1) + "%";
    for t in &r.results {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.2}%</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td></tr>",
            e(&t.transport),
            t.delivered_ratio * 100.0,
            t.jitter_ms.p99,
            t.rfc3550_jitter_ms,
            opt(t.bytes_per_snapshot, 0),
            pct(t.header_share),
            opt(t.upstream_bytes_per_input, 0),
            pct(t.upstream_header_share),
            opt(t.connections_per_client, 2),
            t.http_requests.map_or("–".into(), |n| n.to_string()),
            t.connect_ms.p50,
            opt(t.cpu_us_per_msg, 1),
            t.snapshots_on_datagram,
            t.snapshots_on_stream,
            t.connect_failures,
            t.errors,
        );
    }
    h.push_str("</table>\n<table><tr><th>ms</th><th colspan=\"5\">input → ack RTT</th><th colspan=\"5\">snapshot staleness</th><th colspan=\"5\">inter-arrival jitter |D|</th></tr><tr><th>transport</th>");
    for _ in 0..3 {
        h.push_str("<th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th>");
    }
    h.push_str("</tr>");
    for t in &r.results {
        let _ = write!(
            h,
            "<tr><td>{}</td>{}{}{}</tr>",
            e(&t.transport),
            dist_cells(&t.rtt_ms),
            dist_cells(&t.staleness_ms),
            dist_cells(&t.jitter_ms)
        );
    }
    h.push_str("</table>\n<div class=\"plots\">");
    h.push_str(&cdf_svg(
        "Input → acknowledgement RTT (CDF)",
        &r.results,
        |t| &t.rtt_cdf,
        |t| t.rtt_ms.p999,
    ));
    h.push_str(&cdf_svg(
        "Snapshot staleness: arrival − server tick time (CDF)",
        &r.results,
        |t| &t.staleness_cdf,
        |t| t.staleness_ms.p999,
    ));
    h.push_str(
        "<p class=\"note\">The x axes stop at the largest p99.9; maxima are in the table.</p>\n",
    );
    h.push_str(&timeline_svg(&r.results, s.duration_s));
    h.push_str("<p class=\"note\">Staleness of each snapshot the first client of each transport received, by arrival time since the measurement began. A head-of-line stall shows as a gap, then a spike: the held snapshots arrive together, as old as the stall. Values above the y axis (1.2 × the largest p99.9) are drawn at its top.</p></div>\n<h2>Scenario</h2><dl>");
    let i = &s.impairment;
    let rows: Vec<(&str, String)> = vec![
        ("transports", s.transports.join(", ")),
        (
            "clients",
            format!("{} measured, in one room of the {} game", s.clients, s.game),
        ),
        (
            "snapshot",
            format!(
                "{} bytes every {} tick(s) at {} Hz (requested: {})",
                s.snapshot_bytes,
                s.snapshot_every,
                s.tick_hz,
                s.snapshot_bytes_requested.map_or(
                    "none: a dots room's size for the measured clients".into(),
                    |b| { format!("{b} bytes") }
                )
            ),
        ),
        ("duration", format!("{} s per transport", s.duration_s)),
        ("polling", format!("poll: one GET every {} ms (one at a time); long-poll: the next GET as soon as one answers", s.poll_interval_ms)),
        (
            "impairment",
            format!(
                "loss {}%, delay {} ms, jitter ±{} ms, reorder {}%, rate {}, each way; seed {}{}",
                i.loss_pct,
                i.delay_ms,
                i.jitter_ms,
                i.reorder_pct,
                i.rate_kbit
                    .map_or("unlimited".into(), |r| format!("{r} kbit/s")),
                i.seed,
                if i.applied { "" } else { " (NOT applied)" }
            ),
        ),
        ("network", format!("{}: {}", s.network, s.network_note)),
        ("server", s.server.clone()),
        ("clock", s.clock.clone()),
        (
            "host",
            format!(
                "{} × {}, Linux {}, rally {}",
                s.host.nproc, s.host.cpu, s.host.kernel, s.host.rally_version
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", e(k), e(&v));
    }
    h.push_str("</dl>\n<p class=\"note\">Definitions: RTT = client sends input s, first snapshot with ack_seq ≥ s arrives. Staleness = arrival time − snapshot server_time_us (one host clock). Jitter |D| = |(Rj − Ri) − (Sj − Si)| for consecutive arrivals (RFC 3550 §6.4.1). Bytes counted by the lab's forwarder, server→client, before impairment; header share = (those bytes − snapshot message bytes) / those bytes. Connections = distinct TCP SYNs and QUIC Initials the clients sent over the row. See docs/LAB.md.</p>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, stale_p99: f64) -> TransportResult {
        TransportResult {
            transport: name.into(),
            delta: true,
            states_checked: 100,
            state_mismatches: 0,
            deltas_applied: 0,
            deltas_ignored: 0,
            rtt_ms: Dist {
                p99: 40.0,
                ..Default::default()
            },
            staleness_ms: Dist {
                p99: stale_p99,
                p999: stale_p99 * 2.0,
                ..Default::default()
            },
            jitter_ms: Dist::default(),
            rfc3550_jitter_ms: 0.0,
            delivered_ratio: 0.95,
            snapshots_received: 100,
            snapshots_distinct: 95,
            snapshots_expected: 100,
            snapshots_on_datagram: 95,
            snapshots_on_stream: 0,
            out_of_order: 0,
            inputs_sent: 100,
            bytes_per_snapshot: Some(120.0),
            snapshot_message_bytes: 4300,
            header_share: Some(0.64),
            upstream_bytes_per_input: Some(60.0),
            sent_message_bytes: 1400,
            upstream_header_share: Some(0.77),
            wire: None,
            connect_ms: Dist::default(),
            connect_failures: 0,
            connections_opened: Some(2),
            connections_per_client: Some(1.0),
            http_requests: None,
            cpu_us_per_msg: Some(3.0),
            server_cpu_ms: Some(1.0),
            errors: 0,
            staleness_timeline: Timeline {
                client: 0,
                bin_ms: 50.0,
                max_ms: vec![Some(21.0), None, Some(stale_p99)],
            },
            rtt_cdf: vec![(10.0, 0.5), (40.0, 1.0)],
            staleness_cdf: vec![(stale_p99, 1.0)],
            timeline: vec![(0.0, 21.0), (0.1, stale_p99), (0.12, 21.0)],
        }
    }

    fn report() -> Report {
        Report {
            schema: SCHEMA,
            scenario: Scenario {
                transports: vec!["wt-datagram".into(), "ws".into()],
                clients: 2,
                filler_clients: 0,
                players: 2,
                game: "synthetic".into(),
                payload_bytes: Some(26),
                duration_s: 3.0,
                poll_interval_ms: 50,
                tick_hz: 60,
                snapshot_every: 1,
                snapshot_bytes_requested: None,
                snapshot_bytes: 43,
                impairment: Impairment {
                    loss_pct: 5.0,
                    delay_ms: 20.0,
                    jitter_ms: 0.0,
                    reorder_pct: 0.0,
                    rate_kbit: None,
                    queue_limit_ms: 200.0,
                    seed: 1,
                    applied: true,
                },
                network: "namespaces".into(),
                network_note: "test".into(),
                server: "test".into(),
                clock: "one host".into(),
                started_unix: 0,
                host: Host {
                    nproc: 2,
                    cpu: "cpu <x>".into(),
                    kernel: "6".into(),
                    rally_version: "0".into(),
                },
            },
            results: vec![result("wt-datagram", 25.0), result("ws", 102.5)],
        }
    }

    #[test]
    fn reading_states_the_ratio_under_the_conditions() {
        let lines = reading(&report());
        assert!(
            lines[0].starts_with("Under 5% loss and 20 ms delay each way, WebSocket's p99 staleness was 4.1× the datagram path's (102.5 ms vs 25.0 ms)"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn html_has_plots_table_and_escapes() {
        let h = html(&report());
        assert_eq!(h.matches("<svg").count(), 3, "two CDFs and the timeline");
        assert!(h.contains("Snapshot staleness over time"));
        assert!(h.contains("<table>"));
        assert!(h.contains("cpu &lt;x&gt;"));
        assert!(!h.contains("cpu <x>"));
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v = serde_json::to_value(report()).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        let r = &v["results"][0];
        for k in [
            "transport",
            "rtt_ms",
            "staleness_ms",
            "delivered_ratio",
            "jitter_ms",
            "bytes_per_snapshot",
            "connect_ms",
            "cpu_us_per_msg",
            "header_share",
            "upstream_bytes_per_input",
            "connections_per_client",
            "staleness_timeline",
        ] {
            assert!(!r[k].is_null(), "{k}");
        }
        assert_eq!(
            r["staleness_timeline"]["max_ms"][1],
            serde_json::Value::Null
        );
        assert!(r.get("timeline").is_none());
        assert!(r.get("http_requests").is_some_and(|v| v.is_null()));
        for k in ["p50", "p90", "p99", "p999", "max"] {
            assert!(r["rtt_ms"][k].is_number(), "{k}");
        }
        assert!(r.get("rtt_cdf").is_none());
    }

    #[test]
    fn thinning_keeps_the_spikes() {
        let pts: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, if i == 37 { 500.0 } else { 20.0 }))
            .collect();
        let t = thin(&pts, 10);
        assert_eq!(t.len(), 10);
        assert!(t.contains(&(37.0, 500.0)));
        assert_eq!(thin(&pts, 1000).len(), 100);
    }

    #[test]
    fn conditions_in_words() {
        let mut s = report().scenario;
        s.impairment.jitter_ms = 5.0;
        assert_eq!(
            conditions(&s),
            "5% loss, 20 ms delay and ±5 ms jitter each way"
        );
        s.impairment.applied = false;
        assert_eq!(conditions(&s), "an unimpaired path");
    }
}
