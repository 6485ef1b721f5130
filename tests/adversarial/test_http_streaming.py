"""HTTP streaming, the third transport (PROTOCOL.md §11), with an
independent client: `httpx` (HTTP/1.1 through h11; HTTP/2 through h2 in
test_http_streaming_h2.py) and the §2–§5 codec of rally_peers.py.

Opening a session (`GET /rally/http` in `stream`, `sse` and `poll` mode),
what its POSTs are answered (§11.2), refusals (§9), and that each mode plays
the same game as the other transports.
"""

import asyncio
import base64
import re
import struct
import time

import pytest

from rally_peers import (
    LEAVE,
    HttpSession,
    Peer,
    app_msg,
    assert_still_serving,
    dots_chat,
    dots_inputs,
    dots_players,
    dots_welcome,
    hello,
    http_client,
    peer_join,
    ping,
    read_roster,
    run,
    DOTS_RIGHT,
)

ALL3 = ("ws", "wt", "http")
MODES = ["stream", "sse", "poll"]
SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


def is_event(m):
    return m.kind in ("joined", "left", "app")


async def eventually(server, pred, timeout: float = 5, what: str = "") -> dict:
    """Polls /health until pred(metrics) holds; returns the metrics."""
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        if pred(m):
            return m
        assert time.monotonic() < deadline, f"{what}: {m}"
        await asyncio.sleep(0.1)


def http_sessions_gone(m):
    return m["http"]["sessions_active"] == 0


# -- opening a session (§11.1) ------------------------------------------------


def test_open_answers_200_with_a_fresh_session_id_and_no_store(start_server):
    """Every GET /rally/http is its own session: 200, Rally-Session of 32
    lowercase hex digits, distinct each time, Cache-Control no-store,
    X-Accel-Buffering no; the default mode is `stream`
    (application/octet-stream)."""
    s = start_server()

    async def go():
        ids = set()
        sessions = []
        for mode in ["stream"] * 6 + ["sse", "poll"]:
            h = HttpSession(s, mode=mode)
            sessions.append(h)
            assert await h.open() == 200, h.body
            sid = h.headers.get("rally-session")
            assert sid is not None and SESSION_ID.match(sid), f"Rally-Session {sid!r}"
            ids.add(sid)
            assert "no-store" in h.headers.get("cache-control", ""), dict(h.headers)
            assert h.headers.get("x-accel-buffering") == "no", dict(h.headers)
            if mode == "stream":
                assert h.headers.get("content-type") == "application/octet-stream", dict(h.headers)
        assert len(ids) == len(sessions), f"session ids repeat: {sorted(ids)}"
        assert s.metrics()["http"]["sessions_opened"] == len(sessions)
        for h in sessions:
            await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_plays_the_same_game(start_server, mode):
    """A WebSocket player and an HTTP player (stream, sse, poll) in one dots
    room: Hello in the first POST → Welcome, the numbered roster, snapshots
    that have the HTTP player; its inputs move it (ack_seq), its chat reaches
    the other player and itself, the other's Leave reaches it as PlayerLeft,
    Ping → Pong; its Leave ends the session with no Error."""
    s = start_server()

    async def go():
        w = await peer_join(s, "ws", "play", "wsplayer")
        h = Peer(s, "http", mode=mode)
        await h.open()
        assert h.http.id and SESSION_ID.match(h.http.id)
        wel = await h.join("play", "httpplayer")
        assert wel["version"] == 2 and wel["game"] == "dots" and wel["player_id"] != 0
        assert (wel["reliable_seq"], wel["client_seq"]) == (0, 0)
        arena = dots_welcome(wel["app"])
        roster = await read_roster(h, 2)
        assert [m["player_id"] for m in roster] == [w.id, h.id]
        assert [m["name"] for m in roster] == ["wsplayer", "httpplayer"]
        snap = await h.until(lambda m: m.kind == "snapshot")
        assert set(dots_players(snap["payload"])) == {w.id, h.id}
        x0 = dots_players(snap["payload"])[h.id][0]

        # Inputs: four steps right, acknowledged and applied once each.
        await h.send(dots_inputs(4, 4, DOTS_RIGHT))
        snap = await h.until(lambda m: m.kind == "snapshot" and m["ack_seq"] == 4)
        step = arena["speed"] / wel["tick_hz"]
        x1 = dots_players(snap["payload"])[h.id][0]
        assert abs((x1 - x0) - 4 * step) < 1e-3, (x0, x1, step)

        # Chat (App): everyone, the sender included, gets id + text.
        await h.send(app_msg(b"hello over http"))
        want = dots_chat(h.id, b"hello over http")
        got = await w.until(lambda m: m.kind == "app")
        assert got["payload"] == want
        got = await h.until(is_event)
        assert (got.kind, got["payload"]) == ("app", want)

        # The other player leaves: a numbered PlayerLeft.
        await w.send(LEAVE)
        left = await h.until(is_event)
        assert (left.kind, left["player_id"]) == ("left", w.id)
        await w.close()

        # Ping → Pong with the client's time.
        await h.send(ping(424242))
        pong = await h.until(lambda m: m.kind == "pong" and m["client_time_us"] == 424242)
        assert pong["server_time_us"] > 0

        # Leave: the stream ends, no Error.
        await h.send(LEAVE)
        out = await h.until_closed(5)
        assert out.errors == [], out.msgs
        assert out.stream_end == ("404" if mode == "poll" else "end"), out
        assert h.http.leftover == b"", h.http.leftover
        await h.close()
        await assert_still_serving(s, transports=ALL3)
        m = await eventually(s, http_sessions_gone, what="HTTP sessions left over")
        assert sum(m["errors"].values()) == 0, m["errors"]

    run(go())


def test_sse_first_event_is_the_session_then_base64_messages(start_server):
    """mode=sse: text/event-stream; the first event is `event: session`
    with `data: ID` (the Rally-Session header's ID); every later event is one
    server message in padded base64 that decodes as §5 (Welcome first)."""
    s = start_server()

    async def go():
        h = HttpSession(s, mode="sse")
        assert await h.open() == 200
        ctype = h.headers.get("content-type", "")
        assert ctype.split(";")[0].strip() == "text/event-stream", ctype
        first = h.sse_events[0]
        assert first == {"event": "session", "data": h.id}, h.sse_events
        assert await h.send(hello("sse", "eve")) == 204
        assert (await h.recv()).kind == "welcome"
        assert (await h.recv()).kind == "joined"
        for _ in range(3):
            assert (await h.recv()).kind == "snapshot"
        assert h.sse_events[0]["event"] == "session"
        for ev in h.sse_events[1:]:
            assert "event" not in ev, f"a message event with an event name: {ev}"
            raw = base64.b64decode(ev["data"], validate=True)
            assert base64.b64encode(raw).decode() == ev["data"], "not canonical padded base64"
        await h.close()

    run(go())


def test_poll_mode_get_ends_at_once_and_polls_fetch_what_waits(start_server):
    """mode=poll: the GET's body is empty and ends at once. `GET
    /rally/http/ID` answers at once with what waits (possibly nothing),
    application/octet-stream, whole frames; `?wait=1` waits for a message;
    after Leave a poll is 404."""
    s = start_server("--game", "relay")  # relay: no snapshots, nothing comes unasked

    async def go():
        h = HttpSession(s, mode="poll", autopoll=False)
        t0 = time.monotonic()
        assert await h.open() == 200
        assert h.body == b"" and time.monotonic() - t0 < 2
        assert SESSION_ID.match(h.id)

        # Nothing waits yet: an immediate, empty 200.
        t0 = time.monotonic()
        r = await h.client.get(f"{s.http}/rally/http/{h.id}")
        assert (r.status_code, r.content) == (200, b""), (r.status_code, r.content)
        assert time.monotonic() - t0 < 2
        assert r.headers.get("content-type") == "application/octet-stream", dict(r.headers)

        assert await h.send(hello("poll", "pat")) == 204
        await asyncio.sleep(0.2)
        st, msgs = await h.poll()
        assert st == 200
        kinds = [m[0] for m in msgs]
        assert kinds == [0x81, 0x82], [m.hex() for m in msgs]

        # Long poll: waits until there is a message.
        t0 = time.monotonic()
        lp = asyncio.create_task(h.poll(wait=True))
        await asyncio.sleep(0.6)
        assert not lp.done(), "wait=1 answered with nothing waiting"
        assert await h.send(ping(77)) == 204
        st, msgs = await asyncio.wait_for(lp, 5)
        took = time.monotonic() - t0
        assert st == 200 and [m[0] for m in msgs] == [0x85], [m.hex() for m in msgs]
        assert struct.unpack(">Q", msgs[0][1:9])[0] == 77
        assert took >= 0.5, took

        # Leave: nothing follows, and the next poll is 404.
        assert await h.send(LEAVE) == 204
        await asyncio.sleep(0.3)
        st, msgs = await h.poll()
        assert (st, msgs) == (404, []), (st, msgs)
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


@pytest.mark.parametrize("path,method,status", [
    ("/rally/http", "PUT", 405),
    ("/rally/http", "DELETE", 405),
    ("/rally/http", "POST", 405),
    ("/rally/httpx", "GET", 404),
    ("/rally/http/", "GET", 404),
    ("/rally/http2", "GET", 404),
], ids=["put", "delete", "post-to-open", "httpx", "trailing-slash", "http2-path"])
def test_open_other_path_is_404_other_method_405(start_server, path, method, status):
    s = start_server()

    async def go():
        async with http_client(s) as c:
            r = await c.request(method, s.http + path)
        assert r.status_code == status, (r.status_code, r.text)
        assert "rally-session" not in r.headers
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.metrics()["http"]["sessions_opened"] == 1  # assert_still_serving's
