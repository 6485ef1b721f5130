"""Oversized request header sections (PROTOCOL.md §6 refusals, §8 "HTTP
header section"): 16 KiB by default on both HTTP/1.1 and HTTP/3
(`--h3-max-header`); larger gets 431 before any session exists."""

import asyncio

import pytest

from rally_peers import WtClient, assert_still_serving, run

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's sample key


async def h1_status(port: int, path: str, pad: int, upgrade: bool) -> int:
    """A raw HTTP/1.1 request with an `X-Pad` header of `pad` bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if upgrade:
        req += ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n")
    req += f"X-Pad: {'a' * pad}\r\n\r\n"
    writer.write(req.encode())
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert line.startswith(b"HTTP/1.1 "), line
    return int(line.split()[1])


async def h3_status(server, pad: int) -> int:
    """The WebTransport CONNECT to /rally with an `x-pad` field of `pad` bytes."""
    async with WtClient(server) as c:
        return await c.connect(extra_headers=[(b"x-pad", b"a" * pad)])


@pytest.mark.parametrize("path,upgrade", [("/rally", True), ("/health", False)],
                         ids=["websocket-upgrade", "health"])
def test_http1_header_section_over_16kib_is_431(start_server, path, upgrade):
    s = start_server()

    async def go():
        ok = 101 if upgrade else 200
        assert await h1_status(s.port, path, 12 * 1024, upgrade) == ok
        assert await h1_status(s.port, path, 20 * 1024, upgrade) == 431
        assert await h1_status(s.port, path, 64 * 1024, upgrade) == 431
        await assert_still_serving(s)

    run(go())
    assert s.metrics()["websocket"]["sessions_opened"] >= (2 if upgrade else 1)


def test_h3_header_section_over_16kib_is_431(start_server):
    """HTTP/3 CONNECT: a 12 KiB field passes, a 20 KiB one (a header section
    above the 16 KiB SETTINGS_MAX_FIELD_SECTION_SIZE) gets 431."""
    s = start_server()

    async def go():
        assert await h3_status(s, 12 * 1024) == 200
        assert await h3_status(s, 20 * 1024) == 431
        await assert_still_serving(s)

    run(go())
    assert s.metrics()["webtransport"]["sessions_opened"] >= 2


def test_h3_max_header_is_configurable(start_server):
    s = start_server("--h3-max-header", "4096")

    async def go():
        assert await h3_status(s, 2 * 1024) == 200
        assert await h3_status(s, 6 * 1024) == 431
        await assert_still_serving(s)

    run(go())
