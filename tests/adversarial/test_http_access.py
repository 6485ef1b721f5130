"""HTTP streaming: origins, join tokens and CORS (PROTOCOL.md §9, §11.1,
§11.2). Refusals on the GET that opens the session (403, 401) and on its
POSTs (403); a page on an allowed origin can use the transport from
another origin (CORS: it must read `Rally-Session` and its POSTs need a
preflight, being `application/octet-stream`)."""

import time

import pytest

from rally_peers import (
    http_joined as joined,
    http_still_goes_on as still_goes_on,
    HttpSession,
    Peer,
    assert_refused_with,
    assert_still_serving,
    frame,
    hello,
    make_token,
    ping,
    run,
)


ALL3 = ("ws", "wt", "http")
ALLOWED = "https://game.example"
MODES = ["stream", "sse", "poll"]


async def open_status(s, mode="stream", origin=None, query="") -> HttpSession:
    h = HttpSession(s, mode=mode, origin=origin, query=query, autopoll=False)
    await h.open()
    return h


@pytest.mark.parametrize("origin", ["http://evil.example", "https://game.example.evil", "null",
                                    "https://localhost.evil.example"])
def test_disallowed_origin_is_403_on_the_get(start_server, origin):
    s = start_server("--allow-origin", ALLOWED)

    async def go():
        for mode in MODES:
            h = await open_status(s, mode, origin)
            assert h.status == 403, (mode, h.status, h.body)
            assert "rally-session" not in h.headers, dict(h.headers)
            await h.close()
        # Allowed: the configured origin, loopback (dev certificate), none.
        for ok in (ALLOWED, f"http://localhost:{s.port}", f"http://127.0.0.1:{s.port}", None):
            h = await open_status(s, "stream", ok)
            assert h.status == 200, (ok, h.status, h.body)
            await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
    m = s.metrics()
    assert m["sessions_forbidden"] == len(MODES), m
    assert m["http"]["sessions_opened"] == 5, m["http"]


def test_disallowed_origin_is_403_on_a_post_and_nothing_is_taken(start_server):
    """A live session (opened from the allowed origin) whose POST comes with
    another Origin: 403, its messages not taken, the same N still next."""
    s = start_server("--allow-origin", ALLOWED)

    async def go():
        h = await joined(s, origin=ALLOWED)
        for evil in ("http://evil.example", "null"):
            r = await h.post(frame(ping(666)), seq=2, headers={"origin": evil})
            assert r.status_code == 403, (evil, r.status_code, r.text)
        # The Hello too: a POST opening a session from a bad origin.
        h2 = HttpSession(s)  # no Origin on the GET (native)...
        assert await h2.open() == 200
        r = await h2.post(frame(hello("o", "x")), headers={"origin": "http://evil.example"})
        assert r.status_code == 403, (r.status_code, r.text)
        await h2.close()
        await still_goes_on(h, 2)
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())


def test_join_tokens_missing_or_invalid_are_401_on_the_get(start_server):
    secret = "adv-s3cret"
    s = start_server("--token-secret", secret)
    now = int(time.time())
    good = s.token(secret, room="t")
    mine = make_token(secret, now + 60, "t")
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
            for mode in MODES:
                h = await open_status(s, mode, query=q)
                assert h.status == 401, (what, mode, h.status, h.body)
                assert "rally-session" not in h.headers
                await h.close()
        # Valid tokens open a session; its POSTs carry no token (the ID binds them).
        for tok in (good, mine):
            p = Peer(s, "http")
            await p.open(query=f"token={tok}")
            await p.join("t", "ok")
            await p.sync(3)
            await p.close()
        # A token for another room: Error unauthorized on the stream, then its end.
        h = HttpSession(s, query=f"token={good}")
        assert await h.open() == 200
        assert await h.send(hello("other", "n")) == 204
        out = await h.until_closed(5)
        assert_refused_with(out, "unauthorized", only=True)
        await h.close()

    run(go())
    m = s.metrics()
    assert m["sessions_forbidden"] == len(bad) * len(MODES), m
    assert m["errors"]["unauthorized"] == 1, m["errors"]


def test_join_token_expiring_during_an_http_session_is_token_expired(start_server):
    secret = "adv-s3cret"
    s = start_server("--token-secret", secret)
    tok = make_token(secret, int(time.time()) + 2)

    async def go():
        p = Peer(s, "http")
        await p.open(query=f"token={tok}")
        await p.join("exp", "short")
        out = await p.until_closed(timeout=8)
        assert_refused_with(out, "token_expired")
        await p.close()

    run(go())
    assert s.error_count("token_expired") == 1


# -- CORS ---------------------------------------------------------------------------


def exposes(headers, name: str) -> bool:
    v = headers.get("access-control-expose-headers", "")
    return v.strip() == "*" or name in [x.strip().lower() for x in v.split(",")]


def lists(headers, field: str, want: str) -> bool:
    v = headers.get(field, "")
    return v.strip() == "*" or want.lower() in [x.strip().lower() for x in v.split(",")]


@pytest.mark.parametrize("mode", MODES)
def test_cors_an_allowed_cross_origin_page_can_open_and_post(start_server, mode):
    """What a browser page on https://game.example needs of the server at
    http://127.0.0.1:PORT: the GET's answer allows its origin and exposes
    `Rally-Session` (a cross-origin fetch cannot read it otherwise); the
    preflight of its POST (application/octet-stream is not a simple content
    type) answers 204 allowing POST and content-type; the POST's answer
    allows its origin (so the page can read 204/409)."""
    s = start_server("--allow-origin", ALLOWED)

    async def go():
        h = HttpSession(s, mode=mode, origin=ALLOWED, autopoll=False)
        assert await h.open() == 200
        acao = h.headers.get("access-control-allow-origin")
        assert acao in (ALLOWED, "*"), dict(h.headers)
        assert exposes(h.headers, "rally-session"), dict(h.headers)
        # The preflight of the POST.
        c = h.client
        pre = await c.request("OPTIONS", f"{s.http}/rally/http/{h.id}?seq=1", headers={
            "origin": ALLOWED,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        })
        assert pre.status_code == 204, (pre.status_code, pre.text)
        assert pre.headers.get("access-control-allow-origin") in (ALLOWED, "*"), dict(pre.headers)
        assert lists(pre.headers, "access-control-allow-methods", "POST"), dict(pre.headers)
        assert lists(pre.headers, "access-control-allow-headers", "content-type"), dict(pre.headers)
        # The POST itself (with the page's Origin) and its answer.
        r = await h.post(frame(hello("cors", "page")))
        assert r.status_code == 204, (r.status_code, r.text)
        assert r.headers.get("access-control-allow-origin") in (ALLOWED, "*"), dict(r.headers)
        if mode != "poll":
            assert (await h.recv()).kind == "welcome"
        else:
            st, msgs = await h.poll()
            assert st == 200 and msgs and msgs[0][0] == 0x81, (st, msgs)
        # A preflight from an origin that is not allowed grants nothing.
        pre = await c.request("OPTIONS", f"{s.http}/rally/http/{h.id}?seq=2", headers={
            "origin": "http://evil.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        })
        assert pre.headers.get("access-control-allow-origin") not in ("http://evil.example", "*"), (
            pre.status_code, dict(pre.headers))
        await h.close()
        await assert_still_serving(s, transports=ALL3)

    run(go())
