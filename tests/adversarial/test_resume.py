"""Resume (PROTOCOL.md §7.1) across third-party peers: a `websockets` player
drops abruptly, an aioquic WebTransport session resumes it."""

import asyncio

import pytest

from rally_peers import (
    LEAVE,
    WtClient,
    decode,
    hello,
    ping,
    resume,
    run,
    ws_join,
    ws_open,
    ws_recv_until,
    ws_until_closed,
)


def is_event(m):
    return m.kind in ("joined", "left")


def test_websocket_player_resumes_over_webtransport_with_exactly_the_missed_events(start_server):
    s = start_server()
    room = "resume"

    async def go():
        observer, ow = await ws_join(s.ws_url, room, "observer")
        alice, aw = await ws_join(s.ws_url, room, "alice")
        a_id, token = aw["player_id"], aw["resume_token"]
        assert aw["reliable_seq"] == 0 and len(token) == 16
        assert aw["resume_window_ms"] == 10_000
        # Roster after Welcome: observer then alice → events 1 and 2.
        seen = [await ws_recv_until(alice, is_event) for _ in range(2)]
        assert [(m.kind, m["player_id"]) for m in seen] == [
            ("joined", ow["player_id"]), ("joined", a_id)]
        last_seq = aw["reliable_seq"] + len(seen)
        # Abrupt drop: TCP gone, no closing handshake, no Leave.
        alice.transport.abort()
        await asyncio.sleep(0.3)

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
            async def snap_with_alice():
                while True:
                    m = decode(await c.datagrams.get())
                    if m.kind == "snapshot" and a_id in m["ids"]:
                        return m

            await asyncio.wait_for(snap_with_alice(), 5)

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


@pytest.mark.parametrize("transport", ["ws", "wt"])
def test_unknown_resume_token_is_resume_failed_and_not_fatal(start_server, transport):
    s = start_server()

    async def go():
        bogus = resume(bytes(range(16)), 0)
        if transport == "ws":
            ws = await ws_open(s.ws_url)
            await ws.send(bogus)
            err = decode(await ws.recv())
            await ws.send(hello("r", "fresh"))
            w = decode(await ws.recv())
            await ws.close()
        else:
            async with WtClient(s) as c:
                assert await c.connect() == 200
                c.open_stream()
                c.send(bogus)
                err = await c.recv()
                c.send(hello("r", "fresh"))
                w = await c.recv()
                assert c.proto.terminated is None
        assert err.kind == "error" and err["code"] == 16, err
        assert w.kind == "welcome" and w["reliable_seq"] == 0, w

    run(go())
    assert s.error_count("resume_failed") == 1


def test_resume_with_wrong_version_is_unsupported_version(start_server):
    from rally_peers import assert_refused_with

    s = start_server()

    async def go():
        ws = await ws_open(s.ws_url)
        await ws.send(resume(bytes(16), 0, version=9))
        assert_refused_with(await ws_until_closed(ws), "unsupported_version")

    run(go())
