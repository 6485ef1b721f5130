"""HTTP streaming sessions over time (PROTOCOL.md §7, §11.4): idle and
half-open sessions, keep-alive Pongs, resume between all three transports,
`replaced`, and the server's shutdown."""

import asyncio
import time

import pytest

from rally_peers import (
    LEAVE,
    HttpSession,
    Peer,
    app_msg,
    assert_refused_with,
    assert_still_serving,
    decode,
    dots_chat,
    dots_players,
    hello,
    is_numbered,
    peer_join,
    read_roster,
    relayed,
    resume,
    run,
)

ALL3 = ("ws", "wt", "http")
IDLE = ["--idle-timeout", "2s", "--keepalive", "10s"]


async def resume_on(s, transport, token, last_seq, **kw):
    """A new session whose first message is Resume; (peer, first reply)."""
    p = Peer(s, transport, **kw)
    await p.open()
    await p.send(resume(token, last_seq))
    return p, await p.reply()


async def wait_metric(s, pred, timeout=6, what=""):
    deadline = time.monotonic() + timeout
    while True:
        m = s.metrics()
        if pred(m):
            return m
        assert time.monotonic() < deadline, f"{what}: {m}"
        await asyncio.sleep(0.1)


# -- idle ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "sse"])
def test_silent_http_session_ends_after_the_idle_timeout_and_is_kept_for_resume(start_server, mode):
    """No POST for the idle timeout (the client reads its stream of dots
    snapshots, which is not the client's traffic): the stream ends, with no
    Error (§11.4), and the player resumes over another transport."""
    s = start_server(*IDLE)

    async def go():
        p = await peer_join(s, "http", "idle", "quiet", mode=mode)
        await read_roster(p, 1)
        t0 = time.monotonic()
        out = await p.until_closed(timeout=10)
        took = time.monotonic() - t0
        assert out.errors == [], f"an idle end has no Error: {out.msgs[-3:]!r}"
        assert out.stream_end == "end", out.stream_end
        assert 1.5 <= took <= 5, f"ended after {took:.1f}s with --idle-timeout 2s"
        q, w = await resume_on(s, "ws", p.welcome["resume_token"], 1)
        assert w.kind == "welcome", f"not kept for resume: {w!r}"
        assert (w["player_id"], w["reliable_seq"]) == (p.id, 1), w
        await q.close()
        await p.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    m = s.metrics()
    assert m["errors"]["resume_failed"] == 0, m["errors"]
    print("http idle counted as idle_timeout:", m["errors"]["idle_timeout"])


def test_poll_session_lives_on_polls_and_ends_when_they_stop(start_server):
    """Poll mode: polls alone keep the session (§11.4 "no POST nor poll");
    once neither comes for the idle timeout it is closed — the next poll is
    404 — and the player resumes over WebTransport."""
    s = start_server("--game", "relay", "--idle-timeout", "1s", "--keepalive", "10s")

    async def go():
        h = HttpSession(s, mode="poll", autopoll=False)
        assert await h.open() == 200
        assert await h.send(hello("idle", "poller")) == 204
        await asyncio.sleep(0.1)
        st, msgs = await h.poll()
        assert st == 200 and [m[0] for m in msgs] == [0x81, 0x82], msgs
        w = decode(msgs[0])
        t_end = time.monotonic() + 2.0  # twice the 1 s idle timeout
        while time.monotonic() < t_end:
            st, _ = await h.poll()
            assert st == 200, f"a session that polls was closed (poll answered {st})"
            await asyncio.sleep(0.3)
        await asyncio.sleep(2.0)  # no poll, no POST
        st, msgs = await h.poll()
        assert (st, msgs) == (404, []), (st, msgs)
        await h.close()
        q, w2 = await resume_on(s, "wt", w["resume_token"], 1)
        assert w2.kind == "welcome" and w2["player_id"] == w["player_id"], w2
        await q.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


def test_half_open_http_session_is_reaped_by_the_idle_timeout(start_server):
    """relay (nothing to write) and a 10 s keep-alive: the client's TCP
    connection goes away, so only the idle timeout can notice. The session
    is reaped (sessions_active back to 0) and the player resumes over
    WebTransport."""
    s = start_server("--game", "relay", *IDLE)

    async def go():
        p = await peer_join(s, "http", "half", "gone")
        await read_roster(p, 1)
        assert s.metrics()["http"]["sessions_active"] == 1
        t0 = time.monotonic()
        p.drop()
        await wait_metric(s, lambda m: m["http"]["sessions_active"] == 0, timeout=6,
                          what="the half-open session was not reaped")
        took = time.monotonic() - t0
        assert took <= 5, took
        q, w = await resume_on(s, "wt", p.welcome["resume_token"], 1)
        assert w.kind == "welcome" and w["player_id"] == p.id, w
        await q.close()
        await p.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


def test_keepalive_pongs_with_client_time_0_arrive_on_the_stream(start_server):
    """--keepalive 1s (relay: nothing else flows once joined): on a stream
    and on an SSE stream, a Pong with client_time_us 0 about every second
    (§11.4)."""
    s = start_server("--game", "relay", "--keepalive", "1s")

    async def one(mode):
        h = HttpSession(s, mode=mode)
        assert await h.open() == 200
        assert await h.send(hello("ka", f"listener-{mode}")) == 204
        kinds, pongs = [], []
        t1 = time.monotonic()
        while time.monotonic() - t1 < 3.4:
            try:
                m = await h.recv(timeout=0.2)
            except asyncio.TimeoutError:
                continue
            kinds.append(m.kind)
            if m.kind == "pong":
                pongs.append(m)
        await h.close()
        assert kinds[:2] == ["welcome", "joined"], (mode, kinds)
        kinds = [k for k in kinds[2:] if k != "joined"]  # the other listener's arrival
        assert set(kinds) <= {"pong"}, (mode, kinds)
        assert all(p["client_time_us"] == 0 and p["server_time_us"] > 0 for p in pongs), pongs
        assert 2 <= len(pongs) <= 5, f"{mode}: {len(pongs)} keep-alive Pongs in 3.4 s (--keepalive 1s)"
        gaps = [(b["server_time_us"] - a["server_time_us"]) / 1e6 for a, b in zip(pongs, pongs[1:])]
        assert all(0.7 <= g <= 1.5 for g in gaps), (mode, gaps)

    async def go():
        await asyncio.gather(one("stream"), one("sse"))

    run(go())


# -- resume -------------------------------------------------------------------------

PAIRS = [
    (("ws", {}), ("http", {})),
    (("http", {}), ("wt", {})),
    (("wt", {}), ("http", {})),
    (("http", {"mode": "sse"}), ("http", {"mode": "poll"})),
    (("http", {"mode": "poll"}), ("ws", {})),
]


@pytest.mark.parametrize("old,new", PAIRS, ids=["ws-to-http", "http-to-wt", "wt-to-http",
                                                "sse-to-poll", "poll-to-ws"])
def test_resume_across_transports_replays_missed_events_exactly_once(start_server, old, new):
    """dots: alice reads her roster (events 1, 2), drops; bob joins (3) and
    chats (4, an App); alice resumes with last_seq 2 on another transport:
    Welcome (same player, token, reliable_seq 2), exactly bob's
    PlayerJoined and his chat, once, in order; then live events (bob's
    PlayerLeft). The observer never saw alice leave."""
    s = start_server()

    async def go():
        observer = await peer_join(s, "ws", "res", "observer")
        alice = await peer_join(s, old[0], "res", "alice", **old[1])
        roster = await read_roster(alice, 2)
        assert [m["player_id"] for m in roster] == [observer.id, alice.id]
        token, a_id = alice.welcome["resume_token"], alice.id
        alice.drop()
        await asyncio.sleep(0.2)

        bob = await peer_join(s, "ws", "res", "bob")
        await bob.send(app_msg(b"while you were away"))
        chat = dots_chat(bob.id, b"while you were away")
        await bob.until(lambda m: m.kind == "app" and m["payload"] == chat)

        again, w = await resume_on(s, new[0], token, 2, **new[1])
        assert w.kind == "welcome", w
        assert (w["player_id"], w["resume_token"], w["reliable_seq"], w["client_seq"]) == (
            a_id, token, 2, 0), w
        assert len(w["app"]) == 12, "dots welcome bytes again"
        replay = await again.sync(7)
        evs = [m for m in replay if is_numbered(m)]
        assert [(m.kind, m.f.get("player_id"), m.f.get("payload")) for m in evs] == [
            ("joined", bob.id, None), ("app", None, chat)], evs
        await bob.send(LEAVE)
        live = await again.until(is_numbered)
        assert (live.kind, live["player_id"]) == ("left", bob.id)
        snap = await again.until(lambda m: m.kind == "snapshot" and a_id in dots_players(m["payload"]))
        assert snap
        seen = await observer.sync(8)
        assert ("left", a_id) not in [(m.kind, m.f.get("player_id")) for m in seen], seen
        for p in (again, bob, observer, alice):
            await p.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.metrics()["errors"]["resume_failed"] == 0


def test_http_apps_are_numbered_for_resume(start_server):
    """relay: an HTTP player's two Apps reach the other player; after a
    drop, Resume over WebSocket says client_seq 2; re-sending App #2 is not
    delivered again, App #3 is (§7.2)."""
    s = start_server("--game", "relay")

    async def go():
        other = await peer_join(s, "wt", "apps", "other")
        a = await peer_join(s, "http", "apps", "sender")
        for b in (b"first", b"second"):
            await a.send(app_msg(b))
            m = await other.until(lambda m: m.kind == "app")
            assert m["payload"] == relayed(a.id, b)
        a.drop()
        await asyncio.sleep(0.2)
        q, w = await resume_on(s, "ws", a.welcome["resume_token"], 1)
        assert w.kind == "welcome" and w["client_seq"] == 2, w
        await q.send(app_msg(b"third"))
        m = await other.until(lambda m: m.kind == "app")
        assert m["payload"] == relayed(a.id, b"third"), m
        await other.sync(3)
        for p in (q, other, a):
            await p.close()

    run(go())


@pytest.mark.parametrize("mode", ["stream", "sse", "poll"])
def test_resume_while_the_http_session_is_open_replaces_it(start_server, mode):
    s = start_server()

    async def go():
        a = await peer_join(s, "http", "rep", "alice", mode=mode)
        await read_roster(a, 1)
        q, w = await resume_on(s, "wt", a.welcome["resume_token"], 1)
        assert w.kind == "welcome" and w["player_id"] == a.id, w
        out = await a.until_closed(5)
        if mode == "poll":
            assert out.stream_end == "404", out.stream_end
            out.stream_end = "end"
        assert_refused_with(out, "replaced")
        await q.sync(1)
        await q.close()
        await a.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    assert s.error_count("replaced") == 1


# -- shutdown --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "sse", "poll"])
def test_sigterm_sends_shutting_down_and_ends_http_sessions(start_server, mode):
    """SIGTERM: an HTTP session gets Error shutting_down as its last message
    (§6), then its stream ends (stream, sse); in poll mode the Error is the
    last message polled (§11.4). A WebSocket player alongside gets its
    Error too."""
    s = start_server()

    async def go():
        p = await peer_join(s, "http", "bye", f"p-{mode}", mode=mode)
        ws = await peer_join(s, "ws", "bye", "ws")
        await read_roster(p, 1)
        s.terminate()
        out = await p.until_closed(8)
        wout = await ws.until_closed(8)
        await p.close()
        await asyncio.get_running_loop().run_in_executor(None, lambda: s.proc.wait(10))
        assert wout.errors == [10], wout.msgs[-3:]
        h = p.http
        assert out.errors == [10] and out.msgs[-1].kind == "error", (
            f"{mode}: no Error shutting_down last; the last messages {out.msgs[-2:]!r}, "
            f"then {h.end_kind} {h.end_detail} (polls: {h.polls[-3:]})")
        if mode == "poll":
            # After the Error a poll is 404 — or finds the server gone.
            assert out.stream_end in ("404", "reset"), out.stream_end
        else:
            assert out.stream_end == "end", (out.stream_end, h.end_detail)

    run(go())
