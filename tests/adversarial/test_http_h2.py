"""HTTP streaming over HTTP/2 (PROTOCOL.md §11): with a real certificate
(`--cert/--key`, here one made by `rally cert`) the TCP listener speaks TLS
and offers ALPN `h2`, and the stream and the POSTs of a session share one
connection. The client is httpx with h2 (HTTP/2 only, no HTTP/1.1 to fall
back to)."""

import asyncio

import pytest

from rally_peers import (
    DOTS_RIGHT,
    LEAVE,
    HttpSession,
    Peer,
    app_msg,
    assert_still_serving,
    dots_chat,
    dots_inputs,
    dots_players,
    dots_welcome,
    is_numbered,
    peer_join,
    ping,
    read_roster,
    resume,
    run,
)

ALL3 = ("ws", "wt", "http")


def pool_connections(client) -> list:
    """The connections httpx's pool holds (httpcore's AsyncConnectionPool)."""
    return list(client._transport._pool.connections)


@pytest.mark.parametrize("mode", ["stream", "sse", "poll"])
def test_h2_session_streams_and_posts_on_one_connection_and_plays(start_server, mode):
    s = start_server(real_cert=True)

    async def go():
        other = await peer_join(s, "ws", "h2", "wss-player")  # wss:// with the same cert
        p = Peer(s, "http", mode=mode, http2=True)
        await p.open()
        h = p.http
        assert h.resp.http_version == "HTTP/2", h.resp.http_version
        w = await p.join("h2", "h2-player")
        assert w["game"] == "dots"
        roster = await read_roster(p, 2)
        assert [m["player_id"] for m in roster] == [other.id, p.id]
        snap = await p.until(lambda m: m.kind == "snapshot")
        x0 = dots_players(snap["payload"])[p.id][0]
        await p.send(dots_inputs(3, 3, DOTS_RIGHT))
        snap = await p.until(lambda m: m.kind == "snapshot" and m["ack_seq"] == 3)
        step = dots_welcome(w["app"])["speed"] / w["tick_hz"]
        assert abs(dots_players(snap["payload"])[p.id][0] - x0 - 3 * step) < 1e-3
        await p.send(app_msg(b"over h2"))
        want = dots_chat(p.id, b"over h2")
        assert (await other.until(lambda m: m.kind == "app"))["payload"] == want
        assert (await p.until(is_numbered))["payload"] == want
        await other.send(app_msg(b"to h2"))
        assert (await p.until(is_numbered))["payload"] == dots_chat(other.id, b"to h2")
        await p.send(ping(99))
        await p.until(lambda m: m.kind == "pong" and m["client_time_us"] == 99)
        r = await h.post(b"\x00\x09" + ping(1), seq=h.seq)  # a retry, to read its version
        assert (r.status_code, r.http_version) == (204, "HTTP/2"), (r.status_code, r.http_version)

        # One TLS connection carried the GET, every POST (and every poll).
        conns = pool_connections(h.client)
        assert len(conns) == 1, conns
        assert h.seq == 4  # Hello, Input, App, Ping

        await p.send(LEAVE)
        out = await p.until_closed(5)
        assert out.errors == []
        assert out.stream_end == ("404" if mode == "poll" else "end"), (out.stream_end, h.end_detail)
        assert len(pool_connections(h.client)) == 1
        await p.close()
        await other.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


def test_http1_over_tls_still_serves_the_transport(start_server):
    """ALPN http/1.1 on the TLS listener: the same session over HTTPS/1.1."""
    s = start_server(real_cert=True)

    async def go():
        p = await peer_join(s, "http", "h1", "tls-h1")
        assert p.http.resp.http_version == "HTTP/1.1"
        await read_roster(p, 1)
        await p.sync(1)
        await p.close()

    run(go())


def test_h2_stream_reset_is_a_drop_and_resumes_on_the_same_connection(start_server):
    """The client cancels its GET stream (RST_STREAM) but keeps the
    connection: the player is kept (§11.4, dropping the stream), and a new
    GET on that same connection resumes it with the missed event."""
    s = start_server(real_cert=True)

    async def go():
        a = await peer_join(s, "http", "rst", "alice", http2=True)
        await read_roster(a, 1)
        client = a.http.client
        a.http._task.cancel()  # closes the response: RST_STREAM on HTTP/2
        await asyncio.sleep(0.3)
        bob = await peer_join(s, "wt", "rst", "bob")

        b = HttpSession(s, http2=True)
        b.client = client  # the same HTTP/2 connection
        req = client.build_request("GET", b.url())
        b.resp = await client.send(req, stream=True)
        assert b.resp.status_code == 200 and b.resp.http_version == "HTTP/2"
        b.id = b.resp.headers["rally-session"]
        assert b.id != a.http.id
        b._task = asyncio.create_task(b._read_stream())
        assert await b.send(resume(a.welcome["resume_token"], 1)) == 204
        w = await b.recv()
        assert (w.kind, w["player_id"], w["reliable_seq"]) == ("welcome", a.id, 1), w
        ev = None
        while ev is None:
            m = await b.recv()
            if is_numbered(m):
                ev = m
        assert (ev.kind, ev["player_id"]) == ("joined", bob.id), ev
        assert len(pool_connections(client)) == 1
        b.client = None  # closed with a
        await b.close()
        await bob.close()
        await a.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.metrics()["errors"]["resume_failed"] == 0
