"""Resume (PROTOCOL.md §7) across third-party peers: numbered events
(PlayerJoined, PlayerLeft, App 0x87), the roster after Welcome, last_seq
beyond what the server numbered, versions, and a `websockets` player that
drops abruptly and comes back over aioquic WebTransport."""

import asyncio

import pytest

from rally_peers import (
    LEAVE,
    Peer,
    WtClient,
    app_msg,
    assert_refused_with,
    assert_still_serving,
    dots_players,
    hello,
    is_numbered,
    misbehave,
    peer_join,
    ping,
    read_roster,
    relayed,
    resume,
    run,
    ws_join,
    ws_recv_until,
    ws_until_closed,
)

BOTH = ["ws", "wt"]


def is_event(m):
    return is_numbered(m)


async def resume_on(s, transport, token, last_seq):
    """A new session whose first message is Resume; returns (peer, first reply)."""
    p = Peer(s, transport)
    await p.open()
    await p.send(resume(token, last_seq))
    first = await p.reply()
    if first.kind == "welcome":
        p.welcome = first
    return p, first


def test_websocket_player_resumes_over_webtransport_with_exactly_the_missed_events(start_server):
    s = start_server()
    room = "resume"

    async def go():
        observer, ow = await ws_join(s.ws_url, room, "observer")
        alice, aw = await ws_join(s.ws_url, room, "alice")
        a_id, token = aw["player_id"], aw["resume_token"]
        assert aw["reliable_seq"] == 0 and aw["client_seq"] == 0 and len(token) == 16
        assert aw["resume_window_ms"] == 10_000
        # Roster after Welcome: observer then alice → events 1 and 2.
        seen = [await ws_recv_until(alice, is_event) for _ in range(2)]
        assert [(m.kind, m["player_id"]) for m in seen] == [
            ("joined", ow["player_id"]), ("joined", a_id)]
        last_seq = aw["reliable_seq"] + len(seen)
        # Abrupt drop: TCP gone, no closing handshake, no Leave.
        alice.transport.abort()

        # While alice is away, bob joins (event 3 for alice).
        bob, bw = await ws_join(s.ws_url, room, "bob")

        async with WtClient(s) as c:
            assert await c.connect() == 200
            c.open_stream()
            c.send(resume(token, last_seq))
            w = await c.recv()
            assert w.kind == "welcome", w
            assert w["player_id"] == a_id, "same player back"
            assert w["resume_token"] == token
            assert w["reliable_seq"] == last_seq
            assert w["client_seq"] == 0
            assert w["game"] == "dots" and len(w["app"]) == 12, "the game's welcome bytes again"
            missed = await c.recv_until(is_event)
            assert (missed.kind, missed["player_id"], missed["name"]) == ("joined", bw["player_id"], "bob")
            # Exactly once: nothing else reliable until a live event.
            c.send(ping(5))
            between = []
            while True:
                m = await c.recv()
                if m.kind == "pong":
                    break
                if is_event(m):
                    between.append(m)
            assert between == [], f"replayed more than the missed event: {between}"
            await bob.send(LEAVE)  # bob leaves: a live event, seq last_seq + 2
            bob_out = await ws_until_closed(bob)
            assert (bob_out.close_code, bob_out.close_reason) == (1000, "bye")
            live = await c.recv_until(is_event)
            assert (live.kind, live["player_id"]) == ("left", bw["player_id"])

            # The resumed player is in the room's snapshots (datagrams).
            await c.datagram_until(lambda m: m.kind == "snapshot"
                                   and a_id in dots_players(m["payload"]))

        # The observer never saw alice leave while she was away.
        evs = []
        try:
            while True:
                evs.append(await ws_recv_until(observer, is_event, timeout=0.3))
        except asyncio.TimeoutError:
            pass
        assert ("left", a_id) not in [(m.kind, m["player_id"]) for m in evs], evs
        await observer.close()

    run(go())
    assert s.metrics()["errors"]["resume_failed"] == 0


@pytest.mark.parametrize("transport", BOTH)
def test_unknown_resume_token_is_resume_failed_and_not_fatal(start_server, transport):
    s = start_server()

    async def go():
        p, err = await resume_on(s, transport, bytes(range(16)), 0)
        assert err.kind == "error" and err["code"] == 16, err
        await p.send(hello("r", "fresh"))
        w = await p.until(lambda m: m.kind == "welcome")
        assert w["reliable_seq"] == 0 and w["client_seq"] == 0, w
        await p.sync(1)
        assert not p.closed
        await p.close()

    run(go())
    assert s.error_count("resume_failed") == 1


@pytest.mark.parametrize("transport", BOTH)
@pytest.mark.parametrize("version", [0, 1, 3, 9])
def test_resume_with_wrong_version_is_unsupported_version(start_server, transport, version):
    """§4 Resume: any version but 2 is unsupported_version, fatal like Hello;
    a version-1 Resume (same layout) gets that and nothing else, even with a
    live player's token."""
    s = start_server()

    async def go():
        holder = await peer_join(s, "ws", "v", "holder")
        token = holder.welcome["resume_token"]
        out = await misbehave(s, transport, send_hello=False,
                              reliable=[resume(token, 0, version=version)])
        assert_refused_with(out, "unsupported_version", only=True)
        # The player the token names was not touched.
        await holder.sync(2)
        assert not holder.closed
        await holder.close()
        await assert_still_serving(s)

    run(go())
    m = s.metrics()
    assert m["errors"]["unsupported_version"] == 1, m
    assert m["errors"]["replaced"] == 0, m


@pytest.mark.parametrize("transport", BOTH)
def test_roster_is_numbered_and_resume_at_its_end_replays_nothing(start_server, transport):
    """§5/§7.1: the PlayerJoined roster after a fresh Welcome is numbered
    1..N; a client that read Welcome + N PlayerJoined resumes with
    last_seq = N and gets Welcome(reliable_seq = N) and nothing replayed."""
    s = start_server()

    async def go():
        others = [await peer_join(s, "ws", "roster", f"o{i}") for i in range(2)]
        p = await peer_join(s, transport, "roster", "me")
        roster = await read_roster(p, 3)
        assert [m["player_id"] for m in roster] == [o.id for o in others] + [p.id]
        token, me = p.welcome["resume_token"], p.id
        p.drop()

        q, w = await resume_on(s, transport, token, 3)
        assert w.kind == "welcome", w
        assert (w["player_id"], w["resume_token"], w["reliable_seq"]) == (me, token, 3)
        replayed = await q.sync(7)
        assert [m for m in replayed if is_event(m)] == [], f"replayed: {replayed}"
        # Live numbering goes on: a newcomer is the next event.
        newcomer = await peer_join(s, "ws", "roster", "late")
        m = await q.until(is_event)
        assert (m.kind, m["player_id"]) == ("joined", newcomer.id)
        for x in others + [newcomer, q]:
            await x.close()

    run(go())
    m = s.metrics()
    assert m["errors"]["resume_failed"] == 0, m


@pytest.mark.parametrize("transport", BOTH)
def test_resume_with_last_seq_beyond_what_was_numbered_is_resume_failed(start_server, transport):
    """§7.1: a last_seq beyond the last event numbered for the player is
    resume_failed (not fatal) and the reason says so (not "unknown or
    expired token"); Hello then joins afresh on the same session."""
    s = start_server()

    async def go():
        other = await peer_join(s, "ws", "beyond", "other")
        p = await peer_join(s, transport, "beyond", "me")
        await read_roster(p, 2)  # events 1 and 2: nothing else numbered
        token, me = p.welcome["resume_token"], p.id
        p.drop()

        q, err = await resume_on(s, transport, token, 3)
        assert err.kind == "error" and err["code"] == 16, err
        reason = err["reason"].lower()
        assert "beyond" in reason, f"reason should say last_seq is beyond: {err['reason']!r}"
        assert "unknown" not in reason and "expired" not in reason, err["reason"]
        await q.send(hello("beyond", "again"))
        w = await q.until(lambda m: m.kind == "welcome")
        assert w["player_id"] not in (0, me) and w["reliable_seq"] == 0, w
        await q.sync(3)
        assert not q.closed
        await q.close()
        await other.close()
        await assert_still_serving(s)

    run(go())
    assert s.error_count("resume_failed") == 1


@pytest.mark.parametrize("transport", BOTH)
def test_app_events_are_numbered_and_replayed_exactly_once(start_server, transport):
    """relay (§12): App (0x87) events are numbered like PlayerJoined (§7.1).
    alice: 1 PlayerJoined(alice), 2 PlayerJoined(bob), 3–5 bob's Apps a, b,
    c. She drops having read all five, bob sends d, and a Resume with
    last_seq 4 replays exactly c and d, once, in order. Welcome.client_seq
    counts the Apps of hers the game received (§7.2)."""
    s = start_server("--game", "relay")

    async def go():
        alice = await peer_join(s, transport, "apps", "alice")
        bob = await peer_join(s, "ws", "apps", "bob")
        for text in (b"mine-1", b"mine-2"):
            await alice.send(app_msg(text))
        for text in (b"mine-1", b"mine-2"):
            m = await bob.until(lambda m: m.kind == "app")
            assert m["payload"] == relayed(alice.id, text)
        for text in (b"a", b"b", b"c"):
            await bob.send(app_msg(text))
        evs = []
        while len(evs) < 5:
            evs.append(await alice.until(is_event))
        assert [(m.kind, m.f.get("player_id"), m.f.get("payload")) for m in evs] == [
            ("joined", alice.id, None), ("joined", bob.id, None),
            ("app", None, relayed(bob.id, b"a")), ("app", None, relayed(bob.id, b"b")),
            ("app", None, relayed(bob.id, b"c"))], evs
        token, me = alice.welcome["resume_token"], alice.id
        alice.drop()
        await bob.send(app_msg(b"d"))
        await bob.sync(1)

        q, w = await resume_on(s, transport, token, 4)
        assert w.kind == "welcome", w
        assert (w["player_id"], w["reliable_seq"], w["client_seq"]) == (me, 4, 2), w
        replayed = [m for m in await q.sync(9) if is_event(m)]
        assert [m["payload"] for m in replayed] == [relayed(bob.id, b"c"), relayed(bob.id, b"d")], replayed
        # Her own Apps are never sent back to her.
        assert all(m.kind != "app" or m["payload"][:4] != me.to_bytes(4, "big") for m in replayed)
        await q.close()
        await bob.close()
        await assert_still_serving(s)

    run(go())
    assert s.error_count("resume_failed") == 0


@pytest.mark.parametrize("old,new", [("ws", "wt"), ("wt", "ws")])
def test_resume_while_the_old_session_is_open_replaces_it(start_server, old, new):
    """§7.1: if the old session is still open on the server, it is closed
    with `replaced` (Error 17, close 4017); the new one carries on."""
    s = start_server()

    async def go():
        p = await peer_join(s, old, "swap", "twin")
        await read_roster(p, 1)
        q, w = await resume_on(s, new, p.welcome["resume_token"], 1)
        assert w.kind == "welcome" and w["player_id"] == p.id, w
        assert_refused_with(await p.until_closed(), "replaced")
        await q.sync(1)
        assert not q.closed
        await q.close()
        await assert_still_serving(s)

    run(go())
    assert s.error_count("replaced") == 1


def test_resume_after_more_missed_events_than_are_kept_is_resume_failed(start_server):
    """§7.1: the server keeps the room's last (max players per room + 64)
    broadcast events; with --max-players-per-room 2 that is 66. A dots
    player away for 70 chat messages (each an App to every player) cannot be
    resumed: resume_failed, the reason says the events are no longer kept,
    and Hello then joins afresh."""
    s = start_server("--max-players-per-room", "2")

    async def go():
        away = await peer_join(s, "ws", "lost", "away")
        await read_roster(away, 1)
        token = away.welcome["resume_token"]
        away.drop()
        talker = await peer_join(s, "wt", "lost", "talker")
        for i in range(70):
            await talker.send(app_msg(f"chat {i}".encode()))
        await talker.until(lambda m: m.kind == "app" and m["payload"].endswith(b"chat 69"))

        q, err = await resume_on(s, "ws", token, 1)
        assert err.kind == "error" and err["code"] == 16, err
        reason = err["reason"].lower()
        assert "beyond" not in reason and "unknown" not in reason, err["reason"]
        await q.send(hello("lost2", "back"))
        w = await q.until(lambda m: m.kind == "welcome")
        assert w["reliable_seq"] == 0
        print("resume_failed reason:", err["reason"])
        await q.close()
        await talker.close()
        await assert_still_serving(s)

    run(go())
    assert s.error_count("resume_failed") == 1
