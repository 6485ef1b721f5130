"""Protocol violations over both transports, with third-party peers.

Each case: a real server; a misbehaving peer (aioquic WebTransport or
`websockets` WebSocket) gets the documented Error + close code (PROTOCOL.md
§6); the event is counted in /health; a well-behaved peer on each transport
still gets Welcome and snapshots afterwards.
"""

import asyncio

import pytest

from rally_peers import (
    CODE,
    WtClient,
    assert_refused_with,
    assert_still_serving,
    hello,
    input_msg,
    misbehave,
    ping,
    run,
    ws_open,
    ws_until_closed,
)

BOTH = ["ws", "wt"]

# Input with count 0 (6 + 0 bytes): count must be 1–8.
INPUT_COUNT_0 = b"\x02" + (1).to_bytes(4, "big") + b"\x00"
# Ping cut short: 4 of the 8 bytes of client_time_us.
PING_TRUNCATED = b"\x03\x00\x00\x00\x01"
# Input whose buttons byte has a bit other than 1|2|4|8.
INPUT_BAD_BUTTONS = input_msg(1, [0x10])
# Input with newest_seq < count.
INPUT_SEQ_BELOW_COUNT = input_msg(1, [1, 1])
# A valid Ping with a trailing byte.
PING_TRAILING = ping(7) + b"\x00"


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize(
    "msg",
    [INPUT_COUNT_0, PING_TRUNCATED, INPUT_BAD_BUTTONS, INPUT_SEQ_BELOW_COUNT, PING_TRAILING],
    ids=["input-count-0", "ping-truncated", "input-bad-buttons", "input-seq-below-count",
         "ping-trailing-byte"],
)
def test_malformed_message_is_bad_message(start_server, transport, msg):
    s = start_server()

    async def go():
        out = await misbehave(s, transport, reliable=[msg])
        assert_refused_with(out, "bad_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("bad_message") == 1


def test_malformed_input_datagram_is_bad_message(start_server):
    """WebTransport: the Input with count 0 on its own channel, a datagram."""
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", unreliable=[INPUT_COUNT_0])
        assert_refused_with(out, "bad_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("bad_message") == 1


def test_zero_length_frame_is_bad_message(start_server):
    """§2: a zero length on the WebTransport stream is bad_message."""
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", raw_stream=b"\x00\x00")
        assert_refused_with(out, "bad_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("bad_message") == 1


def test_empty_websocket_message_is_bad_message(start_server):
    """An empty binary message has no type byte: it cannot decode."""
    s = start_server()

    async def go():
        out = await misbehave(s, "ws", reliable=[b""])
        assert_refused_with(out, "bad_message")

    run(go())
    assert s.error_count("bad_message") == 1


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("type_byte", [0x7F, 0x06, 0x00, 0x81], ids=["0x7f", "0x06", "0x00", "0x81"])
def test_unknown_type_is_unknown_message(start_server, transport, type_byte):
    s = start_server()

    async def go():
        out = await misbehave(s, transport, reliable=[bytes([type_byte, 1, 2, 3])])
        assert_refused_with(out, "unknown_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unknown_message") == 1


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_wrong_version_is_unsupported_version(start_server, transport, version):
    s = start_server()

    async def go():
        out = await misbehave(s, transport, send_hello=False, reliable=[hello("r", "v", version)])
        assert_refused_with(out, "unsupported_version")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unsupported_version") == 1


@pytest.mark.parametrize("transport", BOTH)
def test_message_over_256_bytes_is_message_too_large(start_server, transport):
    s = start_server()
    big = b"\x03" + b"\x00" * 256  # 257 bytes

    async def go():
        out = await misbehave(s, transport, reliable=[big])
        assert_refused_with(out, "message_too_large")
        # Exactly 256 bytes is still a message (it fails to decode instead).
        out = await misbehave(s, transport, reliable=[b"\x03" + b"\x00" * 255])
        assert_refused_with(out, "bad_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("message_too_large") == 1


def test_frame_length_over_256_is_refused_as_soon_as_read(start_server):
    """§2: refused 'as soon as the length is read' — no payload follows."""
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", raw_stream=(0xFFFF).to_bytes(2, "big"))
        assert_refused_with(out, "message_too_large")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("message_too_large") == 1


def test_datagram_over_256_bytes_is_message_too_large(start_server):
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", unreliable=[b"\x03" + b"\x00" * 299])
        assert_refused_with(out, "message_too_large")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("message_too_large") == 1


@pytest.mark.parametrize("size", [4096, 5000, 70000], ids=["4KiB", "5000B", "70000B"])
def test_websocket_message_over_4kib(start_server, size):
    """§8: a WebSocket frame/message over 4 KiB is refused by the WebSocket
    layer with message_too_large. Observed and asserted exactly: the server
    still sends Error(4) and closes with 4004 (not 1009)."""
    s = start_server()

    async def go():
        out = await misbehave(s, "ws", reliable=[b"\x03" + b"\x00" * (size - 1)])
        assert_refused_with(out, "message_too_large")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("message_too_large") == 1


def test_websocket_fragmented_message_over_4kib(start_server):
    """The 4 KiB limit holds for the reassembled message, not only per frame."""
    s = start_server()

    async def go():
        ws = await ws_open(s.ws_url)
        await ws.send(hello("adv", "frag"))
        await ws.recv()
        await ws.send([b"\x03" + b"\x00" * 999] + [b"\x00" * 1000] * 4)  # 5 frames, 5000 B
        out = await ws_until_closed(ws)
        assert_refused_with(out, "message_too_large")

    run(go())
    assert s.error_count("message_too_large") == 1


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize(
    "first",
    [input_msg(1, [1]), ping(1), b"\x04"],
    ids=["input", "ping", "leave"],
)
def test_anything_before_hello_is_unexpected_message(start_server, transport, first):
    s = start_server()

    async def go():
        out = await misbehave(s, transport, send_hello=False, reliable=[first])
        assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


@pytest.mark.parametrize("transport", BOTH)
def test_second_hello_is_unexpected_message(start_server, transport):
    s = start_server()

    async def go():
        out = await misbehave(s, transport, reliable=[hello("adv", "again")])
        assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("kind", ["room", "name"])
def test_invalid_names_are_invalid_name(start_server, transport, kind):
    s = start_server()
    msg = hello("bad room!", "n") if kind == "room" else hello("r", "a\x07b")

    async def go():
        out = await misbehave(s, transport, send_hello=False, reliable=[msg])
        assert_refused_with(out, "invalid_name")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("invalid_name") == 1


@pytest.mark.parametrize("transport", BOTH)
def test_message_flood_is_rate_limited(start_server, transport):
    """500 Pings/s against a limit of 20/s (burst 10). On WebSocket the flood
    is paced at 2 ms per message; back to back in the next test."""
    s = start_server("--max-msgs-per-sec", "20", "--msg-burst", "10")

    async def go():
        out = await misbehave(s, transport, reliable=[ping(i) for i in range(200)],
                              pace=0.002 if transport == "ws" else 0)
        assert_refused_with(out, "rate_limited")
        await assert_still_serving(s)

    run(go())
    m = s.metrics()
    assert m["errors"]["rate_limited"] == 1, m
    assert m["messages_rate_dropped"] > 0, m


def test_back_to_back_websocket_flood_still_gets_rate_limited_close(start_server):
    """The server keeps reading (and discarding) after its close frame, so no
    TCP reset destroys the Error and the 4013 close before the client reads."""
    s = start_server("--max-msgs-per-sec", "20", "--msg-burst", "10")

    async def go():
        for _ in range(3):
            out = await misbehave(s, "ws", reliable=[ping(i) for i in range(200)])
            assert_refused_with(out, "rate_limited")

    run(go())


def test_datagram_flood_is_rate_limited(start_server):
    """The limit counts messages on any channel: datagrams too."""
    s = start_server("--max-msgs-per-sec", "20", "--msg-burst", "10")

    async def go():
        out = await misbehave(s, "wt", unreliable=[ping(i) for i in range(200)])
        assert_refused_with(out, "rate_limited")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("rate_limited") == 1


def test_hello_timeout_on_both_transports(start_server):
    """No Hello within 5 s: Error hello_timeout (where a reliable channel is
    open) and close 4011 — WebSocket, WebTransport with its stream open, and
    WebTransport without any stream (no channel: close only)."""
    s = start_server()

    async def ws_silent():
        ws = await ws_open(s.ws_url)
        t0 = asyncio.get_running_loop().time()
        out = await ws_until_closed(ws, 10)
        assert_refused_with(out, "hello_timeout")
        return asyncio.get_running_loop().time() - t0

    async def wt_silent(open_stream):
        async with WtClient(s) as c:
            assert await c.connect() == 200
            if open_stream:
                c.open_stream()
            t0 = asyncio.get_running_loop().time()
            out, _ = await c.until_closed(10)
            assert_refused_with(out, "hello_timeout", error_message=open_stream)
            return asyncio.get_running_loop().time() - t0

    async def go():
        waits = await asyncio.gather(ws_silent(), wt_silent(True), wt_silent(False))
        for w in waits:
            assert 4.5 <= w <= 7.5, waits
        await assert_still_serving(s)

    run(go())
    assert s.error_count("hello_timeout") == 3
