"""WebTransport-only violations, with aioquic as the peer."""

import asyncio
import random

import pytest

from rally_peers import (
    LEAVE,
    WtClient,
    assert_refused_with,
    assert_still_serving,
    decode,
    hello,
    input_msg,
    misbehave,
    ping,
    run,
)

# HTTP/3 error codes (RFC 9114 §8.1, RFC 9297 §2.1).
H3_NO_ERROR = 0x100
H3_DATAGRAM_ERROR = 0x33


@pytest.mark.parametrize("seed", range(6))
def test_garbage_datagrams_close_with_a_decode_error(start_server, seed):
    """Random datagram payloads after Hello. The first byte decides which
    error applies: a known client type (0x02 Input, 0x03 Ping) that fails to
    decode is bad_message; anything else unknown_message (0x01/0x04/0x05
    would be valid types on the wrong channel, so they are avoided here and
    covered below)."""
    rng = random.Random(seed)
    first = rng.choice([0x02, 0x03, 0x00, 0x7F, 0x80, 0xFF, 0x42])
    payload = bytes([first]) + rng.randbytes(rng.randint(0, 200))
    if first == 0x03 and len(payload) == 9:
        payload += b"\x00"  # a 9-byte Ping would be valid
    want = "bad_message" if first in (0x02, 0x03) else "unknown_message"
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", unreliable=[payload])
        assert_refused_with(out, want)
        await assert_still_serving(s)

    run(go())
    assert s.error_count(want) == 1


@pytest.mark.parametrize("msg", [hello("r", "dgram"), LEAVE], ids=["hello", "leave"])
def test_hello_or_leave_on_a_datagram_is_unexpected_message(start_server, msg):
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", unreliable=[msg])
        assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


def test_datagrams_before_hello_are_ignored(start_server):
    """§1: datagrams that arrive before Hello has been accepted are ignored —
    even ones that would be errors after it."""
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            assert await c.connect() == 200
            c.open_stream()
            for d in (input_msg(1, [1]), hello("r", "x"), b"\x7f", b"\x02"):
                c.send_datagram(d)
            await asyncio.sleep(0.3)
            c.send(hello("early", "dg"))
            w = await c.recv()
            assert w.kind == "welcome", w
            c.send(ping(42))
            pong = await c.recv_until(lambda m: m.kind == "pong")
            assert pong["client_time_us"] == 42
            assert c.proto.terminated is None

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


def test_ping_on_a_datagram_is_answered_on_a_datagram(start_server):
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            await c.join("p", "p")
            c.send_datagram(ping(77))

            async def pong():
                while True:
                    m = decode(await c.datagrams.get())
                    if m.kind == "pong":
                        return m

            m = await asyncio.wait_for(pong(), 5)
            assert m["client_time_us"] == 77

    run(go())


def test_a_second_bidirectional_stream_is_unexpected_message(start_server):
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            await c.join("s", "two")
            extra = c.open_stream()
            c.send_raw(b"\x00\x01\x03", stream_id=extra)
            out, _ = await c.until_closed()
            assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


def test_a_unidirectional_stream_is_unexpected_message(start_server):
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            await c.join("s", "uni")
            uni = c.open_stream(unidirectional=True)
            c.send_raw(b"hello", stream_id=uni)
            out, _ = await c.until_closed()
            assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


@pytest.mark.parametrize("path", ["/", "/other", "/rally/x", "/echo", "/health"])
def test_connect_to_another_path_is_404(start_server, path):
    s = start_server("--ws-echo")

    async def go():
        async with WtClient(s, path=path) as c:
            assert await c.connect() == 404
        await assert_still_serving(s)

    run(go())
    assert s.metrics()["connect_refused"] == 1


@pytest.mark.parametrize(
    "raw",
    [b"\xc0\x00", b"\xff\xff\xff\xff\xff\xff\xff\xff" + ping(1)],
    ids=["truncated-varint", "quarter-id-2^62-1"],
)
def test_datagram_with_an_invalid_quarter_stream_id_ends_the_connection(start_server, raw):
    """A raw QUIC DATAGRAM (aioquic's `send_datagram_frame`, no HTTP/3 prefix
    added) whose quarter-stream-id cannot be parsed or exceeds every possible
    stream. RFC 9297 §2.1 makes this a connection error (H3_DATAGRAM_ERROR);
    Rally's HTTP/3 stack closes the connection, observed with H3_NO_ERROR.
    It is not a Rally protocol error: no Error message, no /health error."""
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            await c.join("q", "q")
            c.send_quic_datagram(raw)
            out, t = await c.until_closed(5)
            assert out.errors == []
            assert t.error_code in (H3_NO_ERROR, H3_DATAGRAM_ERROR), t
        await assert_still_serving(s)

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


def test_datagram_with_a_foreign_quarter_stream_id_is_not_the_sessions(start_server):
    """Session CONNECT stream 0 → quarter-stream-id 0. A Ping under quarter
    ids 1 (stream 4: the session's own WebTransport stream, not a session),
    2 and 63 must not reach the session."""
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            await c.join("q", "q")
            for q in (1, 2, 63):
                c.send_quic_datagram(bytes([q]) + ping(1000 + q))
            await asyncio.sleep(0.5)
            c.send(ping(1))  # a marker on the reliable channel
            await c.recv_until(lambda m: m.kind == "pong" and m["client_time_us"] == 1)
            await asyncio.sleep(0.2)
            stray = []
            while not c.datagrams.empty():
                m = decode(c.datagrams.get_nowait())
                if m.kind == "pong":
                    stray.append(m["client_time_us"])
            assert stray == [], f"answered foreign-prefixed Pings: {stray}"

    run(go())
