"""WebTransport dialects (PROTOCOL.md §1, docs/SAFARI.md): the SETTINGS the
server sends, read by an independent HTTP/3 client (aioquic); clients that
say "WebTransport" in one draft's codepoint only; both `:protocol` tokens;
`WT-Available-Protocols`."""

import asyncio
import time

import pytest

from rally_peers import (
    ENABLE_WEBTRANSPORT_DRAFT02,
    WEBTRANSPORT_MAX_SESSIONS_DRAFT07,
    WT_ENABLED_DRAFT15,
    WT_INITIAL_MAX_DATA,
    WT_INITIAL_MAX_STREAMS_BIDI,
    WT_INITIAL_MAX_STREAMS_UNI,
    WT_MAX_SESSIONS_DRAFT13,
    WtClient,
    assert_still_serving,
    dots_players,
    hello,
    ping,
    run,
)

# RFC 9114 §7.2.4.1, RFC 9220 §5, RFC 9297 §5.1.
MAX_FIELD_SECTION_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8
H3_DATAGRAM = 0x33
# drafts 04-06 (h3 sends it with the draft-02 setting).
WEBTRANSPORT_MAX_SESSIONS_DRAFT04 = 0x2B603743

# What the server must send, each with its value: one session per
# connection, one bidirectional stream per session, no unidirectional
# stream, no session data limit beyond QUIC's (2^60, never reached).
EXPECTED = {
    MAX_FIELD_SECTION_SIZE: 16 * 1024,  # --h3-max-header's default
    ENABLE_CONNECT_PROTOCOL: 1,
    H3_DATAGRAM: 1,
    ENABLE_WEBTRANSPORT_DRAFT02: 1,
    WEBTRANSPORT_MAX_SESSIONS_DRAFT04: 1,
    WEBTRANSPORT_MAX_SESSIONS_DRAFT07: 1,
    WT_MAX_SESSIONS_DRAFT13: 1,
    WT_ENABLED_DRAFT15: 1,
    WT_INITIAL_MAX_STREAMS_BIDI: 1,
    WT_INITIAL_MAX_STREAMS_UNI: 0,
    WT_INITIAL_MAX_DATA: 1 << 60,
}


def is_grease(setting: int) -> bool:
    """RFC 9114 §7.2.4.1: 0x1f * N + 0x21."""
    return setting >= 0x21 and (setting - 0x21) % 0x1F == 0


def test_server_settings_carry_every_dialect(start_server):
    """An independent HTTP/3 client reads the server's one SETTINGS frame
    (aioquic refuses a repeated or reserved identifier) and finds every
    dialect's codepoint with its value, and nothing else but grease."""
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            got = await c.server_settings()
        unknown = {hex(k): v for k, v in got.items() if k not in EXPECTED and not is_grease(k)}
        assert unknown == {}, f"settings no dialect accounts for: {unknown}"
        assert sum(1 for k in got if is_grease(k)) <= 1
        wrong = {hex(k): (got.get(k), v) for k, v in EXPECTED.items() if got.get(k) != v}
        assert wrong == {}, f"setting: (sent, expected): {wrong}"

    run(go())


def test_h3_max_header_is_the_field_section_setting(start_server):
    s = start_server("--h3-max-header", "4096")

    async def go():
        async with WtClient(s) as c:
            got = await c.server_settings()
        assert got[MAX_FIELD_SECTION_SIZE] == 4096
        assert got[WT_ENABLED_DRAFT15] == 1

    run(go())


# A client's WebTransport SETTINGS in one dialect only, as each draft has
# its clients send them (H3_DATAGRAM = 1 and the rest are aioquic's own).
DIALECTS = {
    # draft-15/16 §3.1: "For draft versions of WebTransport only, clients
    # MUST also send SETTINGS_WT_ENABLED with the draft-specific codepoint".
    "wt-enabled-draft15": {WT_ENABLED_DRAFT15: 1},
    # draft-14 §3.1: clients send SETTINGS_WT_MAX_SESSIONS > 0.
    "wt-max-sessions-draft13": {WT_MAX_SESSIONS_DRAFT13: 1},
    # ... and with flow control declared, as Safari's dialect is reported
    # to (its own initial limits; the server sends within them).
    "wt-max-sessions-draft13-flow-control": {
        WT_MAX_SESSIONS_DRAFT13: 1,
        WT_INITIAL_MAX_STREAMS_BIDI: 100,
        WT_INITIAL_MAX_STREAMS_UNI: 100,
        WT_INITIAL_MAX_DATA: 1 << 20,
    },
    # draft-08 §3.1 (drafts 07-12); what wtransport 0.7 sends.
    "webtransport-max-sessions-draft07": {WEBTRANSPORT_MAX_SESSIONS_DRAFT07: 1},
    # draft-02 §3.1, what Chromium and aioquic send.
    "enable-webtransport-draft02": {ENABLE_WEBTRANSPORT_DRAFT02: 1},
}


async def play(c: WtClient, room: str) -> None:
    """Opens the session's stream, joins (dots), and sees the protocol work
    on both channels: Welcome on the stream, snapshots holding this player
    as datagrams, a Ping datagram answered by datagram, a Ping on the
    stream answered on the stream."""
    c.open_stream()
    c.send(hello(room[:32], "dialect"))  # rooms are 1-32 bytes (§4)
    w = await c.recv()
    assert w.kind == "welcome", w
    me = w["player_id"]
    snap = await c.datagram_until(lambda m: m.kind == "snapshot", 5)
    assert me in dots_players(snap["payload"])
    c.send_datagram(ping(77))
    pong = await c.datagram_until(lambda m: m.kind == "pong", 5)
    assert pong["client_time_us"] == 77
    c.send(ping(78))
    pong = await c.recv_until(lambda m: m.kind == "pong", 5)
    assert pong["client_time_us"] == 78


@pytest.mark.parametrize("dialect", list(DIALECTS), ids=list(DIALECTS))
def test_a_client_of_one_dialect_plays(start_server, dialect):
    """A client whose SETTINGS say "WebTransport" only in one draft's
    codepoint opens a session, a stream and datagrams (aioquic's
    ENABLE_WEBTRANSPORT is not sent)."""
    s = start_server()
    settings = DIALECTS[dialect]

    async def go():
        async with WtClient(s, wt_settings=settings) as c:
            # The server's session accept waits for these (draft-16 §3.1).
            assert await c.connect() == 200
            await play(c, f"d-{dialect}")
        await assert_still_serving(s)

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


def test_a_client_in_no_dialect_is_refused(start_server):
    """SETTINGS without any WebTransport codepoint (H3_DATAGRAM alone) do not
    enable WebTransport: the CONNECT is refused with 400 once the server has
    waited for them (quic.rs, SETTINGS_WAIT), not accepted."""
    s = start_server()

    async def go():
        async with WtClient(s, wt_settings={}) as c:
            t0 = time.monotonic()
            assert await c.connect(timeout=10) == 400
            assert time.monotonic() - t0 >= 2.5
        await assert_still_serving(s)

    run(go())


@pytest.mark.parametrize("protocol", ["webtransport", "webtransport-h3"])
def test_both_upgrade_tokens_open_a_session(start_server, protocol):
    """`:protocol` "webtransport" (drafts up to 14, §3.2; what Safari 26.5
    sends) and "webtransport-h3" (drafts 15-16, §3.2), the latter with the
    draft-15 setting as a draft-15 client sends it."""
    s = start_server()
    settings = {WT_ENABLED_DRAFT15: 1} if protocol == "webtransport-h3" else None

    async def go():
        async with WtClient(s, protocol=protocol, wt_settings=settings) as c:
            assert await c.connect() == 200
            await play(c, f"p-{protocol}")

    run(go())


@pytest.mark.parametrize("protocol", ["webtransport-h4", "connect-udp"])
def test_another_upgrade_token_gets_no_session(start_server, protocol):
    """Any other `:protocol` is no WebTransport session: connect-udp (known
    to h3) gets 404 like any CONNECT Rally does not serve; an unknown token
    is a malformed request to h3 (RFC 9114 §4.1.2), whose stream is reset."""
    s = start_server()

    async def go():
        async with WtClient(s, protocol=protocol) as c:
            try:
                status = await c.connect(timeout=2)
            except asyncio.TimeoutError:
                status = None
            assert status != 200
            if protocol == "connect-udp":
                assert status == 404
        await assert_still_serving(s)

    run(go())


# WT-Available-Protocols (draft-14 §3.3, draft-12 §3.4) → WT-Protocol.
NEGOTIATION = {
    "offered-string": (b'"chat", "rally.v2"', b'"rally.v2"'),
    "offered-with-params": (b'"rally.v2";x=1, "chat"', b'"rally.v2"'),
    "offered-token-drafts-10-12": (b"chat, rally.v2", b"rally.v2"),
    "not-offered": (b'"chat", "rally.v1"', None),
    "another-type-ignores-the-field": (b'"rally.v2", 42', None),
    "malformed-ignored": (b'"rally.v2', None),
}


@pytest.mark.parametrize("case", list(NEGOTIATION), ids=list(NEGOTIATION))
def test_wt_available_protocols(start_server, case):
    """The server picks "rally.v2" from the client's list when it is there
    (the only protocol Rally speaks, PROTOCOL.md §1), answering a String
    with a String (drafts 13+) and a Token with a Token (drafts 10-12), and
    otherwise sends no WT-Protocol; the session is accepted either way
    (Rally does not require negotiation) and plays."""
    offered, expected = NEGOTIATION[case]
    s = start_server()

    async def go():
        async with WtClient(s) as c:
            status = await c.connect(extra_headers=[(b"wt-available-protocols", offered)])
            assert status == 200
            assert c.response_headers.get(b"wt-protocol") == expected, c.response_headers
            await play(c, f"n-{case}")

    run(go())


def test_many_dialect_connections_at_once(start_server):
    """Sessions of every dialect side by side in one room see each other."""
    s = start_server()

    async def go():
        clients = [WtClient(s, wt_settings=v) for v in DIALECTS.values()]
        try:
            for c in clients:
                await c.__aenter__()
                assert await c.connect() == 200
                c.open_stream()
                c.send(hello("mixed", "p"))
                assert (await c.recv()).kind == "welcome"
            # The last one to join sees everyone in a snapshot.
            last = clients[-1]
            snap = await last.datagram_until(
                lambda m: m.kind == "snapshot" and len(dots_players(m["payload"])) == len(clients))
            assert len(dots_players(snap["payload"])) == len(clients)
        finally:
            for c in clients:
                await c.__aexit__(None, None, None)

    run(go())
