"""HTTP streaming slow readers (PROTOCOL.md §8 slow peer, §11.3 what waits
for a reader: 64 KiB, at most 16 latest-only messages, newest wins,
reliable ones never dropped): synthetic snapshots of 2000 bytes (120 KB/s
at 60 Hz) against a stream that is never read (a bare socket with a 4 KiB
receive buffer) and a poll session that stops polling; relayed Apps
against a poller that pauses."""

import asyncio
import socket
import time

import pytest

from rally_peers import (
    HttpSession,
    app_msg,
    assert_still_serving,
    decode,
    frame,
    hello,
    http_client,
    peer_join,
    ping,
    relayed,
    run,
    split_frames,
)

ALL3 = ("ws", "wt", "http")
SYNTH = ["--game", "synthetic", "--game-opt", "payload=2000"]


@pytest.mark.parametrize("payload,bound", [(2000, "count"), (6000, "bytes")])
def test_slow_poller_keeps_the_newest_snapshots_within_64_KiB(start_server, payload, bound):
    """§11.3: no poll for 2 s (≈120 snapshots made for it): the next poll
    brings Welcome and the roster (reliable, kept) and then the newest
    snapshots, as many as the rule keeps — 16 latest-only messages at most
    (2000-byte snapshots), or as many as fit in 64 KiB with the frames
    (6000-byte snapshots: one more would not fit) —, in order, the newest
    recent, the older ones skipped; and the session goes on."""
    s = start_server("--game", "synthetic", "--game-opt", f"payload={payload}")

    async def go():
        h = HttpSession(s, mode="poll", autopoll=False)
        assert await h.open() == 200
        assert await h.send(hello("slowpoll", "p")) == 204
        await asyncio.sleep(2.0)
        st, msgs = await h.poll()
        assert st == 200
        kinds = [m[0] for m in msgs]
        assert kinds[:2] == [0x81, 0x82], [hex(k) for k in kinds[:4]]
        assert set(kinds[2:]) == {0x84}, [hex(k) for k in kinds]
        w = decode(msgs[0])
        snaps = msgs[2:]
        size = sum(2 + len(m) for m in msgs)  # each counted as its frame
        ticks = [decode(m)["tick"] for m in snaps]
        assert ticks == sorted(set(ticks)), ticks
        assert ticks[-1] >= w["tick"] + 100, f"the newest snapshot is old: {ticks[-1]} (joined at {w['tick']})"
        assert size <= 64 * 1024, f"{len(msgs)} messages, {size} bytes in one poll"
        if bound == "count":
            assert len(snaps) == 16, f"{len(snaps)} snapshots waited ({size} bytes), want 16"
        else:
            assert len(snaps) < 16 and size + 2 + len(snaps[-1]) > 64 * 1024, (
                f"{len(snaps)} snapshots ({size} bytes): another would have fit in 64 KiB")
        m = s.metrics()
        assert m["http"]["snapshots_skipped"] >= 100 - len(snaps), m["http"]
        # and it goes on
        st, more = await h.poll(wait=True, timeout=5)
        assert st == 200 and more, (st, more)
        assert decode(more[0])["tick"] > ticks[-1]
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


def test_slow_poller_gets_every_reliable_message_the_server_waits(start_server):
    """§11.3: reliable messages are never dropped. 100 relayed Apps of 1000
    bytes (≈100 KB, more than the 64 KiB that may wait) sent to a poller
    that does not poll for 1 s: the first poll holds at most 64 KiB, and
    the next polls bring the rest — every App once, in order, intact; the
    server waited for the poller (no too_slow: it polled within 5 s)."""
    s = start_server("--game", "relay", "--max-client-message", "2048")

    async def go():
        h = HttpSession(s, mode="poll", autopoll=False)
        assert await h.open() == 200
        assert await h.send(hello("reliable", "poller")) == 204
        st, first = await h.poll(wait=True, timeout=5)
        me = decode(first[0])["player_id"]
        sender = await peer_join(s, "ws", "reliable", "sender")
        sent = [bytes([i]) * 1000 for i in range(100)]
        for p in sent:
            await sender.send(app_msg(p))
        await asyncio.sleep(1.0)
        got, sizes = [], []
        t0 = time.monotonic()
        while len(got) < len(sent) and time.monotonic() - t0 < 10:
            st, msgs = await h.poll(wait=True, timeout=5)
            assert st == 200, st
            sizes.append(sum(2 + len(m) for m in msgs))
            got += [decode(m)["payload"] for m in msgs if m[0] == 0x87]
        assert sizes[0] <= 64 * 1024, sizes
        want = [relayed(sender.welcome["player_id"], p) for p in sent]
        assert got == want, f"{len(got)} of {len(want)} Apps, in order: {got == want[:len(got)]}"
        assert me != sender.welcome["player_id"]
        assert s.error_count("too_slow") == 0
        await sender.close()
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


def test_stream_never_read_and_poller_that_stops_are_too_slow(start_server):
    """A stream nobody reads (the kernel buffers fill, the connection
    accepts nothing for 5 s) and a poll session that stops polling (its
    POSTs go on, so it is not idle) are both closed with too_slow: the
    stream's body ends with Error too_slow; the poller's last message polled
    is that Error, then a poll is 404. A reading HTTP player goes on getting
    snapshots, and the server's memory stays bounded."""
    s = start_server(*SYNTH)

    async def slow_stream():
        sk = socket.socket()
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sk.connect(("127.0.0.1", s.port))
        sk.sendall(f"GET /rally/http HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode())
        sk.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sk.recv(1)
        sid = head.split(b"rally-session: ")[1][:32].decode()
        async with http_client(s) as c:
            r = await c.post(f"{s.http}/rally/http/{sid}?seq=1", content=frame(hello("slow", "s")))
            assert r.status_code == 204
        return sk

    def read_all(sk) -> bytes:
        sk.settimeout(2)
        data = b""
        while not data.endswith(b"\r\n0\r\n\r\n"):
            try:
                d = sk.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            data += d
        return data

    async def go():
        rss0 = s.rss_kib()
        sk = await slow_stream()
        poller = HttpSession(s, mode="poll", autopoll=False)
        assert await poller.open() == 200
        assert await poller.send(hello("slow", "poller")) == 204
        good = await peer_join(s, "http", "slow", "reader")
        t0 = time.monotonic()
        last_tick = 0
        while s.error_count("too_slow") < 2:
            assert time.monotonic() - t0 < 12, s.metrics()
            snap = await good.until(lambda m: m.kind == "snapshot")
            assert snap["tick"] > last_tick
            last_tick = snap["tick"]
            if poller.seq < 200 and time.monotonic() - t0 > 0.5 * poller.seq:
                await poller.send(ping(poller.seq))  # not idle, just not polling
        grew = s.rss_kib() - rss0
        # The stream: whole chunks, ending with Error too_slow and the last chunk.
        data = await asyncio.get_running_loop().run_in_executor(None, read_all, sk)
        sk.close()
        assert data.endswith(b"\r\n0\r\n\r\n"), (
            f"the never-read stream did not end (after {len(data)} bytes): ...{data[-120:]!r}")
        rest = data  # the body's chunks (the headers were read before)
        body, i = b"", 0
        while True:
            j = rest.index(b"\r\n", i)
            n = int(rest[i:j], 16)
            if n == 0:
                break
            body += rest[j + 2 : j + 2 + n]
            i = j + 2 + n + 2
        msgs, left = split_frames(body)
        assert left == b""
        last = decode(msgs[-1])
        assert (last.kind, last.f.get("code")) == ("error", 9), last
        # The poller: polls until 404; the last message polled is the Error.
        polled = []
        for _ in range(10):
            st, got = await poller.poll()
            if st == 404:
                break
            polled += got
        assert st == 404, "the too_slow poller's session is still there"
        last = decode(polled[-1])
        assert (last.kind, last.f.get("code")) == ("error", 9), last
        await poller.close()
        await good.close()
        assert grew < 16 * 1024, f"server RSS grew {grew} KiB"
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("too_slow") == 2
