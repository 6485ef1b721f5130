"""A WebSocket peer that joins a busy room and stops reading (PROTOCOL.md §8
"slow peer"): closed as too_slow, server memory bounded, others unaffected."""

import asyncio
import base64
import os
import socket
import time

from rally_peers import WtClient, dots_players, hello, run, ws_open

CROWD = 80


async def raw_ws_player(port: int, room: str, name: str, stop: asyncio.Event) -> None:
    """A minimal RFC 6455 client on a bare socket: upgrade, one masked binary
    frame carrying Hello, then it reads (and discards) everything until told
    to stop. Cheap enough to run 80 of them beside the server on 2 cores."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /rally HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = hello(room, name)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x82, 0x80 | len(payload)]) + mask + masked)
    try:
        while not stop.is_set():
            if not await reader.read(1 << 16):
                break
    finally:
        writer.close()


def test_a_websocket_that_stops_reading_is_too_slow_and_memory_stays_bounded(start_server):
    s = start_server("--max-players-per-room", "200", "--max-connections-per-ip", "300",
                     "--slow-peer-timeout", "1s", "--tcp-send-buffer", "8192")
    run(slow_reader(s, "busy"), timeout=45)


async def slow_reader(s, room):
    # The room fills with 80 reading players (~1 KB snapshots, 60 per second).
    stop = asyncio.Event()
    crowd = [asyncio.create_task(raw_ws_player(s.port, room, f"bot{i}", stop)) for i in range(CROWD)]
    try:
        deadline = time.monotonic() + 15
        while s.metrics()["websocket"]["sessions_active"] < CROWD:
            assert time.monotonic() < deadline, s.metrics()["websocket"]
            for t in crowd:
                if t.done():
                    t.result()  # a crowd player failed: show why
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        rss_before = s.rss_kib()

        # The slow peer: a 4 KiB receive buffer, and a websockets client whose
        # own queue is one message deep, so it stops reading the socket as soon
        # as the application stops calling recv() — which it never does.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", s.port))
        slow = await ws_open(s.ws_url, sock=sock, max_queue=1)
        await slow.send(hello(room, "slowpoke"))

        # too_slow shows in /health within a few seconds.
        t0 = time.monotonic()
        while s.error_count("too_slow") < 1:
            assert time.monotonic() - t0 < 8, s.metrics()
            await asyncio.sleep(0.2)
        took = time.monotonic() - t0
        rss_after = s.rss_kib()
        assert rss_after < rss_before + 16 * 1024, f"RSS {rss_before} KiB -> {rss_after} KiB"

        # The room is still live for others: a WebTransport watcher joins and
        # gets snapshots with the crowd in them.
        async with WtClient(s) as c:
            w = await c.join(room, "watcher")
            snap = await c.datagram_until(
                lambda m: m.kind == "snapshot" and len(dots_players(m["payload"])) >= CROWD, 5)
            assert w["player_id"] in dots_players(snap["payload"])
        assert not any(t.done() for t in crowd), "a reading player was disconnected"
        assert s.error_count("too_slow") == 1, s.metrics()["errors"]
    finally:
        stop.set()
        for t in crowd:
            t.cancel()
        await asyncio.gather(*crowd, return_exceptions=True)

    # Draining the slow peer now: whatever it gets ends in a close, and a
    # close frame, if it made it into the buffer, says too_slow.
    async def drain():
        try:
            while True:
                await slow.recv()
        except Exception:
            pass

    await asyncio.wait_for(drain(), 10)
    if slow.close_code not in (None, 1006):
        assert (slow.close_code, slow.close_reason) == (4009, "too_slow")
    assert s.alive()
    print(f"too_slow after {took:.1f}s; RSS {rss_before} -> {rss_after} KiB")
