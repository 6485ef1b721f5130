"""Application messages through the built-in games (PROTOCOL.md §4–§5 App /
AppUnreliable, §12): relay forwards them with the sender's id, synthetic
echoes them and pads its snapshots, dots carries chat and refuses bad text."""

import asyncio
import struct

import pytest

from rally_peers import (
    app_msg,
    app_unreliable,
    assert_refused_with,
    assert_still_serving,
    dots_chat,
    peer_join,
    read_roster,
    relayed,
    run,
)

BOTH = ["ws", "wt"]


def from_id(m) -> int | None:
    if m.kind in ("app", "app_unreliable") and len(m["payload"]) >= 4:
        return struct.unpack(">I", m["payload"][:4])[0]
    return None


@pytest.mark.parametrize("sender_transport", BOTH)
def test_relay_forwards_app_messages_to_the_others_with_the_senders_id(start_server, sender_transport):
    """relay: App and AppUnreliable from one client reach every other client
    of the room as App (0x87, reliable) / AppUnreliable (0x88) = sender id
    (u32) + the bytes, intact (all byte values, empty included); on
    WebTransport App comes on the stream and a small AppUnreliable as a
    datagram; AppUnreliable is also accepted on the WebTransport stream. The
    sender gets none of its own."""
    s = start_server("--game", "relay")
    reliable = [bytes(range(251)), b"", b"\x00\xff\x87\x88"]  # 251: the 256-byte server message
    unreliable = [bytes(range(200, 256)) + bytes(range(100)), b"u"]

    async def go():
        sender = await peer_join(s, sender_transport, "relay", "sender")
        rws = await peer_join(s, "ws", "relay", "r-ws")
        rwt = await peer_join(s, "wt", "relay", "r-wt")
        assert sender.welcome["game"] == "relay"
        for p in (sender, rws, rwt):
            await p.sync(1)  # rosters read
        for payload in reliable:
            await sender.send(app_msg(payload))
        for payload in unreliable:
            await sender.send_unreliable(app_unreliable(payload))
        if sender_transport == "wt":
            await sender.send(app_unreliable(b"on-the-stream"))
            unreliable.append(b"on-the-stream")

        for r in (rws, rwt):
            apps, unrel = [], []

            async def collect():
                while len(apps) < len(reliable) or len(unrel) < len(unreliable):
                    m = await r.next(timeout=3600)
                    if m.kind == "app":
                        apps.append((m["payload"], r.channel))
                    elif m.kind == "app_unreliable":
                        unrel.append((m["payload"], r.channel))

            await asyncio.wait_for(collect(), 5)
            rel_ch = "ws" if r.transport == "ws" else "stream"
            assert apps == [(relayed(sender.id, p), rel_ch) for p in reliable], apps
            assert sorted(u[0] for u in unrel) == sorted(relayed(sender.id, p) for p in unreliable), unrel
            if r.transport == "wt":
                assert {u[1] for u in unrel} == {"datagram"}, unrel

        # The sender: a reply from r-ws goes through the room after the
        # sender's messages, so anything of its own would have come first.
        await rws.send(app_msg(b"reply"))
        seen = await sender.collect_until(lambda m: m.kind == "app"
                                          and m["payload"] == relayed(rws.id, b"reply"))
        seen += await sender.sync(2)
        own = [m for m in seen if from_id(m) == sender.id]
        assert own == [], f"the sender got its own messages back: {own}"
        for p in (sender, rws, rwt):
            await p.close()
        await assert_still_serving(s)

    run(go())
    m = s.metrics()
    assert sum(m["errors"].values()) == 0, m


@pytest.mark.parametrize("transport", BOTH)
def test_synthetic_snapshot_is_the_payload_size_and_it_echoes_app_messages(start_server, transport):
    """synthetic with payload=300: every Snapshot.payload is exactly 300
    bytes and begins with the tick (u32); App and AppUnreliable come back to
    the sender alone, same bytes, same delivery (0x87 / 0x88)."""
    s = start_server("--game", "synthetic", "--game-opt", "payload=300")

    async def go():
        p = await peer_join(s, transport, "syn", "echoer")
        bystander = await peer_join(s, "ws", "syn", "bystander")
        assert p.welcome["game"] == "synthetic"
        for _ in range(5):
            snap = await p.until(lambda m: m.kind == "snapshot")
            assert len(snap["payload"]) == 300, len(snap["payload"])
            assert struct.unpack(">I", snap["payload"][:4])[0] == snap["tick"], (
                snap["payload"][:4].hex(), snap["tick"])
            if transport == "wt":
                assert p.channel == "datagram", "a 317-byte snapshot fits a datagram"

        await p.send(app_msg(b"echo \x00\xff"))
        m = await p.until(lambda m: m.kind == "app")
        assert m["payload"] == b"echo \x00\xff"
        assert p.channel == ("ws" if transport == "ws" else "stream")
        await p.send_unreliable(app_unreliable(b"fast"))
        m = await p.until(lambda m: m.kind == "app_unreliable")
        assert m["payload"] == b"fast"
        if transport == "wt":
            assert p.channel == "datagram"

        # The bystander's own App comes back to it after anything the room
        # would have sent it for the echoer's.
        await bystander.send(app_msg(b"mine"))
        seen = await bystander.collect_until(lambda m: m.kind == "app")
        assert seen[-1]["payload"] == b"mine"
        assert [m for m in seen if m.kind in ("app", "app_unreliable")] == [seen[-1]], seen
        await p.close()
        await bystander.close()
        await assert_still_serving(s)

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


@pytest.mark.parametrize("transport", BOTH)
def test_dots_chat_reaches_everyone_with_the_senders_id(start_server, transport):
    """dots: a chat App (1–200 bytes of UTF-8) reaches every player, the
    sender included, as App = id (u32) + the text."""
    s = start_server()

    async def go():
        p = await peer_join(s, transport, "chat", "talker")
        other = await peer_join(s, "ws", "chat", "listener")
        for text in ("h\u00e9llo".encode(), b"x" * 200):
            await p.send(app_msg(text))
            for r in (p, other):
                m = await r.until(lambda m: m.kind == "app")
                assert m["payload"] == dots_chat(p.id, text)
        await p.close()
        await other.close()

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("text", [b"bad \xff\xfe utf-8", b"", b"y" * 201],
                         ids=["invalid-utf8", "empty", "201-bytes"])
def test_dots_bad_chat_is_bad_message_and_the_player_is_removed(start_server, transport, text):
    """dots refuses the chat: Error bad_message, close 4001, and the player
    is removed — the others see PlayerLeft."""
    s = start_server()

    async def go():
        watcher = await peer_join(s, "ws", "chat", "watcher")
        p = await peer_join(s, transport, "chat", "offender")
        await read_roster(p, 2)
        await p.send(app_msg(text))
        out = await p.until_closed()
        assert_refused_with(out, "bad_message")
        left = await watcher.until(lambda m: m.kind == "left", timeout=5)
        assert left["player_id"] == p.id
        await watcher.close()
        await assert_still_serving(s)

    run(go())
    assert s.error_count("bad_message") == 1


def test_latest_only_messages_too_big_for_a_datagram_come_on_the_stream(start_server):
    """§1: a Snapshot or AppUnreliable that does not fit the connection's
    datagram size is sent on the reliable stream instead (synthetic
    payload=2000; a 2000-byte AppUnreliable with --max-client-message 4096),
    and the small ones still come as datagrams; counted in /health
    (webtransport.snapshots_on_stream)."""
    s = start_server("--game", "synthetic", "--game-opt", "payload=2000",
                     "--max-client-message", "4096")

    async def go():
        p = await peer_join(s, "wt", "big", "wt")
        snap = await p.until(lambda m: m.kind == "snapshot")
        assert len(snap["payload"]) == 2000 and p.channel == "stream", (len(snap["payload"]), p.channel)
        big = bytes(range(256)) * 7 + bytes(range(208))  # 2000 bytes
        await p.send(app_unreliable(big))
        m = await p.until(lambda m: m.kind == "app_unreliable")
        assert m["payload"] == big and p.channel == "stream", p.channel
        await p.send_unreliable(app_unreliable(b"small"))
        m = await p.until(lambda m: m.kind == "app_unreliable")
        assert m["payload"] == b"small" and p.channel == "datagram", p.channel
        await p.close()

    run(go())
    m = s.metrics()
    assert m["webtransport"]["snapshots_on_stream"] > 0, m
    assert sum(m["errors"].values()) == 0, m


def test_snapshot_over_the_frame_limit_is_not_sent_and_counted(start_server):
    """§12 synthetic: the snapshot payload is `payload=N` bytes in all; with
    N = 70 000 the snapshot (70 017 bytes) cannot fit the reliable channel's
    65 535-byte frame, so (§8) it is not sent, and counted
    (snapshots_too_large); the sessions stay open."""
    s = start_server("--game", "synthetic", "--game-opt", "payload=70000")

    async def go():
        peers = [await peer_join(s, t, "huge", t) for t in BOTH]
        deadline = asyncio.get_running_loop().time() + 2  # 120 ticks
        while s.metrics()["snapshots_too_large"] == 0:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        for p in peers:
            seen = await p.sync(1)
            sizes = sorted({len(m["payload"]) for m in seen if m.kind == "snapshot"})
            assert sizes in ([], [70000]), (
                f"{p.transport}: snapshots with {sizes}-byte payloads were sent for payload=70000")
            assert not p.closed
            await p.close()

    run(go())
    m = s.metrics()
    assert m["snapshots_too_large"] > 0, m
    assert sum(m["errors"].values()) == 0, m


@pytest.mark.parametrize("kind", ["app", "app_unreliable"])
def test_relay_message_that_cannot_be_forwarded_is_not_sent_and_counted(start_server, kind):
    """§12 relay takes any bytes up to the message limit; with
    --max-client-message 65535 a 65 535-byte App / AppUnreliable is within
    it, but forwarded with the 4-byte sender id (65 539 bytes) it cannot fit
    a frame: §8 says such a game message is not sent, and counted. The
    sender is not refused, the others get nothing truncated, and a message
    that does fit (65 531 bytes forwarded as 65 535) still goes through."""
    s = start_server("--game", "relay", "--max-client-message", "65535",
                     "--ws-max-message", "70000")
    encode = app_msg if kind == "app" else app_unreliable

    async def go():
        sender = await peer_join(s, "wt", "edge", "sender")
        others = [await peer_join(s, t, "edge", f"r-{t}") for t in BOTH]
        await sender.send(encode(b"y" * 65530))  # forwarded as exactly 65 535 bytes
        for r in others:
            m = await r.until(lambda m: m.kind == kind)
            assert m["payload"] == relayed(sender.id, b"y" * 65530), len(m["payload"])
        await sender.send(encode(b"x" * 65534))  # a 65 535-byte message
        await sender.send(app_msg(b"after"))  # through the room after it

        tail = []

        async def sender_ended():
            while (m := await sender.next_or_close(timeout=3600)) is not None:
                if m.kind == "error":
                    tail.append(m)

        after = asyncio.ensure_future(others[0].until(
            lambda m: m.kind == "app" and m["payload"] == relayed(sender.id, b"after")))
        ended_task = asyncio.ensure_future(sender_ended())
        await asyncio.wait({after, ended_task}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        after.cancel()
        ended_task.cancel()
        seen, ended = await sender.sync_or_close(1)
        assert ended is None, (
            f"the sender of a 65 535-byte {kind} (within the message limit) was refused: "
            f"{tail + ended.msgs[-1:]!r}, close {ended.close_code} {ended.close_reason!r}")
        assert not [m for m in seen if m.kind == "error"], seen
        for r in others:
            seen = await r.sync(2)
            after_msg = relayed(sender.id, b"after")
            assert not [m for m in seen if m.kind == kind and m["payload"] != after_msg], \
                "a truncated forward was sent"
        for p in [sender] + others:
            await p.close()

    run(go())
    m = s.metrics()
    assert m["errors"]["bad_message"] == 0, m["errors"]
    assert m["app_messages_too_large"] > 0, m
