"""Refusals before a session exists (PROTOCOL.md §6, §9): Origin → 403,
join token → 401, over both transports; and the WebSocket-only text-message
rule."""

import asyncio
import time

import pytest
from websockets.exceptions import InvalidStatus

from rally_peers import (
    WtClient,
    assert_refused_with,
    assert_still_serving,
    hello,
    make_token,
    misbehave,
    peer_join,
    run,
    ws_join,
    ws_open,
    ws_until_closed,
)

ALLOWED = "https://game.example"


async def ws_status(url: str, origin: str | None = None) -> int:
    try:
        ws = await ws_open(url, origin=origin)
    except InvalidStatus as e:
        return e.response.status_code
    await ws.close()
    return 101


async def wt_status(server, origin=None, query="") -> int:
    async with WtClient(server, origin=origin, query=query) as c:
        return await c.connect()


@pytest.mark.parametrize("origin", ["http://evil.example", "https://game.example.evil",
                                    "null", "https://localhost.evil.example"])
def test_disallowed_origin_is_403_on_both_transports(start_server, origin):
    s = start_server("--allow-origin", ALLOWED)

    async def go():
        assert await ws_status(s.ws_url, origin) == 403
        assert await wt_status(s, origin) == 403
        # Allowed: the configured origin, loopback (dev certificate), none.
        for ok in (ALLOWED, f"http://localhost:{s.port}", None):
            assert await ws_status(s.ws_url, ok) == 101, ok
            assert await wt_status(s, ok) == 200, ok
        await assert_still_serving(s)

    run(go())
    assert s.metrics()["sessions_forbidden"] == 2


def test_join_tokens_missing_or_invalid_are_401_on_both_transports(start_server):
    secret = "adv-s3cret"
    s = start_server("--token-secret", secret)
    now = int(time.time())
    good = s.token(secret, room="t")  # minted by `rally token`
    mine = make_token(secret, now + 60, "t")  # minted from §9 alone
    forged = make_token("another-secret", now + 60, "t")
    expired = make_token(secret, now - 60, "t")
    claims, sig = good.split(".")
    bad = {
        "missing": "",
        "empty": "token=",
        "garbage": "token=not-a-token",
        "forged": f"token={forged}",
        "tampered-sig": f"token={claims}.{sig[:-2]}AA",
        "no-signature": f"token={claims}",
        "expired": f"token={expired}",
    }

    async def go():
        for what, q in bad.items():
            url = s.ws_url + (f"?{q}" if q else "")
            assert await ws_status(url) == 401, what
            assert await wt_status(s, query=q) == 401, what
        # A valid token joins its room on both transports...
        for tok in (good, mine):
            ws, w = await ws_join(f"{s.ws_url}?token={tok}", "t", "ok")
            await ws.close()
        async with WtClient(s, query=f"token={good}") as c:
            await c.join("t", "ok")
        # ...and is refused another room with Error unauthorized + 4014.
        for transport in ("ws", "wt"):
            out = await token_session(s, transport, good, "other")
            assert_refused_with(out, "unauthorized")

    run(go())
    m = s.metrics()
    assert m["sessions_forbidden"] == 2 * len(bad), m
    assert m["errors"]["unauthorized"] == 2, m


async def token_session(s, transport, token, room):
    """Like misbehave(), with a token in the URL and a Hello for `room`."""
    if transport == "ws":
        ws = await ws_open(f"{s.ws_url}?token={token}")
        await ws.send(hello(room, "n"))
        return await ws_until_closed(ws)
    async with WtClient(s, query=f"token={token}") as c:
        assert await c.connect() == 200
        c.open_stream()
        c.send(hello(room, "n"))
        out, _ = await c.until_closed()
        return out


def test_join_token_expiring_during_the_session_is_token_expired(start_server):
    """§9: when the token's exp passes during the session: Error
    token_expired (15), close 4015 — on both transports at once."""
    secret = "adv-s3cret"
    s = start_server("--token-secret", secret)
    tok = make_token(secret, int(time.time()) + 2)

    async def one(transport):
        p = await peer_join(s, transport, "exp", f"short-{transport}", query=f"token={tok}")
        out = await p.until_closed(timeout=8)
        assert_refused_with(out, "token_expired")

    async def go():
        await asyncio.gather(one("ws"), one("wt"))

    run(go())
    assert s.error_count("token_expired") == 2


@pytest.mark.parametrize("after_hello", [True, False], ids=["after-hello", "before-hello"])
def test_websocket_text_message_is_unexpected_message(start_server, after_hello):
    s = start_server()

    async def go():
        out = await misbehave(s, "ws", send_hello=after_hello, ws_text="\x01hello")
        assert_refused_with(out, "unexpected_message")
        await assert_still_serving(s)

    run(go())
    assert s.error_count("unexpected_message") == 1
