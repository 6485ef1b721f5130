"""`/metrics` read by Prometheus' own Python client: the OpenMetrics parser
accepts the whole output, before and after third-party peers (aioquic,
websockets) use the server, and whatever a client puts in `fallback=`
(PROTOCOL.md §1.1) the label values stay the documented set."""

import urllib.parse
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from rally_peers import peer_join, ping, run

REASONS = {"wt_unavailable", "wt_failed", "wt_timeout", "ws_failed", "remembered", "other"}


def scrape(server) -> tuple[str, dict]:
    """The content type, and {family name: family} as parsed."""
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=5) as r:
        ctype = r.headers["content-type"]
        text = r.read().decode()
    # Raises on anything that is not valid OpenMetrics (a missing # EOF,
    # a bad escape, a sample of an undeclared family, non-cumulative buckets).
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return ctype, families


def value(families, family, name, **labels) -> float:
    for s in families[family].samples:
        if s.name == name and s.labels == labels:
            return s.value
    raise AssertionError(f"no {name}{labels}")


def test_the_output_parses_as_openmetrics_and_counts_third_party_peers(start_server):
    server = start_server()
    ctype, fams = scrape(server)
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert fams["rally_sessions_opened"].type == "counter"
    assert fams["rally_rtt_seconds"].type == "histogram"
    assert fams["rally_sessions_open"].type == "gauge"
    assert "rally_cluster_lease_ops" in fams

    # Hostile fallback reasons: quotes, a newline, a brace, a long value.
    odd = ['a"b', "x\ny", "}{", "z" * 500, ""]

    async def scenario():
        peers = [await peer_join(server, "wt", "m", "wt")]
        peers.append(await peer_join(server, "ws", "m", "ws", query="fallback=wt_unavailable"))
        for i, reason in enumerate(odd):
            q = urllib.parse.urlencode({"fallback": reason})
            peers.append(await peer_join(server, "ws", "m", f"odd{i}", query=q))
        for p in peers[:2]:
            for _ in range(2):
                await p.send(ping())
            for _ in range(2):
                await p.until(lambda m: m.kind == "pong", 5)
        _, fams = scrape(server)
        for p in peers:
            await p.close()
        return fams

    fams = run(scenario())
    t = "rally_sessions_opened"
    assert value(fams, t, t + "_total", transport="wt") == 1
    assert value(fams, t, t + "_total", transport="ws") == 1 + len(odd)
    f = "rally_fallbacks"
    assert value(fams, f, f + "_total", transport="ws", reason="wt_unavailable") == 1
    assert value(fams, f, f + "_total", transport="ws", reason="other") == len(odd)
    assert {s.labels["reason"] for s in fams[f].samples} == REASONS
    m = "rally_messages_in"
    # Hello and two pings each (and only Hello from the odd ones).
    assert value(fams, m, m + "_total", transport="wt") == 3
    assert value(fams, m, m + "_total", transport="ws") == 3 + len(odd)
    assert value(fams, "rally_rooms", "rally_rooms") == 1
