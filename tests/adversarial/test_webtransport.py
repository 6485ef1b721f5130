"""WebTransport-only violations, with aioquic as the peer."""

import asyncio
import random

import pytest

from rally_peers import (
    LEAVE,
    Peer,
    WtClient,
    app_msg,
    app_unreliable,
    assert_refused_with,
    assert_still_serving,
    decode,
    hello,
    input_msg,
    misbehave,
    peer_join,
    ping,
    read_roster,
    resume,
    run,
)

# HTTP/3 error codes (RFC 9114 §8.1, RFC 9297 §2.1).
H3_NO_ERROR = 0x100
H3_DATAGRAM_ERROR = 0x33


@pytest.mark.parametrize("seed", range(6))
def test_garbage_datagrams_close_with_a_decode_error(start_server, seed):
    """Random datagram payloads after Hello. The first byte decides which
    error applies: a Ping (0x03) that fails to decode is bad_message; an
    unknown type unknown_message. (0x01/0x04/0x05/0x06 would be valid types
    on the wrong channel, covered below; 0x07 AppUnreliable takes any bytes;
    0x08 InputAck has its own cases in test_deltas.py;
    random 0x02 Inputs could hit either bad_message or an input over the
    size limit, so they have their own cases in test_protocol_errors.py.)"""
    rng = random.Random(seed)
    first = rng.choice([0x03, 0x00, 0x09, 0x7F, 0x80, 0xFF, 0x42])
    payload = bytes([first]) + rng.randbytes(rng.randint(0, 200))
    if first == 0x03 and len(payload) == 9:
        payload += b"\x00"  # a 9-byte Ping would be valid
    want = "bad_message" if first == 0x03 else "unknown_message"
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", unreliable=[payload])
        assert_refused_with(out, want)
        await assert_still_serving(s)

    run(go())
    assert s.error_count(want) == 1


@pytest.mark.parametrize(
    "msg",
    [hello("r", "dgram"), LEAVE, resume(bytes(16), 0), app_msg(b"chat")],
    ids=["hello", "leave", "resume", "app"],
)
def test_reliable_only_messages_on_a_datagram_are_unexpected_message(start_server, msg):
    """§4: Hello, Leave, Resume and App (0x06) are reliable-only; as a
    datagram after joining they are unexpected_message."""
    s = start_server()

    async def go():
        out = await misbehave(s, "wt", unreliable=[msg])
        assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


@pytest.mark.parametrize("stream_first", [True, False], ids=["stream-open", "no-stream-yet"])
def test_datagrams_before_hello_are_ignored(start_server, stream_first):
    """§1: datagrams that arrive before Hello has been accepted are ignored —
    whatever they hold, even ones that would be errors after it — and Hello
    then works. With the stream open first, and with the datagrams first
    ("before or right after its first datagram")."""
    s = start_server()
    junk = (input_msg(1, [1]), input_msg(1, [0x10]), hello("r", "x"), resume(bytes(16), 0),
            app_msg(b"x"), app_unreliable(b"x"), LEAVE, ping(3), b"\x7f", b"\x02", b"\x03" * 300)

    async def one(n):
        async with WtClient(s) as c:
            assert await c.connect() == 200
            if stream_first:
                c.open_stream()
            for d in junk:
                c.send_datagram(d)
            # Nothing observable happens to an ignored datagram; give them
            # time to land before the Hello that would make them count.
            await asyncio.sleep(0.3)
            if not stream_first:
                c.open_stream()
            c.send(hello(f"early{n}", "dg"))
            w = await c.recv()
            assert w.kind == "welcome", w
            c.send(ping(42))
            before_pong = []
            while (m := await c.recv_or_close()) is not None and m.kind != "pong":
                before_pong.append(m)
            t = c.proto.terminated
            assert m is not None and t is None, (
                f"the server ended the session after Welcome (close {t.error_code} "
                f"{t.reason_phrase!r}), having read: {before_pong}")
            assert m["client_time_us"] == 42
            # The early Hello datagram joined no one (the roster is this
            # player alone) and the early Ping datagram got no Pong.
            assert [(m.kind, m["name"]) for m in before_pong if m.kind == "joined"] == [
                ("joined", "dg")], before_pong
            early = [decode(d) for d in list(c.datagrams._queue)]
            assert not [m for m in early if m.kind == "pong"], early

    async def go():
        # Three sessions at once: whether the early datagrams are acted on
        # is a race in the server (see the README), three make it show.
        await asyncio.gather(*(one(n) for n in range(3)))

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


@pytest.mark.parametrize("when", ["after-hello", "before-hello"])
def test_a_second_bidirectional_stream_is_unexpected_message(start_server, when):
    """§1: exactly one bidirectional stream; a second is unexpected_message
    (Error on the first stream, then close 4005), joined or not."""
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            if when == "after-hello":
                await c.join("s", "two")
            else:
                assert await c.connect() == 200
                c.open_stream()
            extra = c.open_stream()
            c.send_raw(b"\x00\x01\x03", stream_id=extra)
            out, _ = await c.until_closed()
            assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


@pytest.mark.parametrize("when", ["after-hello", "before-hello"])
def test_a_unidirectional_stream_is_unexpected_message(start_server, when):
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            if when == "after-hello":
                await c.join("s", "uni")
            else:
                assert await c.connect() == 200
                c.open_stream()
            uni = c.open_stream(unidirectional=True)
            c.send_raw(b"hello", stream_id=uni)
            out, _ = await c.until_closed()
            assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1


@pytest.mark.parametrize("last", ["fin-alone", "fin-with-a-last-frame"])
def test_stream_fin_at_a_frame_boundary_is_a_drop_and_the_player_is_kept(start_server, last):
    """§2/§7: the client ends its stream cleanly (FIN at a frame boundary):
    the server closes the QUIC connection with application code 0 and no
    reason, sends no Error, and keeps the player for resume: a Resume on a
    new connection gets the same player_id, and the room never saw it leave."""
    s = start_server()

    async def go():
        watcher = await peer_join(s, "ws", "fin", "watcher")
        p = await peer_join(s, "wt", "fin", "finisher")
        await read_roster(p, 2)
        token, me = p.welcome["resume_token"], p.id
        p.wt.send_raw(b"" if last == "fin-alone" else b"\x00\x09" + ping(2), end=True)
        out = await p.until_closed()
        assert out.errors == [], out.msgs

        q = Peer(s, "wt")
        await q.open()
        await q.send(resume(token, 2))
        w = await q.reply()
        assert w.kind == "welcome", w
        assert (w["player_id"], w["reliable_seq"]) == (me, 2), w
        assert [m for m in await q.sync(3) if m.kind in ("joined", "left")] == []
        assert [m for m in await watcher.sync(4) if m.kind == "left"] == [], "it never left"
        await q.close()
        await watcher.close()
        # Checked last, so that the resume above is exercised either way.
        assert (out.close_frame, out.close_code, out.close_reason) == (0x1D, 0, ""), (
            f"after FIN the server closed with frame {out.close_frame:#x}, application code "
            f"{out.close_code:#x}, reason {out.close_reason!r}; PROTOCOL.md §2: code 0, no reason")

    run(go())
    m = s.metrics()
    assert sum(m["errors"].values()) == 0, m


def test_session_closed_before_its_stream_is_not_a_hello_timeout(start_server):
    """§1: a session that the client closes before opening its stream is a
    normal close (nothing is sent), so /health counts no hello_timeout for
    it. Three ways to close it: closing the QUIC connection, ending (FIN) the
    CONNECT stream, and a CLOSE_WEBTRANSPORT_SESSION capsule (what a browser's
    `WebTransport.close()` sends) followed by FIN. A control session left open
    without a stream, opened after them, does time out; only it is counted.
    All run at once so the 5 s wait is paid once."""
    s = start_server()

    def varint(v: int) -> bytes:
        if v < 0x40:
            return bytes([v])
        if v < 0x4000:
            return (0x4000 | v).to_bytes(2, "big")
        return (0x80000000 | v).to_bytes(4, "big")

    async def go():
        closers = {}
        for how in ("quic-close", "connect-stream-fin", "close-session-capsule"):
            c = WtClient(s)
            await c.__aenter__()
            assert await c.connect() == 200
            if how == "quic-close":
                c.close_connection(0)
            elif how == "connect-stream-fin":
                c.proto.h3.send_data(c.session_id, b"", end_stream=True)
                c.transmit()
            else:
                body = (0).to_bytes(4, "big") + b"done"  # error code u32, message
                capsule = varint(0x2843) + varint(len(body)) + body
                c.proto.h3.send_data(c.session_id, capsule, end_stream=True)
                c.transmit()
            closers[how] = c
        async with WtClient(s) as ctl:
            assert await ctl.connect() == 200
            out, _ = await ctl.until_closed(10)
            assert_refused_with(out, "hello_timeout", error_message=False, only=True)
        await asyncio.sleep(0.2)  # a timeout of the closers' (opened first) would be in by now
        wrong = {}
        for how, c in closers.items():
            t = c.proto.terminated
            if t is not None and c.proto.close_frame is not None and t.error_code != 0:
                wrong[how] = (t.error_code, t.reason_phrase)
            await c.__aexit__(None, None, None)
        m = s.metrics()
        assert not wrong and m["errors"]["hello_timeout"] == 1, (
            f"sessions closed before their stream were later closed by the server as {wrong}; "
            f"hello_timeout counted {m['errors']['hello_timeout']} (want 1, the control)")
        await assert_still_serving(s)

    run(go())
    assert s.metrics()["webtransport"]["sessions_active"] == 0


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
    stream. RFC 9297 §2.1 makes this a connection error of type
    H3_DATAGRAM_ERROR, and PROTOCOL.md §1 promises that code: an application
    CONNECTION_CLOSE with 0x33 (not H3_NO_ERROR, 0x100, as before the h3
    patch, vendor/README.md). It is not a Rally protocol error: no Error
    message, no /health error."""
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            await c.join("q", "q")
            c.send_quic_datagram(raw)
            out, t = await c.until_closed(5)
            assert out.errors == []
            assert (out.close_frame, t.error_code) == (0x1D, H3_DATAGRAM_ERROR), (
                f"closed with frame {out.close_frame}, code {t.error_code:#x} "
                f"{t.reason_phrase!r}; want 0x1d, H3_DATAGRAM_ERROR (0x33)")
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
