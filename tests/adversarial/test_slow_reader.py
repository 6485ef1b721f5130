"""A WebSocket peer that joins a busy room and stops reading (PROTOCOL.md §8
"slow peer"): closed as too_slow, server memory bounded, others unaffected."""

import asyncio
import socket
import subprocess
import time

from rally_peers import RALLY_BIN, WtClient, decode, hello, run, ws_open


def test_a_websocket_that_stops_reading_is_too_slow_and_memory_stays_bounded(start_server):
    s = start_server("--max-players-per-room", "200", "--max-connections-per-ip", "300",
                     "--slow-peer-timeout", "1s", "--tcp-send-buffer", "8192")
    room = "busy"
    bots = subprocess.Popen(
        [RALLY_BIN, "bot", "--url", s.http, "--transport", "ws", "--room", room,
         "--bots", "80", "--duration", "8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={"RALLY_LOG": "error", "PATH": "/usr/bin:/bin"},
    )
    try:
        run(slow_reader(s, room), timeout=45)
    finally:
        if bots.poll() is None:
            bots.kill()
        bots.wait()


async def slow_reader(s, room):
    # The room fills with 80 reading bots (~1 KB snapshots, 60 per second).
    deadline = time.monotonic() + 15
    while s.metrics()["websocket"]["sessions_active"] < 80:
        assert time.monotonic() < deadline, s.metrics()["websocket"]
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

        async def crowded_snapshot():
            while True:
                m = decode(await c.datagrams.get())
                if m.kind == "snapshot" and len(m["ids"]) >= 80:
                    return m

        snap = await asyncio.wait_for(crowded_snapshot(), 5)
        assert w["player_id"] in snap["ids"]

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
