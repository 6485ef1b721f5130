"""HTTP streaming: what a POST is answered (PROTOCOL.md §11.2), with httpx.

POST /rally/http/ID?seq=N carries one or more §2 frames. 204 taken (or, for
an N already taken, were); 400 empty or not whole frames, and a zero-length
or over-limit frame also closes the session; 404 no such session; 409 N not
next; 413 over the POST limit, nothing taken, the session goes on.
"""

import asyncio
import secrets
import time

import pytest

from rally_peers import (
    http_joined as joined,
    http_pongs_until as pongs_until,
    http_still_goes_on as still_goes_on,
    LEAVE,
    HttpSession,
    app_msg,
    assert_refused_with,
    assert_still_serving,
    frame,
    hello,
    peer_join,
    ping,
    relayed,
    run,
)

ALL3 = ("ws", "wt", "http")


# -- 404: unknown or malformed session ids ------------------------------------


@pytest.mark.parametrize("make_id", [
    lambda sid: secrets.token_hex(16),          # well-formed, unknown
    lambda sid: "0" * 32,
    lambda sid: sid[:-1],                       # 31 digits
    lambda sid: sid + "0",                      # 33 digits
    lambda sid: "zz" + sid[2:],                 # not hex
    lambda sid: sid.upper(),                    # the live ID, not lowercase
    lambda sid: sid[:16] + "-" + sid[16:],
    lambda sid: sid + "/x",                     # an extra path segment
], ids=["unknown", "zeros", "short", "long", "not-hex", "uppercase", "dash", "extra-segment"])
def test_post_to_unknown_or_malformed_session_id_is_404(start_server, make_id):
    """§11.1: the ID is 32 lowercase hex digits; §11.2: 404 for no session
    with this ID. A POST under any other spelling of a live session's ID is
    not that session's, and does not use up its numbers."""
    s = start_server()

    async def go():
        h = await joined(s)
        bad = make_id(h.id)
        assert bad != h.id
        r = await h.post(frame(ping(66)), seq=1, session_id=bad)
        assert r.status_code == 404, (bad, r.status_code, r.text)
        r = await h.post(frame(ping(67)), seq=2, session_id=bad)
        assert r.status_code == 404, (bad, r.status_code, r.text)
        # The live session: seq 2 is still its next, and no Ping 66/67 came.
        await still_goes_on(h, 1)
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


# -- 409 and retries -----------------------------------------------------------


@pytest.mark.parametrize("ahead", [2, 3, 1000], ids=["skip-one", "skip-two", "far"])
def test_seq_more_than_one_past_the_last_is_409_and_not_taken(start_server, ahead):
    s = start_server()

    async def go():
        h = await joined(s)  # seq 1 taken (Hello)
        r = await h.post(frame(ping(9)), seq=1 + ahead)
        assert r.status_code == 409, (r.status_code, r.text)
        await still_goes_on(h, 2)  # seq 2
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


def test_retried_post_is_204_and_not_taken_twice(start_server):
    """relay: an HTTP player's App reaches the other player once whatever the
    retries — the same POST again, the same N with other bytes, an older N,
    even the Hello's N=1 again (a second Hello would be unexpected_message)."""
    s = start_server("--game", "relay")

    async def go():
        other = await peer_join(s, "ws", "retry", "other")
        h = await joined(s, room="retry")
        me = h.welcome["player_id"]
        first = frame(app_msg(b"one"))
        assert (await h.post(first, seq=2)).status_code == 204
        assert (await h.post(first, seq=2)).status_code == 204          # lost answer: again
        assert (await h.post(frame(app_msg(b"two")), seq=2)).status_code == 204  # N taken
        assert (await h.post(frame(hello("retry", "again")), seq=1)).status_code == 204
        assert (await h.post(first + first, seq=1)).status_code == 204
        assert (await h.post(frame(app_msg(b"three")), seq=3)).status_code == 204
        assert (await h.post(frame(app_msg(b"three")), seq=3)).status_code == 204
        assert (await h.post(frame(app_msg(b"end")), seq=4)).status_code == 204
        got = []
        while not got or got[-1] != relayed(me, b"end"):
            m = await other.until(lambda m: m.kind == "app")
            got.append(m["payload"])
        assert got == [relayed(me, b"one"), relayed(me, b"three"), relayed(me, b"end")], got
        await other.sync(5)  # nothing more behind them
        # The HTTP session is still open and numbered 5 next.
        assert await h.send(ping(5)) == 204
        assert await pongs_until(h, 5) == [5]
        # The game counted 3 Apps (Welcome.client_seq on a resume would say 3).
        await other.close()
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    m = s.metrics()
    assert m["errors"]["unexpected_message"] == 0, m["errors"]


def test_several_messages_in_one_post_are_taken_in_order(start_server):
    """One POST: Hello, then two Pings, then an App: Welcome, the roster,
    Pong 1, Pong 2 and the chat, in that order (§11.2 "in order")."""
    s = start_server()

    async def go():
        h = HttpSession(s)
        assert await h.open() == 200
        body = b"".join(frame(m) for m in (hello("many", "one"), ping(1), ping(2), app_msg(b"hi")))
        assert (await h.post(body)).status_code == 204
        got = []
        while len(got) < 5:
            m = await h.recv()
            if m.kind != "snapshot":
                got.append(m)
        assert [m.kind for m in got] == ["welcome", "joined", "pong", "pong", "app"], got
        assert [got[2]["client_time_us"], got[3]["client_time_us"]] == [1, 2]
        await h.close()

    run(go())


# -- 400 ------------------------------------------------------------------------


def test_empty_body_is_400_and_the_session_goes_on(start_server):
    s = start_server()

    async def go():
        h = await joined(s)
        r = await h.post(b"", seq=2)
        assert r.status_code == 400, (r.status_code, r.text)
        await still_goes_on(h, 2)
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


@pytest.mark.parametrize("body", [
    b"\x00",                                  # inside the length
    b"\x00\x09\x03\x00\x00",                  # inside the payload
    frame(ping(100)) + b"\x00\x09\x03",       # whole frame, then a cut one
    frame(ping(100)) + b"\x00",
], ids=["inside-the-length", "inside-the-payload", "after-a-whole-frame", "one-length-byte-after"])
def test_body_ending_inside_a_frame_is_400_and_the_session_goes_on(start_server, body):
    """400 (not whole frames), the session goes on: a 400 is not 204
    (taken), so the same N is still the next number, and the whole frame
    before the cut (Ping 100) is not answered."""
    s = start_server()

    async def go():
        h = await joined(s)
        r = await h.post(body, seq=2)
        assert r.status_code == 400, (r.status_code, r.text)
        await still_goes_on(h, 2)
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


@pytest.mark.parametrize("before", [b"", frame(ping(3))], ids=["alone", "after-a-frame"])
def test_zero_length_frame_is_400_and_closes_with_bad_message(start_server, before):
    s = start_server()

    async def go():
        h = await joined(s)
        r = await h.post(before + b"\x00\x00", seq=2)
        assert r.status_code == 400, (r.status_code, r.text)
        out = await h.until_closed(5)
        assert_refused_with(out, "bad_message")
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("bad_message") == 1


@pytest.mark.parametrize("body", [
    frame(app_msg(b"x" * 256)),                       # a 257-byte message, whole
    b"\x01\x01" + b"\x06" + b"x" * 20,                # announces 257, carries 21
    b"\xff\xff" + b"\x03" + bytes(8),                 # announces 65535
    frame(ping(1)) + frame(app_msg(b"x" * 300)),
], ids=["257-whole", "257-announced", "65535-announced", "after-a-frame"])
def test_frame_over_the_client_message_limit_is_400_and_message_too_large(start_server, body):
    """§11.2: a frame longer than the client message limit (256 by default)
    is 400 and closes the session with message_too_large (§2: as soon as
    the length is read)."""
    s = start_server()

    async def go():
        h = await joined(s)
        r = await h.post(body, seq=2)
        assert r.status_code == 400, (r.status_code, r.text)
        out = await h.until_closed(5)
        assert_refused_with(out, "message_too_large")
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("message_too_large") == 1


def test_256_byte_message_is_within_the_limit(start_server):
    s = start_server("--game", "relay")

    async def go():
        other = await peer_join(s, "ws", "lim", "other")
        h = await joined(s, room="lim")
        msg = app_msg(bytes(range(255)))  # 256 bytes with the type
        assert len(msg) == 256
        assert await h.send(msg) == 204
        m = await other.until(lambda m: m.kind == "app")
        assert m["payload"] == relayed(h.welcome["player_id"], bytes(range(255)))
        await other.close()
        await h.close()

    run(go())


# -- 413 ------------------------------------------------------------------------


def body_of(size: int) -> tuple[bytes, int]:
    """`size` bytes of whole frames of relay App messages (≤ 256 bytes each):
    (body, number of messages)."""
    parts, n = [], 0
    left = size
    while left:
        take = min(258, left)
        if left - take in (1, 2):  # a frame needs ≥ 3 bytes (length + type)
            take -= 3
        parts.append(frame(app_msg(bytes([n % 256]) * (take - 3))))
        left -= take
        n += 1
    b = b"".join(parts)
    assert len(b) == size
    return b, n


@pytest.mark.parametrize("flags,limit", [((), 16384), (("--http-max-post", "1024"), 1024)],
                         ids=["default-16KiB", "http-max-post-1024"])
def test_body_over_the_post_limit_is_413_nothing_taken(start_server, flags, limit):
    """A body of exactly the limit is taken (every message reaches the other
    relay player); one byte more is 413, none of its messages is taken, the
    same N is still next, the session goes on. Also sent chunked (no
    Content-Length)."""
    s = start_server("--game", "relay", *flags)

    async def go():
        other = await peer_join(s, "ws", "big", "other")
        h = await joined(s, room="big")
        over, _ = body_of(limit + 1)
        r = await h.post(over, seq=2)
        assert r.status_code == 413, (r.status_code, r.text)

        async def chunks():
            for i in range(0, len(over), 1000):
                yield over[i:i + 1000]

        r = await h.client.post(f"{s.http}/rally/http/{h.id}?seq=2", content=chunks(),
                                headers={"content-type": "application/octet-stream"})
        assert r.status_code == 413, ("chunked", r.status_code, r.text)
        await other.sync(1)  # nothing forwarded
        exact, n = body_of(limit)
        r = await h.post(exact, seq=2)
        assert r.status_code == 204, (r.status_code, r.text)
        got = 0
        while got < n:
            m = await other.until(lambda m: m.kind != "pong")
            assert m.kind == "app", m
            got += 1
        assert await other.sync(2) == []
        await still_goes_on(h, 3)
        await other.close()
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


# -- 404 after the end ------------------------------------------------------------


@pytest.mark.parametrize("end", ["leave", "error"])
def test_post_to_an_ended_session_is_404(start_server, end):
    """§11.4: a session ends when its stream ends (after Leave, or after an
    Error); §11.2: 404 for an ended session. The POST is sent as soon as the
    client has seen the end of the stream."""
    s = start_server()

    async def go():
        h = await joined(s)
        assert await h.send(LEAVE if end == "leave" else b"\x7f") == 204
        out = await h.until_closed(5)
        assert out.stream_end == "end", out
        t0 = time.monotonic()
        first = (await h.post(frame(ping(1)))).status_code
        statuses = [first]
        while statuses[-1] == 204 and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.05)
            statuses.append((await h.post(frame(ping(1)))).status_code)
        lag = time.monotonic() - t0
        assert statuses[-1] == 404, statuses
        await h.close()
        await assert_still_serving(s, transports=ALL3)
        assert first == 404, (
            f"a POST right after the stream ended was answered {first}; it was 404 only "
            f"{lag:.2f}s later ({len(statuses) - 1} POSTs answered 204 in between)")

    run(go())
