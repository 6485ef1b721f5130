"""Protocol violations over both transports, with third-party peers.

Each case: a real server; a misbehaving peer (aioquic WebTransport or
`websockets` WebSocket) gets the documented Error + close code (PROTOCOL.md
§6); the event is counted in /health; a well-behaved peer on each transport
still gets Welcome and snapshots afterwards.
"""

import asyncio
import struct

import pytest

from rally_peers import (
    LEAVE,
    WtClient,
    app_msg,
    app_unreliable,
    assert_refused_with,
    assert_still_serving,
    hello,
    input_msg,
    misbehave,
    peer_join,
    ping,
    relayed,
    resume,
    run,
    ws_open,
    ws_until_closed,
)

BOTH = ["ws", "wt"]

# -- malformed after Hello (dots, the default game) --------------------------

# Input with count 0 (6 bytes): count must be 1–8.
INPUT_COUNT_0 = b"\x02" + (1).to_bytes(4, "big") + b"\x00"
# Input with count 9 (and 9 well-formed one-byte inputs).
INPUT_COUNT_9 = input_msg(9, [1] * 9)
# Input with newest_seq < count.
INPUT_SEQ_BELOW_COUNT = input_msg(1, [1, 1])
# Input whose only input announces 2 bytes but carries 1.
INPUT_TRUNCATED = b"\x02" + struct.pack(">IB", 1, 1) + b"\x02\x01"
# A well-formed Input with a trailing byte.
INPUT_TRAILING = input_msg(1, [1]) + b"\x00"
# dots: a buttons byte with a bit other than 1|2|4|8 (the game refuses it).
INPUT_BAD_BUTTONS = input_msg(1, [0x10])
# Ping cut short: 4 of the 8 bytes of client_time_us.
PING_TRUNCATED = b"\x03\x00\x00\x00\x01"
# A valid Ping with a trailing byte.
PING_TRAILING = ping(7) + b"\x00"
# Leave is the type byte only.
LEAVE_TRAILING = LEAVE + b"\x00"


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize(
    "msg",
    [INPUT_COUNT_0, INPUT_COUNT_9, INPUT_SEQ_BELOW_COUNT, INPUT_TRUNCATED, INPUT_TRAILING,
     INPUT_BAD_BUTTONS, PING_TRUNCATED, PING_TRAILING, LEAVE_TRAILING],
    ids=["input-count-0", "input-count-9", "input-seq-below-count", "input-truncated",
         "input-trailing-byte", "dots-input-bad-buttons", "ping-truncated",
         "ping-trailing-byte", "leave-trailing-byte"],
)
def test_malformed_message_is_bad_message(start_server, transport, msg):
    s = start_server()

    async def go():
        out = await misbehave(s, transport, reliable=[msg])
        assert_refused_with(out, "bad_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("bad_message") == 1


@pytest.mark.parametrize("msg", [INPUT_COUNT_0, INPUT_TRUNCATED, INPUT_BAD_BUTTONS],
                         ids=["count-0", "truncated", "dots-bad-buttons"])
def test_malformed_input_datagram_is_bad_message(start_server, msg):
    """WebTransport: a bad Input on its own channel, a datagram."""
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", unreliable=[msg])
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


@pytest.mark.parametrize("partial", [b"\x00", b"\x00\x09\x03\x00\x00"],
                         ids=["inside-the-length", "inside-the-payload"])
def test_stream_ending_inside_a_frame_is_bad_message(start_server, partial):
    """§2: a stream that ends (FIN) inside a frame is bad_message."""
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", raw_stream=partial, end_stream=True)
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


# -- malformed first messages -------------------------------------------------

HELLO_ROOM_OVERRUN = b"\x01\x00\x02" + b"\x0a" + b"abc"  # room says 10 bytes, has 3
HELLO_NO_NAME = b"\x01\x00\x02" + b"\x01r"  # ends before the name
RESUME_TRUNCATED = resume(bytes(16), 0)[:-1]  # 22 of 23 bytes


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize(
    "first",
    [HELLO_ROOM_OVERRUN, HELLO_NO_NAME, RESUME_TRUNCATED,
     hello("r", b"bad\xff\xfename"), hello(b"r\xc3", "n")],
    ids=["hello-room-overrun", "hello-without-name", "resume-truncated",
         "hello-name-invalid-utf8", "hello-room-invalid-utf8"],
)
def test_malformed_first_message_is_bad_message(start_server, transport, first):
    """§4 Hello checks decoding first: invalid UTF-8 in a name is
    bad_message, not invalid_name (and so is a truncated Hello or Resume)."""
    s = start_server()

    async def go():
        out = await misbehave(s, transport, send_hello=False, reliable=[first])
        assert_refused_with(out, "bad_message", only=True)
        await assert_still_serving(s)

    run(go())
    m = s.metrics()
    assert m["errors"]["bad_message"] == 1, m
    assert m["errors"]["invalid_name"] == 0, m


# -- unknown types -------------------------------------------------------------

UNKNOWN_TYPES = [0x00, 0x09, 0x42, 0x7F, 0x80, 0x81, 0x87, 0x8B, 0xFF]


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("type_byte", UNKNOWN_TYPES, ids=[f"{t:#04x}" for t in UNKNOWN_TYPES])
def test_unknown_type_is_unknown_message(start_server, transport, type_byte):
    s = start_server()

    async def go():
        out = await misbehave(s, transport, reliable=[bytes([type_byte, 1, 2, 3])])
        assert_refused_with(out, "unknown_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unknown_message") == 1


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("type_byte", [0x00, 0x09, 0x7F, 0x81],
                         ids=["0x00", "0x09", "0x7f", "0x81"])
def test_unknown_type_before_hello_is_unknown_message(start_server, transport, type_byte):
    """§3: the type is decoded before anything else is checked, so an unknown
    type as the first message is unknown_message, not unexpected_message."""
    s = start_server()

    async def go():
        out = await misbehave(s, transport, send_hello=False, reliable=[bytes([type_byte, 1, 2, 3])])
        assert_refused_with(out, "unknown_message", only=True)
        await assert_still_serving(s)

    run(go())
    m = s.metrics()
    assert m["errors"]["unknown_message"] == 1, m
    assert m["errors"]["unexpected_message"] == 0, m


# -- versions --------------------------------------------------------------------


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("version", [0, 1, 3, 0xFFFF])
def test_wrong_hello_version_is_unsupported_version(start_server, transport, version):
    """A version-1 Hello (same layout, no app bytes) gets unsupported_version
    and nothing else: no Welcome, no roster, no snapshot."""
    s = start_server()

    async def go():
        out = await misbehave(s, transport, send_hello=False, reliable=[hello("r", "v", version=version)])
        assert_refused_with(out, "unsupported_version", only=True)
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unsupported_version") == 1


def test_hello_app_bytes_are_accepted_by_dots(start_server):
    """§12 dots: Hello.app is ignored; a Hello carrying some still joins."""
    s = start_server()

    async def go():
        for t in BOTH:
            p = await peer_join(s, t, "app", f"with-app-{t}", app=b"\x00\xffanything")
            assert p.welcome["game"] == "dots" and p.welcome["version"] == 2
            await p.sync(1)
            await p.close()

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


# -- sizes -------------------------------------------------------------------------


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
@pytest.mark.parametrize("position", ["newest", "older"])
def test_input_over_max_input_is_message_too_large(start_server, transport, position):
    """§4/§6: an input over the input limit (32 bytes by default) is
    message_too_large, whichever input of the message it is (the whole
    message, 40 or 42 bytes, is well under the 256-byte message limit)."""
    s = start_server()
    inputs = [b"\x01" * 33] if position == "newest" else [b"\x01", b"\x01" * 33]

    async def go():
        out = await misbehave(s, transport, reliable=[input_msg(len(inputs), inputs)])
        assert_refused_with(out, "message_too_large")
        await assert_still_serving(s)

    run(go())
    m = s.metrics()
    assert m["errors"]["message_too_large"] == 1, m
    assert m["errors"]["bad_message"] == 0, m


def test_input_over_max_input_as_a_datagram_is_message_too_large(start_server):
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", unreliable=[input_msg(1, [b"\x01" * 33])])
        assert_refused_with(out, "message_too_large")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("message_too_large") == 1


@pytest.mark.parametrize("transport", BOTH)
def test_configured_limits_are_in_welcome_and_enforced(start_server, transport):
    """--max-client-message 100 and --max-input-bytes 4 (relay: inputs are
    accepted and ignored, App is forwarded): Welcome.max_message = 100 and
    max_input = 4; a 100-byte App and a 4-byte input pass, a 101-byte App and
    a 5-byte input are message_too_large."""
    s = start_server("--game", "relay", "--max-client-message", "100", "--max-input-bytes", "4")

    async def go():
        sender = await peer_join(s, transport, "lim", "sender")
        other = await peer_join(s, "ws", "lim", "other")
        for p in (sender, other):
            assert (p.welcome["max_message"], p.welcome["max_input"]) == (100, 4), p.welcome
            assert p.welcome["game"] == "relay"
        await sender.send(input_msg(2, [b"\x01\x02\x03\x04", b""]))
        payload = bytes(range(99))  # App of exactly 100 bytes
        await sender.send(app_msg(payload))
        m = await other.until(lambda m: m.kind == "app")
        assert m["payload"] == relayed(sender.id, payload)
        await sender.sync(1)
        assert not sender.closed

        await sender.send(app_msg(payload + b"!"))  # 101 bytes
        assert_refused_with(await sender.until_closed(), "message_too_large")

        p = await peer_join(s, transport, "lim", "inputs")
        await p.send(input_msg(1, [b"\x01\x02\x03\x04\x05"]))  # 11 bytes, one 5-byte input
        assert_refused_with(await p.until_closed(), "message_too_large")
        await other.close()
        await assert_still_serving(s)

    run(go())
    m = s.metrics()
    assert m["errors"]["message_too_large"] == 2, m
    assert m["errors"]["bad_message"] == 0, m


# -- unexpected ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize(
    "first",
    [input_msg(1, [1]), ping(1), LEAVE, app_msg(b"hi"), app_unreliable(b"hi")],
    ids=["input", "ping", "leave", "app", "app-unreliable"],
)
def test_anything_before_hello_is_unexpected_message(start_server, transport, first):
    s = start_server()

    async def go():
        out = await misbehave(s, transport, send_hello=False, reliable=[first])
        assert_refused_with(out, "unexpected_message", only=True)
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("again", ["hello", "resume"])
def test_second_first_message_is_unexpected_message(start_server, transport, again):
    """§4: a second Hello, or a Resume after a successful Hello, is
    unexpected_message (the Resume names a real, live player: this one)."""
    s = start_server()

    async def go():
        p = await peer_join(s, transport, "adv", "twice")
        msg = hello("adv", "again") if again == "hello" else resume(p.welcome["resume_token"], 0)
        await p.send(msg)
        out = await p.until_closed()
        assert_refused_with(out, "unexpected_message")
        assert not any(m.kind == "welcome" for m in out.msgs), out.msgs
        await assert_still_serving(s)

    run(go())
    m = s.metrics()
    assert m["errors"]["unexpected_message"] == 1, m
    assert m["errors"]["replaced"] == 0, m


# -- names -----------------------------------------------------------------------------

BAD_NAMES = {
    "room-space": ("bad room!", "n"),
    "room-empty": ("", "n"),
    "room-33": ("r" * 33, "n"),
    "room-non-ascii": ("caf\u00e9", "n"),
    "name-control": ("r", "a\x07b"),
    "name-empty": ("r", ""),
    "name-25-bytes": ("r", "n" * 25),
    "name-whitespace": ("r", "   "),
}


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("kind", list(BAD_NAMES))
def test_invalid_names_are_invalid_name(start_server, transport, kind):
    s = start_server()
    room, name = BAD_NAMES[kind]

    async def go():
        out = await misbehave(s, transport, send_hello=False, reliable=[hello(room, name)])
        assert_refused_with(out, "invalid_name", only=True)
        await assert_still_serving(s)

    run(go())
    assert s.error_count("invalid_name") == 1


def test_longest_names_are_accepted(start_server):
    """32-byte room, 24-byte UTF-8 name (multi-byte characters count as bytes)."""
    s = start_server()

    async def go():
        for t in BOTH:
            p = await peer_join(s, t, "R_-9" * 8, "\u00e9" * 12)
            me = await p.until(lambda m: m.kind == "joined" and m["player_id"] == p.id)
            assert me["name"] == "\u00e9" * 12
            await p.close()

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


# -- capacity ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", BOTH)
def test_join_over_the_room_limit_is_room_full(start_server, transport):
    s = start_server("--max-players-per-room", "1")

    async def go():
        holder = await peer_join(s, "ws", "full", "holder")
        out = await misbehave(s, transport, send_hello=False, reliable=[hello("full", "late")])
        assert_refused_with(out, "room_full", only=True)
        await holder.close()
        await assert_still_serving(s)

    run(go())
    assert s.error_count("room_full") == 1


@pytest.mark.parametrize("transport", BOTH)
def test_session_over_the_server_limit_is_server_full(start_server, transport):
    s = start_server("--max-sessions", "1")

    async def go():
        holder = await peer_join(s, "ws", "one", "holder")
        out = await misbehave(s, transport, send_hello=False, reliable=[hello("two", "late")])
        assert_refused_with(out, "server_full", only=True)
        await holder.send(LEAVE)
        await holder.until_closed()
        p = await peer_join(s, transport, "two", "next")  # the slot is free again
        await p.close()

    run(go())
    assert s.error_count("server_full") == 1


# -- leave -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", BOTH)
def test_leave_closes_normally_and_the_room_is_told(start_server, transport):
    """§6 normal end: WebSocket 1000 `bye`, WebTransport application code 0
    `bye`; the others get PlayerLeft."""
    s = start_server()

    async def go():
        watcher = await peer_join(s, "ws", "bye", "watcher")
        p = await peer_join(s, transport, "bye", "leaver")
        await p.send(LEAVE)
        out = await p.until_closed()
        assert out.errors == [], out.msgs
        if transport == "ws":
            assert (out.close_code, out.close_reason) == (1000, "bye")
        else:
            assert (out.close_frame, out.close_code, out.close_reason) == (0x1D, 0, "bye")
        left = await watcher.until(lambda m: m.kind == "left")
        assert left["player_id"] == p.id
        await watcher.close()

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


# -- rate ---------------------------------------------------------------------------------


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


# -- hello timeout ----------------------------------------------------------------------------


def test_hello_timeout_on_both_transports(start_server):
    """No Hello within 5 s: Error hello_timeout (where a reliable channel is
    open) and close 4011 — WebSocket, WebTransport with its stream open, and
    WebTransport without any stream (no channel: close only)."""
    s = start_server()

    async def ws_silent():
        ws = await ws_open(s.ws_url)
        t0 = asyncio.get_running_loop().time()
        out = await ws_until_closed(ws, 10)
        assert_refused_with(out, "hello_timeout", only=True)
        return asyncio.get_running_loop().time() - t0

    async def wt_silent(open_stream):
        async with WtClient(s) as c:
            assert await c.connect() == 200
            if open_stream:
                c.open_stream()
            t0 = asyncio.get_running_loop().time()
            out, _ = await c.until_closed(10)
            assert_refused_with(out, "hello_timeout", error_message=open_stream, only=True)
            return asyncio.get_running_loop().time() - t0

    async def go():
        waits = await asyncio.gather(ws_silent(), wt_silent(True), wt_silent(False))
        for w in waits:
            assert 4.5 <= w <= 7.5, waits
        await assert_still_serving(s)

    run(go())
    assert s.error_count("hello_timeout") == 3
