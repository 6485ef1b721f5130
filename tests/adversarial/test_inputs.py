"""Inputs (PROTOCOL.md §4) seen through the dots game (§12): each input
moves the player by speed / tick_hz, so the distance a player moved counts
the inputs the server handed to the game, and Snapshot.ack_seq says which
was the last. Over WebSocket, WebTransport datagrams, and the WebTransport
stream ("also accepted on the stream")."""

import asyncio

import pytest

from rally_peers import (
    DOTS_LEFT,
    DOTS_RIGHT,
    Peer,
    dots_inputs,
    dots_players,
    dots_welcome,
    input_msg,
    peer_join,
    resume,
    run,
)

CHANNELS = ["ws", "wt-datagram", "wt-stream"]


class Mover:
    """A dots player whose snapshots are followed: (tick, ack_seq, x)."""

    def __init__(self, peer: Peer, channel: str):
        self.p = peer
        self.channel = channel
        w = dots_welcome(peer.welcome["app"])
        self.arena_w = w["arena_w"]
        self.step = w["speed"] / peer.welcome["tick_hz"]
        self.obs: list[tuple[int, int, float]] = []

    async def send_input(self, msg: bytes) -> None:
        if self.channel == "wt-datagram":
            await self.p.send_unreliable(msg)
        else:
            await self.p.send(msg)

    async def snapshot(self, timeout: float = 5) -> tuple[int, int, float]:
        m = await self.p.until(lambda m: m.kind == "snapshot", timeout)
        x = dots_players(m["payload"])[self.p.id][0]
        o = (m["tick"], m["ack_seq"], x)
        self.obs.append(o)
        return o

    async def until_ack(self, ack: int, timeout: float = 5) -> tuple[int, int, float]:
        async def run():
            while True:
                o = await self.snapshot()
                if o[1] >= ack:
                    return o

        return await asyncio.wait_for(run(), timeout)

    def inputs_between(self, x1: float, x2: float) -> int:
        """How many one-step moves take x1 to x2 (checked to be whole)."""
        n = abs(x2 - x1) / self.step
        assert abs(n - round(n)) < 0.01, f"moved {x2 - x1} = {n} steps of {self.step}"
        return round(n)


def ordered(obs):
    """Observations by tick, one per tick (datagrams may reorder)."""
    by_tick = {}
    for o in obs:
        by_tick.setdefault(o[0], o)
    return [by_tick[t] for t in sorted(by_tick)]


@pytest.mark.parametrize("channel", CHANNELS)
def test_redundant_inputs_are_handed_over_once_in_order(start_server, channel):
    """Inputs 1..12 at the tick rate, each message repeating the last 4: the
    acknowledgement reaches 12 and the player moved exactly 12 steps (every
    input once, none twice)."""
    s = start_server()

    async def go():
        p = await peer_join(s, "ws" if channel == "ws" else "wt", "inputs", "mover")
        mv = Mover(p, channel)
        _, ack0, x0 = await mv.snapshot()
        assert ack0 == 0
        buttons, sign = (DOTS_RIGHT, 1) if x0 < mv.arena_w / 2 else (DOTS_LEFT, -1)
        for n in range(1, 13):
            await mv.send_input(dots_inputs(n, min(n, 4), buttons))
            await asyncio.sleep(1 / 60)  # one Input per client frame
        _, ack, x = await mv.until_ack(12)
        assert ack == 12
        assert sign * (x - x0) > 0
        assert mv.inputs_between(x0, x) == 12
        acks = [o[1] for o in ordered(mv.obs)]
        assert acks == sorted(acks), f"ack_seq went backwards: {acks}"
        await p.sync(1)
        assert not p.closed
        await p.close()

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0


@pytest.mark.parametrize("channel", CHANNELS)
def test_input_flood_is_bounded_by_eight_inputs_per_tick(start_server, channel):
    """§4: at most 8 inputs per player per tick are handed to the game; the
    inputs beyond that budget that a later message no longer carries are
    lost. A burst of 12 Inputs of 8 new inputs each (96 inputs, well under
    the message rate limit): between any two snapshots the player moved by
    at most 8 inputs per tick, always whole messages of 8 (ack_seq is a
    multiple of 8, the 8th handed over in its tick), ack_seq never goes
    backwards, fewer than the 96 were handed over, and the session stays
    open; the next Input goes on from its own number."""
    s = start_server()
    messages = 12

    async def go():
        p = await peer_join(s, "ws" if channel == "ws" else "wt", "flood", "flooder")
        mv = Mover(p, channel)
        t0, ack0, x0 = await mv.snapshot()
        assert ack0 == 0
        # 96 steps fit between the start and the farther wall (no clamping).
        buttons = DOTS_RIGHT if x0 < mv.arena_w / 2 else DOTS_LEFT
        assert 8 * messages * mv.step < mv.arena_w / 2
        for i in range(1, messages + 1):
            await mv.send_input(dots_inputs(8 * i, 8, buttons))
        # Read until the acknowledgement has not moved for 10 ticks. (On
        # WebTransport snapshots are datagrams: one may be lost, so the
        # checks below compare any two consecutive snapshots received.)
        async def settle():
            while True:
                await mv.snapshot()
                obs = ordered(mv.obs)
                last = obs[-1]
                if last[1] > 0 and last[0] - max(o[0] for o in obs if o[1] < last[1]) >= 10:
                    return

        await asyncio.wait_for(settle(), 5)
        obs = ordered(mv.obs)
        sent = 8 * messages
        handed_total = mv.inputs_between(x0, obs[-1][2])
        for (ta, aa, xa), (tb, ab, xb) in zip(obs, obs[1:]):
            handed = mv.inputs_between(xa, xb)
            assert ab >= aa, f"ack_seq went backwards: {aa} at tick {ta} -> {ab} at tick {tb}"
            assert ab % 8 == 0 and ab <= sent, f"ack_seq {ab} at tick {tb} is not a whole message"
            assert handed <= 8 * (tb - ta), (
                f"{handed} inputs handed over between ticks {ta} and {tb}: over 8 per tick")
            assert handed % 8 == 0, f"{handed} inputs handed over between ticks {ta} and {tb}"
            assert (handed > 0) == (ab > aa), (
                f"ticks {ta}->{tb}: ack {aa}->{ab} but {handed} inputs handed over")
            if tb - ta == 1 and ab > aa:
                # One tick: exactly one whole message (the budget is 8).
                assert handed == 8, f"tick {tb}: {handed} inputs handed over"
        first = next(o for o in obs if o[1] > 0)
        before = obs[obs.index(first) - 1]
        if first[0] - before[0] == 1:
            # The tick the flood began in: its first message, inputs 1..8.
            assert first[1] == 8, f"first acknowledgement {first[1]}, want 8 (the 8th handed over)"
        assert 8 <= handed_total < sent, (
            f"{handed_total} of {sent} inputs handed over: the per-tick budget should lose some")
        # Not closed; the next Input (newest 97) is handed over.
        last_x = obs[-1][2]
        await mv.send_input(dots_inputs(sent + 1, 1, buttons))
        _, ack, x = await mv.until_ack(sent + 1)
        assert ack == sent + 1 and mv.inputs_between(last_x, x) == 1
        await p.sync(2)
        assert not p.closed
        print(f"{channel}: {handed_total} of {sent} inputs handed over; acks "
              f"{sorted({o[1] for o in obs})}; inputs_dropped={s.metrics()['inputs_dropped']}")
        await p.close()

    run(go())
    m = s.metrics()
    assert sum(m["errors"].values()) == 0, m
    assert m["messages_rate_dropped"] == 0, m


def test_resumed_player_continues_its_input_numbering(start_server):
    """§4: after Resume the server's acknowledgement goes on from where it
    was: the first snapshot says ack_seq 6, an Input at or below 6 is not
    handed over again, and inputs 7 and 8 are."""
    s = start_server()

    async def go():
        p = await peer_join(s, "ws", "renum", "alice")
        mv = Mover(p, "ws")
        _, _, x0 = await mv.snapshot()
        buttons = DOTS_RIGHT if x0 < mv.arena_w / 2 else DOTS_LEFT
        await mv.send_input(dots_inputs(6, 6, buttons))
        _, ack, x1 = await mv.until_ack(6)
        assert ack == 6 and mv.inputs_between(x0, x1) == 6
        token = p.welcome["resume_token"]
        p.drop()

        q = Peer(s, "wt")
        await q.open()
        await q.send(resume(token, 1))
        w = await q.reply()
        assert w.kind == "welcome" and w["player_id"] == p.id, w
        q.welcome = w
        mq = Mover(q, "wt-datagram")
        _, ack, x = await mq.snapshot()
        assert ack == 6, f"first snapshot after Resume acknowledges {ack}, want 6"
        assert x == x1
        await mq.send_input(input_msg(6, [buttons, buttons]))  # inputs 6 and 5: old
        await mq.send_input(input_msg(8, [buttons, buttons, buttons]))  # 8, 7 new; 6 old
        _, ack, x2 = await mq.until_ack(8)
        assert ack == 8
        assert mq.inputs_between(x1, x2) == 2, "only inputs 7 and 8 are new"
        await q.close()

    run(go())
    assert sum(s.metrics()["errors"].values()) == 0
