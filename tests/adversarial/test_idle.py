"""Idle connections (PROTOCOL.md §6, §8 `--idle-timeout`): with a short idle
timeout and a keep-alive longer than it, a client that sends nothing is
closed — WebSocket with a close frame 4019 `idle_timeout` and no Error,
WebTransport by QUIC's idle timeout (no CONNECTION_CLOSE at all) — and the
player is kept for resume."""

import asyncio
import time

from rally_peers import Peer, WtClient, peer_join, read_roster, resume, run

IDLE = ["--idle-timeout", "2s", "--keepalive", "10s"]


async def resume_same_player(s, transport, token, player_id, last_seq):
    q = Peer(s, transport)
    await q.open()
    await q.send(resume(token, last_seq))
    w = await q.reply()
    assert w.kind == "welcome", f"player not kept for resume: {w!r}"
    assert (w["player_id"], w["reliable_seq"]) == (player_id, last_seq), w
    await q.close()


def test_silent_websocket_is_closed_4019_idle_timeout_and_kept_for_resume(start_server):
    s = start_server(*IDLE)

    async def go():
        p = await peer_join(s, "ws", "idle", "quiet")
        await read_roster(p, 1)
        t0 = time.monotonic()
        out = await p.until_closed(timeout=10)  # reads snapshots, sends nothing
        took = time.monotonic() - t0
        assert out.errors == [], f"idle_timeout is close only, got {out.msgs!r}"
        assert (out.close_code, out.close_reason) == (4019, "idle_timeout"), (
            out.close_code, out.close_reason)
        assert 1.5 <= took <= 5, f"closed after {took:.1f}s with --idle-timeout 2s"
        await resume_same_player(s, "ws", p.welcome["resume_token"], p.id, 1)

    run(go())
    m = s.metrics()
    assert m["errors"]["idle_timeout"] == 1, m
    assert m["errors"]["resume_failed"] == 0, m


def test_silent_webtransport_ends_by_quic_idle_timeout_and_is_kept_for_resume(start_server):
    """relay: no snapshots, so once joined nothing flows either way (a dots
    player would keep the connection alive by acknowledging its snapshot
    datagrams). The server sends no Error and no CONNECTION_CLOSE; its
    session ends (sessions_active drops to 0); the player resumes."""
    s = start_server("--game", "relay", *IDLE)

    async def go():
        c = WtClient(s, idle_timeout=60)
        await c.__aenter__()
        try:
            w = await c.join("idle", "quiet")
            t0 = time.monotonic()
            out, t = await c.until_closed(timeout=10)
            took = time.monotonic() - t0
            assert [m.kind for m in out.msgs] == ["joined"], out.msgs  # the roster, no Error
            assert out.close_frame is None, (
                f"the server sent a CONNECTION_CLOSE (frame {out.close_frame:#x}, code "
                f"{t.error_code}, {t.reason_phrase!r}); QUIC's idle timeout sends none")
            assert 1.5 <= took <= 5, f"ended after {took:.1f}s with --idle-timeout 2s"
        finally:
            await c.__aexit__(None, None, None)
        deadline = time.monotonic() + 5
        while s.metrics()["webtransport"]["sessions_active"] != 0:
            assert time.monotonic() < deadline, s.metrics()["webtransport"]
            await asyncio.sleep(0.1)
        await resume_same_player(s, "wt", w["resume_token"], w["player_id"], 1)

    run(go())
    m = s.metrics()
    assert m["errors"]["resume_failed"] == 0, m
    print("webtransport idle counted as idle_timeout:", m["errors"]["idle_timeout"])
