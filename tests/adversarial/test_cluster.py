"""Cluster mode as a third party sees it on the wire (PROTOCOL.md §5
Redirect, §6 codes 20/21, §13): two real nodes on a real redis-server
(Debian's, started here on a free port), spoken to with `websockets` and
plain HTTP, written from the document alone."""

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from rally_peers import CODE, decode, hello, ws_join, ws_open, ws_until_closed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url():
    exe = shutil.which("redis-server")
    assert exe, "redis-server is missing: apt-get install redis-server (scripts/test.sh does)"
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.time() < deadline, "redis-server did not listen"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def room_on(via, node_id: str, tag: str) -> str:
    for i in range(40):
        room = f"{tag}-{i}"
        status, v, _ = get_json(f"{via.http}/rooms/{room}")
        assert status == 200, v
        if v["node"] == node_id:
            return room
    raise AssertionError(f"no room landed on {node_id}")


def test_hello_for_a_room_on_another_node_gets_redirect_then_close_4020(start_server, redis_url):
    """§5 Redirect: room, node, url, wt_url and the node's certificate hash
    as 32 raw bytes; then close 4020 `moved`. The named node takes the
    same Hello."""
    n1 = start_server("--redis", redis_url, "--node-id", "n1")
    n2 = start_server("--redis", redis_url, "--node-id", "n2")
    room = room_on(n1, "n2", "wire")

    async def go():
        ws = await ws_open(n1.ws_url)
        await ws.send(hello(room, "third"))
        out = await ws_until_closed(ws)
        assert [m.kind for m in out.msgs] == ["redirect"], out.msgs
        r = out.msgs[0]
        assert r["room"] == room and r["node"] == "n2"
        assert r["url"] == n2.http
        assert r["wt_url"] == f"https://127.0.0.1:{n2.port}/rally"
        assert r["cert_hashes"] == [bytes.fromhex(n2.cert_sha256)]
        assert (out.close_code, out.close_reason) == (4000 + CODE["moved"], "moved")
        ws2, w = await ws_join(r["url"].replace("http://", "ws://") + "/rally", room, "third")
        assert w["game"] == "dots"
        await ws2.close()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_rooms_endpoints_answer_as_documented(start_server, redis_url):
    """§13.2: /rooms/NAME names the owner with here/nodes/cert_hashes and a
    CORS header; a bad name is 400 invalid_room; /rooms lists nodes and
    rooms."""
    n1 = start_server("--redis", redis_url, "--node-id", "n1")
    n2 = start_server("--redis", redis_url, "--node-id", "n2")
    room = room_on(n1, "n1", "ep")
    status, v, headers = get_json(f"{n1.http}/rooms/{room}")
    assert status == 200
    assert headers.get("Access-Control-Allow-Origin") == "*"
    assert v["here"] is True and v["node"] == "n1" and v["players"] is None
    assert v["cert_hashes"] == [n1.cert_sha256]
    assert sorted(v["nodes"]) == sorted([n1.http, n2.http])
    status, v, _ = get_json(f"{n2.http}/rooms/{room}")
    assert (status, v["node"], v["here"]) == (200, "n1", False)
    status, v, _ = get_json(f"{n1.http}/rooms/bad%20room")
    assert (status, v["error"]) == (400, "invalid_room")
    status, v, _ = get_json(f"{n2.http}/rooms")
    assert status == 200
    assert sorted(n["id"] for n in v["nodes"]) == ["n1", "n2"]


def test_without_redis_new_rooms_are_unavailable_and_running_ones_play_on(start_server, redis_url):
    """§13.3: Redis gone — Hello for a new room gets Error `unavailable`
    (21) then close 4021; /rooms/NAME is 503 with Retry-After; a room
    already running takes a new player."""
    n1 = start_server("--redis", redis_url, "--node-id", "n1")
    port = int(redis_url.rsplit(":", 1)[1])

    async def go():
        ws, _ = await ws_join(n1.ws_url, "running", "a")
        # Stop Redis: SHUTDOWN from a client, as an operator would.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"SHUTDOWN NOSAVE\r\n")
        await asyncio.sleep(0.3)
        ws_new = await ws_open(n1.ws_url)
        await ws_new.send(hello("brand-new", "b"))
        out = await ws_until_closed(ws_new)
        assert out.errors == [CODE["unavailable"]], out.msgs
        assert (out.close_code, out.close_reason) == (4021, "unavailable")
        ws_b, _ = await ws_join(n1.ws_url, "running", "b")
        for w in (ws, ws_b):
            await w.close()

    asyncio.run(asyncio.wait_for(go(), 30))
    status, v, headers = get_json(f"{n1.http}/rooms/brand-new")
    assert (status, v["error"]) == (503, "unavailable")
    assert headers.get("Retry-After") == "1"
