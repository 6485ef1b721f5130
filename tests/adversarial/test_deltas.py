"""Snapshot deltas (PROTOCOL.md §4 InputAck, §5 SnapshotDelta, §5.1, §5.2),
seen by third-party clients written from the document: Python websockets,
aioquic WebTransport and HTTP streaming. A client that sends InputAck gets
deltas, made whole with the codec written here from §5.2, equal byte for
byte to what a client sending plain Input gets for the same tick; the
baseline is one the client has; malformed InputAcks are refused."""

import asyncio

import pytest

from rally_peers import (
    apply_delta,
    assert_refused_with,
    assert_still_serving,
    input_ack,
    input_msg,
    misbehave,
    peer_join,
    run,
)


async def collect(p, ack: bool, seconds: float, buttons: int, bases=None):
    """Plays for `seconds`, an input each 16 ms; returns {tick: payload} of
    every snapshot made whole, and the number of deltas. `bases` collects
    (base_tick, tick of the snapshot received before) for each delta."""
    states: dict[int, bytes] = {}
    deltas = 0
    seq = 0
    last_tick = None

    async def send():
        nonlocal seq
        while True:
            seq += 1
            b = buttons if (seq // 15) % 2 else 0
            newest = max(states) if states else 0
            msg = input_ack(newest, seq, [b]) if ack else input_msg(seq, [b])
            await p.send_unreliable(msg)
            await asyncio.sleep(0.016)

    sender = asyncio.create_task(send())
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            try:
                m = await p.until(lambda m: m.kind in ("snapshot", "snapshot_delta"),
                                  end - loop.time())
            except asyncio.TimeoutError:
                break
            before, last_tick = last_tick, m["tick"]
            if m.kind == "snapshot":
                states[m["tick"]] = m["payload"]
                continue
            if bases is not None:
                bases.append((m["base_tick"], before))
            assert ack, "a client that sent no InputAck got a SnapshotDelta"
            assert m["codec"] == 0, m
            # §5.1: the baseline is a state this client has (the server
            # follows the rules), and a delta is applied only to it.
            assert m["base_tick"] in states, (m["base_tick"], sorted(states)[-5:])
            assert m["base_tick"] < m["tick"]
            states[m["tick"]] = apply_delta(states[m["base_tick"]], m["delta"])
            deltas += 1
    finally:
        sender.cancel()
    return states, deltas


@pytest.mark.parametrize("transport", ["ws", "wt", "http"])
def test_deltas_made_whole_equal_whole_snapshots(start_server, transport):
    s = start_server()

    async def go():
        whole = await peer_join(s, "ws", "delta", "whole")
        taker = await peer_join(s, transport, "delta", "taker")
        (w, wd), (t, td) = await asyncio.gather(
            collect(whole, False, 2.0, 8), collect(taker, True, 2.0, 2))
        assert wd == 0
        assert td > 50, td
        same = [tick for tick in t if tick in w]
        assert len(same) > 50, len(same)
        for tick in same:
            assert t[tick] == w[tick], tick
        await assert_still_serving(s)

    run(go())


def test_on_websocket_a_delta_is_against_the_snapshot_before_it(start_server):
    """§5.1: on WebSocket what the server wrote arrives, so the baseline is
    simply the previous snapshot, not the acknowledged one (which lags a
    tick or two behind)."""
    s = start_server()

    async def go():
        p = await peer_join(s, "ws", "prev", "p")
        bases = []
        _, n = await collect(p, True, 2.0, 8, bases)
        assert n > 50, n
        previous = sum(1 for base, before in bases if base == before)
        assert previous >= 0.95 * len(bases), (previous, len(bases), bases[:20])

    run(go())


def test_an_input_ack_with_more_than_eight_inputs_is_bad_message(start_server):
    s = start_server()

    async def go():
        out = await misbehave(s, "ws", reliable=[input_ack(0, 9, [1] * 9)])
        assert_refused_with(out, "bad_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("bad_message") == 1


def test_an_input_ack_cut_short_is_bad_message(start_server):
    s = start_server()

    async def go():
        out = await misbehave(s, "ws", reliable=[input_ack(0, 2, [1, 2])[:-1]])
        assert_refused_with(out, "bad_message")
        await assert_still_serving(s)

    run(go())


def test_an_ack_of_a_tick_never_sent_gets_whole_snapshots(start_server):
    """An acknowledgement of a tick this session was never sent is not a
    baseline (§5.1): over WebTransport (acknowledgements only), the client
    keeps getting whole snapshots, never a delta it cannot apply."""
    s = start_server()

    async def go():
        p = await peer_join(s, "wt", "liar", "liar")
        for seq in range(1, 40):
            await p.send_unreliable(input_ack(1_000_000 + seq, seq, [0]))
            m = await p.until(lambda m: m.kind in ("snapshot", "snapshot_delta"), 5)
            assert m.kind == "snapshot", m

    run(go())
