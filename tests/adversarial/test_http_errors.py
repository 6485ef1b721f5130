"""HTTP streaming: errors and limits as on the other transports (PROTOCOL.md
§6, §8, §11): the Error is the last message on the stream, then the stream
ends cleanly; in poll mode the Error is the last message polled, then a
poll gets 404. Counted in /health; a well-behaved peer on each transport
still plays afterwards."""

import asyncio
import time

import pytest

from rally_peers import (
    LEAVE,
    HttpSession,
    Peer,
    app_msg,
    assert_refused_with,
    assert_still_serving,
    frame,
    hello,
    input_msg,
    misbehave,
    peer_join,
    ping,
    read_roster,
    resume,
    run,
)

ALL3 = ("ws", "wt", "http")
MODES = ["stream", "sse", "poll"]


def poll_end_ok(out):
    """Polling has no end of stream: the session's end is a 404 poll."""
    assert out.stream_end == "404", out.stream_end
    out.stream_end = "end"
    return out


async def http_misbehave(s, mode, **kw):
    out = await misbehave(s, "http", mode=mode, **kw)
    return poll_end_ok(out) if mode == "poll" else out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", [0, 1, 3, 65535])
def test_hello_with_another_version_is_unsupported_version(start_server, mode, version):
    s = start_server()

    async def go():
        out = await http_misbehave(s, mode, send_hello=False,
                                   reliable=[hello("v", "old", version=version)])
        assert_refused_with(out, "unsupported_version", only=True)
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("unsupported_version") == 1


@pytest.mark.parametrize("after_hello", [False, True], ids=["before-hello", "after-hello"])
@pytest.mark.parametrize("t", [0x00, 0x09, 0x7f, 0x81, 0xff])
def test_unknown_type_is_unknown_message(start_server, after_hello, t):
    s = start_server()

    async def go():
        out = await http_misbehave(s, "stream", send_hello=after_hello,
                                   reliable=[bytes([t]) + b"\x00\x02"])
        assert_refused_with(out, "unknown_message", only=not after_hello)
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("unknown_message") == 1


@pytest.mark.parametrize("msg", [
    input_msg(1, [1]), ping(1), LEAVE, app_msg(b"x"), b"\x07x",
], ids=["input", "ping", "leave", "app", "app-unreliable"])
def test_anything_but_hello_first_is_unexpected_message(start_server, msg):
    s = start_server()

    async def go():
        out = await http_misbehave(s, "stream", send_hello=False, reliable=[msg])
        assert_refused_with(out, "unexpected_message", only=True)
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("unexpected_message") == 1


@pytest.mark.parametrize("second", ["hello", "resume"])
def test_second_hello_or_resume_is_unexpected_message(start_server, second):
    s = start_server()

    async def go():
        msg = hello("adv", "twice") if second == "hello" else resume(bytes(16), 0)
        out = await http_misbehave(s, "stream", reliable=[msg])
        assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("unexpected_message") == 1
    assert s.error_count("replaced") == 0


@pytest.mark.parametrize("msg", [
    b"\x02" + (1).to_bytes(4, "big") + b"\x00",        # Input count 0
    input_msg(1, [1]) + b"\x00",                       # trailing byte
    input_msg(1, [0x10]),                              # dots refuses the buttons
    b"\x03\x00\x00\x00\x01",                           # Ping cut short
    LEAVE + b"\x00",
], ids=["input-count-0", "input-trailing", "dots-bad-buttons", "ping-truncated",
        "leave-trailing"])
def test_malformed_message_is_bad_message(start_server, msg):
    s = start_server()

    async def go():
        out = await http_misbehave(s, "stream", reliable=[msg])
        assert_refused_with(out, "bad_message")
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("bad_message") == 1


def test_invalid_name_and_room_full(start_server):
    s = start_server("--max-players-per-room", "1")

    async def go():
        out = await http_misbehave(s, "stream", send_hello=False, reliable=[hello("bad room", "n")])
        assert_refused_with(out, "invalid_name", only=True)
        first = await peer_join(s, "http", "full", "first")
        for mode in MODES:
            out = await http_misbehave(s, mode, send_hello=False, reliable=[hello("full", "second")])
            assert_refused_with(out, "room_full", only=True)
        await first.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    e = s.metrics()["errors"]
    assert (e["invalid_name"], e["room_full"]) == (1, 3), e


@pytest.mark.parametrize("mode", MODES)
def test_over_the_session_limit_is_server_full(start_server, mode):
    """--max-sessions 1, one HTTP session playing: a second session (any
    mode) gets Error server_full and ends."""
    s = start_server("--max-sessions", "1")

    async def go():
        first = await peer_join(s, "http", "one", "first")
        h = HttpSession(s, mode=mode)
        assert await h.open() == 200
        await h.post(frame(hello("two", "second")))
        out = await h.until_closed(5)
        if mode == "poll":
            poll_end_ok(out)
        assert_refused_with(out, "server_full", only=True)
        await h.close()
        await first.sync(1)  # the first one is untouched
        await first.close()

    run(go())
    assert s.error_count("server_full") == 1


@pytest.mark.parametrize("nxt", ["ws", "wt", "http"])
def test_an_ended_http_session_frees_its_place_at_once(start_server, nxt):
    """--max-sessions 1: once an HTTP session's stream has ended (Leave,
    §11.4: the session ends when its stream ends), a new session on any
    transport is not server_full — as after a WebSocket or WebTransport
    Leave."""
    s = start_server("--max-sessions", "1")

    async def go():
        a = await peer_join(s, "http", "slot", "first")
        await a.send(LEAVE)
        out = await a.until_closed(5)
        assert out.errors == [] and out.stream_end == "end", out
        t0 = time.monotonic()
        b = Peer(s, nxt)
        await b.open()
        try:
            await b.send(hello("slot", "next"))
            r = await b.reply()
        except Exception as e:  # a closed WS / a 404 POST: the session was refused
            r = e
        await b.close()
        await a.close()
        assert getattr(r, "kind", None) == "welcome", (
            f"a new {nxt} session right after an HTTP Leave: {r!r} "
            f"(server_full so far: {s.error_count('server_full')})")

    run(go())
    assert s.error_count("server_full") == 0


@pytest.mark.parametrize("how", ["one-post", "many-posts"])
def test_flood_is_rate_limited(start_server, how):
    """§8 and §11.2: every message counts against the session's rate, both
    the messages of one POST and POSTs back to back."""
    s = start_server("--max-msgs-per-sec", "20", "--msg-burst", "10")

    async def go():
        flood = [ping(i) for i in range(200)]
        out = await misbehave(s, "http", reliable=flood, one_post=(how == "one-post"))
        assert_refused_with(out, "rate_limited")
        pongs = [m for m in out.msgs if m.kind == "pong"]
        assert len(pongs) < 60, f"{len(pongs)} of 200 Pings answered"
        await assert_still_serving(s, transports=ALL3)

    run(go())
    m = s.metrics()
    assert m["errors"]["rate_limited"] == 1, m["errors"]
    assert m["messages_rate_dropped"] > 0, m


@pytest.mark.parametrize("where", ["newest", "older"])
def test_input_over_max_input_bytes_is_message_too_large(start_server, where):
    s = start_server()

    async def go():
        big = bytes(33)
        inputs = [big, b"\x01"] if where == "newest" else [b"\x01", big]
        out = await http_misbehave(s, "stream", reliable=[input_msg(2, inputs)])
        assert_refused_with(out, "message_too_large")
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("message_too_large") == 1


def test_configured_limits_are_in_welcome_and_enforced(start_server):
    """relay, --max-client-message 100 --max-input-bytes 4: Welcome says so;
    a 100-byte App and a 4-byte input pass, 101 bytes and 5 bytes do not."""
    s = start_server("--game", "relay", "--max-client-message", "100", "--max-input-bytes", "4")

    async def go():
        p = await peer_join(s, "http", "lim", "ok")
        assert (p.welcome["max_message"], p.welcome["max_input"]) == (100, 4), p.welcome
        await p.send(app_msg(bytes(99)))
        await p.send(input_msg(1, [bytes(4)]))
        await p.sync(1)
        await p.close()
        for msg in (app_msg(bytes(100)), input_msg(1, [bytes(5)])):
            out = await http_misbehave(s, "stream", reliable=[msg])
            assert_refused_with(out, "message_too_large")
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("message_too_large") == 2


def test_no_hello_within_5s_is_hello_timeout_then_the_end(start_server):
    """One session per mode, at once (5 s each)."""
    s = start_server()

    async def one(mode):
        h = HttpSession(s, mode=mode)
        t0 = time.monotonic()
        assert await h.open() == 200
        out = await h.until_closed(10)
        took = time.monotonic() - t0
        if mode == "poll":
            poll_end_ok(out)
        assert_refused_with(out, "hello_timeout", only=True)
        assert 4.5 <= took <= 7, f"{mode}: ended after {took:.1f}s"
        await h.close()

    async def go():
        await asyncio.gather(*(one(mode) for mode in MODES))
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("hello_timeout") == len(MODES)


@pytest.mark.parametrize("mode", MODES)
def test_leave_ends_the_stream_with_no_error_and_the_room_sees_player_left(start_server, mode):
    s = start_server()

    async def go():
        watcher = await peer_join(s, "wt", "bye", "watcher")
        await read_roster(watcher, 1)
        h = await peer_join(s, "http", "bye", "leaver", mode=mode)
        j = await watcher.until(lambda m: m.kind == "joined")
        assert j["player_id"] == h.id
        await h.send(LEAVE)
        out = await h.until_closed(5)
        assert out.errors == [], out.msgs
        assert out.stream_end == ("404" if mode == "poll" else "end"), out.stream_end
        left = await watcher.until(lambda m: m.kind == "left")
        assert left["player_id"] == h.id
        # Not resumable: Leave removed the player.
        q = Peer(s, "ws")
        await q.open()
        await q.send(resume(h.welcome["resume_token"], 1))
        r = await q.reply()
        assert (r.kind, r["code"]) == ("error", 16), r
        await q.close()
        await watcher.close()
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    e = s.metrics()["errors"]
    assert e["resume_failed"] == 1 and sum(e.values()) == 1, e
