"""Third-party peers for Rally's adversarial suite.

* `Server`: a real `rally serve` process on ephemeral ports.
* Wire helpers: encoders/decoders written from PROTOCOL.md alone.
* `ws_*`: WebSocket peers built on the `websockets` library.
* `WtClient`: a WebTransport peer built on `aioquic` (HTTP/3 extended
  CONNECT, one bidirectional WebTransport stream, WebTransport datagrams).

Nothing here imports the Rust client: every byte is produced by these
independent implementations.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import FrameType, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
RALLY_BIN = os.environ.get("RALLY_BIN", str(REPO / "target" / "release" / "rally"))

# --------------------------------------------------------------------------
# Error codes (PROTOCOL.md §6)
# --------------------------------------------------------------------------

ERRORS = {
    1: "bad_message",
    2: "unsupported_version",
    3: "unknown_message",
    4: "message_too_large",
    5: "unexpected_message",
    6: "invalid_name",
    7: "room_full",
    8: "server_full",
    9: "too_slow",
    10: "shutting_down",
    11: "hello_timeout",
    12: "internal",
    13: "rate_limited",
    14: "unauthorized",
    15: "token_expired",
    16: "resume_failed",
    17: "replaced",
}
CODE = {name: code for code, name in ERRORS.items()}

# --------------------------------------------------------------------------
# Encoding (PROTOCOL.md §3–§5)
# --------------------------------------------------------------------------


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def hello(room: str, name: str, version: int = 1) -> bytes:
    return b"\x01" + struct.pack(">H", version) + _str(room) + _str(name)


def input_msg(newest_seq: int, buttons: list[int]) -> bytes:
    return b"\x02" + struct.pack(">IB", newest_seq, len(buttons)) + bytes(buttons)


def ping(t: int = 1) -> bytes:
    return b"\x03" + struct.pack(">Q", t)


LEAVE = b"\x04"


def resume(token: bytes, last_seq: int, version: int = 1) -> bytes:
    assert len(token) == 16
    return b"\x05" + struct.pack(">H", version) + token + struct.pack(">I", last_seq)


def make_token(secret: str, exp: int, room: str | None = None) -> str:
    """A join token written from PROTOCOL.md §9 alone (not `rally token`)."""
    import base64, hashlib, hmac

    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    claims = {"exp": exp} if room is None else {"exp": exp, "room": room}
    c = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), c.encode(), hashlib.sha256).digest()
    return f"{c}.{b64(sig)}"


def frame(payload: bytes) -> bytes:
    """Stream framing (§2): u16 big-endian length, then the message."""
    return struct.pack(">H", len(payload)) + payload


@dataclass
class Msg:
    kind: str
    f: dict = field(default_factory=dict)

    def __getitem__(self, k):
        return self.f[k]


def _read_str(b: bytes, i: int) -> tuple[str, int]:
    n = b[i]
    return b[i + 1 : i + 1 + n].decode(), i + 1 + n


def decode(b: bytes) -> Msg:
    t = b[0]
    if t == 0x81:
        assert len(b) == 51, f"Welcome is 51 bytes, got {len(b)}"
        (ver, pid, hz, every, aw, ah, speed, tick) = struct.unpack(">HIHHfffI", b[1:27])
        token = b[27:43]
        window_ms, rseq = struct.unpack(">II", b[43:51])
        return Msg("welcome", dict(version=ver, player_id=pid, tick_hz=hz, snapshot_every=every,
                                   tick=tick, resume_token=token, resume_window_ms=window_ms,
                                   reliable_seq=rseq))
    if t == 0x82:
        (pid,) = struct.unpack(">I", b[1:5])
        name, end = _read_str(b, 5)
        assert end == len(b)
        return Msg("joined", dict(player_id=pid, name=name))
    if t == 0x83:
        assert len(b) == 5
        return Msg("left", dict(player_id=struct.unpack(">I", b[1:5])[0]))
    if t == 0x84:
        ack, tick, st, count = struct.unpack(">IIQH", b[1:19])
        assert len(b) == 19 + 12 * count
        ids = [struct.unpack(">I", b[19 + 12 * i : 23 + 12 * i])[0] for i in range(count)]
        return Msg("snapshot", dict(ack_seq=ack, tick=tick, server_time_us=st, ids=ids))
    if t == 0x85:
        c, s = struct.unpack(">QQ", b[1:17])
        return Msg("pong", dict(client_time_us=c, server_time_us=s))
    if t == 0x86:
        (code,) = struct.unpack(">H", b[1:3])
        reason, end = _read_str(b, 3)
        assert end == len(b)
        return Msg("error", dict(code=code, reason=reason))
    raise AssertionError(f"unknown server message type {t:#x}: {b.hex()}")


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


class Server:
    """`rally serve` on 127.0.0.1, UDP and TCP on one ephemeral port."""

    def __init__(self, *flags: str):
        if not os.access(RALLY_BIN, os.X_OK):
            raise RuntimeError(f"rally binary not found at {RALLY_BIN} (set RALLY_BIN)")
        self.cert_dir = Path(tempfile.mkdtemp(prefix="rally-adv-"))
        self.stderr_path = self.cert_dir / "stderr.log"
        env = dict(os.environ, RALLY_LOG=os.environ.get("RALLY_TEST_LOG", "warn"))
        last = ""
        # With --tcp-listen port 0 the server binds TCP to the port number the
        # OS gave UDP; when that TCP port is taken it exits ("Address already
        # in use"), so a start is retried a few times.
        for _ in range(8):
            self._err = open(self.stderr_path, "wb")
            self.proc = subprocess.Popen(
                [RALLY_BIN, "serve", "--listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0",
                 "--cert-dir", str(self.cert_dir), *flags],
                stdout=subprocess.PIPE, stderr=self._err, env=env,
            )
            line = self.proc.stdout.readline()
            if line:
                break
            self.proc.wait()
            self._err.close()
            last = self.stderr_path.read_text(errors="replace")
            if "Address already in use" not in last:
                raise RuntimeError(f"rally serve failed: {last[:2000]}")
        else:
            raise RuntimeError(f"rally serve could not bind: {last[:2000]}")
        v = json.loads(line)
        assert v["event"] == "listening", v
        udp, tcp = v["udp"], v["tcp"]
        self.port = int(udp.rsplit(":", 1)[1])
        assert int(tcp.rsplit(":", 1)[1]) == self.port, v
        self.cert_sha256 = v["cert_sha256"]
        self.cert_pem = self.cert_dir / "dev.pem"
        self.pid = self.proc.pid

    # -- plumbing --
    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rally"

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.http}/health", timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> dict:
        return self.health()["metrics"]

    def error_count(self, name: str) -> int:
        return int(self.metrics()["errors"][name])

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self._err.close()
        shutil.rmtree(self.cert_dir, ignore_errors=True)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def token(self, secret: str, ttl: str = "1h", room: str | None = None) -> str:
        args = [RALLY_BIN, "token", "--secret", secret, "--ttl", ttl]
        if room:
            args += ["--room", room]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


# --------------------------------------------------------------------------
# WebSocket peer (websockets)
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a session ended: messages seen, Error codes, close code/reason."""

    msgs: list[Msg]
    close_code: int | None
    close_reason: str | None

    @property
    def errors(self) -> list[int]:
        return [m["code"] for m in self.msgs if m.kind == "error"]


async def ws_open(url: str, **kw):
    kw.setdefault("compression", None)
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", 5)
    kw.setdefault("ping_interval", None)
    return await ws_connect(url, **kw)


async def ws_until_closed(ws, timeout: float = 10) -> Outcome:
    """Reads until the server closes; decodes binary messages."""
    msgs: list[Msg] = []

    async def run():
        try:
            while True:
                m = await ws.recv()
                if isinstance(m, bytes):
                    msgs.append(decode(m))
        except ConnectionClosed:
            pass

    await asyncio.wait_for(run(), timeout)
    rcvd = ws.close_code, ws.close_reason
    # websockets reports 1006 with no reason when no close frame came.
    return Outcome(msgs, rcvd[0], rcvd[1])


async def ws_join(url: str, room: str, name: str, **kw):
    """Opens a WebSocket session and waits for Welcome."""
    ws = await ws_open(url, **kw)
    await ws.send(hello(room, name))
    w = decode(await asyncio.wait_for(ws.recv(), 5))
    assert w.kind == "welcome", w
    return ws, w


async def ws_recv_until(ws, pred, timeout: float = 5) -> Msg:
    async def run():
        while True:
            m = await ws.recv()
            if isinstance(m, bytes):
                d = decode(m)
                if pred(d):
                    return d

    return await asyncio.wait_for(run(), timeout)


# --------------------------------------------------------------------------
# WebTransport peer (aioquic)
# --------------------------------------------------------------------------


class _WtProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.events: asyncio.Queue[H3Event | QuicEvent] = asyncio.Queue()
        self.terminated: ConnectionTerminated | None = None
        self.terminated_evt = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            self.terminated_evt.set()
            self.events.put_nowait(event)
        for h3_event in self.h3.handle_event(event):
            self.events.put_nowait(h3_event)


class WtClient:
    """One QUIC connection carrying (at most) one WebTransport session.

    Usage: `async with WtClient(server) as c: status = await c.connect(...)`.
    """

    def __init__(self, server: Server, *, origin: str | None = None,
                 path: str = "/rally", query: str = ""):
        self.server = server
        self.origin = origin
        self.path = path + (f"?{query}" if query else "")
        self.session_id: int | None = None
        self.stream_id: int | None = None
        self.status: int | None = None
        self._buf = b""
        self.reliable: asyncio.Queue[bytes] = asyncio.Queue()
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()
        self.stream_ended = False
        self._cm = None
        self.proto: _WtProtocol | None = None
        self._pump: asyncio.Task | None = None
        self._headers: asyncio.Queue[HeadersReceived] = asyncio.Queue()

    async def __aenter__(self) -> "WtClient":
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"],
                                max_datagram_frame_size=65536, server_name="localhost")
        cfg.load_verify_locations(str(self.server.cert_pem))
        self._cm = quic_connect("127.0.0.1", self.server.port, configuration=cfg,
                                create_protocol=_WtProtocol, wait_connected=True)
        self.proto = await asyncio.wait_for(self._cm.__aenter__(), 5)
        self._pump = asyncio.create_task(self._pump_events())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._pump:
            self._pump.cancel()
        try:
            await asyncio.wait_for(self._cm.__aexit__(None, None, None), 3)
        except (asyncio.TimeoutError, Exception):
            pass

    @property
    def quic(self):
        return self.proto._quic

    def transmit(self) -> None:
        self.proto.transmit()

    async def _pump_events(self) -> None:
        while True:
            ev = await self.proto.events.get()
            if isinstance(ev, HeadersReceived):
                await self._headers.put(ev)
            elif isinstance(ev, WebTransportStreamDataReceived):
                if ev.stream_id == self.stream_id:
                    self._buf += ev.data
                    while len(self._buf) >= 2:
                        (n,) = struct.unpack(">H", self._buf[:2])
                        if len(self._buf) < 2 + n:
                            break
                        self.reliable.put_nowait(self._buf[2 : 2 + n])
                        self._buf = self._buf[2 + n :]
                    if ev.stream_ended:
                        self.stream_ended = True
            elif isinstance(ev, DatagramReceived):
                if ev.stream_id == self.session_id:
                    self.datagrams.put_nowait(ev.data)

    async def connect(self, extra_headers: list[tuple[bytes, bytes]] | None = None) -> int:
        """Sends the extended CONNECT; returns the response status."""
        sid = self.quic.get_next_available_stream_id()
        headers = [
            (b":method", b"CONNECT"),
            (b":scheme", b"https"),
            (b":authority", f"localhost:{self.server.port}".encode()),
            (b":path", self.path.encode()),
            (b":protocol", b"webtransport"),
        ]
        if self.origin is not None:
            headers.append((b"origin", self.origin.encode()))
        headers += extra_headers or []
        self.proto.h3.send_headers(stream_id=sid, headers=headers, end_stream=False)
        self.transmit()
        while True:
            ev = await asyncio.wait_for(self._headers.get(), 5)
            if ev.stream_id == sid:
                break
        status = int(dict(ev.headers)[b":status"])
        self.status = status
        if status == 200:
            self.session_id = sid
        return status

    def open_stream(self, unidirectional: bool = False) -> int:
        """Opens a WebTransport stream in the session (after connect)."""
        assert self.session_id is not None
        h3 = self.proto.h3
        sid = h3.create_webtransport_stream(self.session_id, is_unidirectional=unidirectional)
        if not unidirectional:
            # aioquic tags only *peer*-opened bidirectional streams as
            # WebTransport streams; tag ours too so that the server's bytes on
            # it come back as WebTransportStreamDataReceived instead of being
            # parsed as HTTP/3 frames.
            with h3._get_or_create_stream(sid) as st:
                st.frame_type = FrameType.WEBTRANSPORT_STREAM
                st.session_id = self.session_id
            if self.stream_id is None:
                self.stream_id = sid
        self.transmit()
        return sid

    def send_raw(self, data: bytes, stream_id: int | None = None, end: bool = False) -> None:
        """Bytes as they are on a stream (no framing added)."""
        self.quic.send_stream_data(self.stream_id if stream_id is None else stream_id, data, end)
        self.transmit()

    def send(self, msg: bytes) -> None:
        """One message, framed (§2), on the reliable stream."""
        self.send_raw(frame(msg))

    def send_datagram(self, data: bytes) -> None:
        """A WebTransport datagram (aioquic adds the quarter-stream-id)."""
        self.proto.h3.send_datagram(self.session_id, data)
        self.transmit()

    def send_quic_datagram(self, data: bytes) -> None:
        """A raw QUIC DATAGRAM frame: no HTTP/3 prefix is added."""
        self.quic.send_datagram_frame(data)
        self.transmit()

    async def recv(self, timeout: float = 5) -> Msg:
        return decode(await asyncio.wait_for(self.reliable.get(), timeout))

    async def recv_until(self, pred, timeout: float = 5) -> Msg:
        async def run():
            while True:
                m = decode(await self.reliable.get())
                if pred(m):
                    return m

        return await asyncio.wait_for(run(), timeout)

    async def join(self, room: str, name: str) -> Msg:
        st = await self.connect()
        assert st == 200, st
        self.open_stream()
        self.send(hello(room, name))
        w = await self.recv()
        assert w.kind == "welcome", w
        return w

    async def until_closed(self, timeout: float = 10) -> tuple[Outcome, ConnectionTerminated]:
        """Waits for the QUIC connection close; returns what was read."""
        await asyncio.wait_for(self.proto.terminated_evt.wait(), timeout)
        await asyncio.sleep(0)  # let the pump drain what came before the close
        msgs = []
        while not self.reliable.empty():
            msgs.append(decode(self.reliable.get_nowait()))
        t = self.proto.terminated
        return Outcome(msgs, t.error_code, t.reason_phrase), t


async def wt_join(server: Server, room: str, name: str, **kw) -> tuple[WtClient, Msg]:
    c = WtClient(server, **kw)
    await c.__aenter__()
    w = await c.join(room, name)
    return c, w


async def assert_still_serving(server: Server, room: str = "after") -> None:
    """A well-behaved peer on each transport still gets Welcome and snapshots."""
    ws, w = await ws_join(server.ws_url, room, "good-ws")
    assert w["player_id"] != 0
    snap = await ws_recv_until(ws, lambda m: m.kind == "snapshot")
    assert w["player_id"] in snap["ids"]
    await ws.close()
    async with WtClient(server) as c:
        w = await c.join(room, "good-wt")

        async def next_snap():
            # Snapshots come as datagrams (or on the stream when too big).
            while True:
                d = await c.datagrams.get()
                m = decode(d)
                if m.kind == "snapshot":
                    return m

        snap = await asyncio.wait_for(next_snap(), 5)
        assert w["player_id"] in snap["ids"]
    assert server.alive()


def run(coro, timeout: float = 60):
    """Runs one test coroutine with a deadline so a hang fails, not stalls."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def misbehave(server: Server, transport: str, *, room: str = "adv", send_hello: bool = True,
                    reliable: list[bytes] = (), unreliable: list[bytes] = (),
                    raw_stream: bytes | None = None, ws_text: str | None = None,
                    pace: float = 0.0, timeout: float = 10) -> Outcome:
    """Opens a session, (optionally) joins, then sends what it is told.

    `reliable`: messages on the reliable channel (a binary WebSocket message
    each, or a length-prefixed frame each on the WebTransport stream).
    `unreliable`: WebTransport datagrams (binary messages on WebSocket).
    `raw_stream`: bytes written as they are on the WebTransport stream.
    `pace`: seconds between WebSocket messages (0: back to back).
    Returns how the server ended the session.
    """
    if transport == "ws":
        ws = await ws_open(server.ws_url)
        if send_hello:
            await ws.send(hello(room, "mallory"))
            w = decode(await asyncio.wait_for(ws.recv(), 5))
            assert w.kind == "welcome", w
        try:
            for m in list(reliable) + list(unreliable):
                await ws.send(m)
                if pace:
                    await asyncio.sleep(pace)
            if ws_text is not None:
                await ws.send(ws_text)
        except ConnectionClosed:
            pass  # the server may close before the last of a flood is sent
        out = await ws_until_closed(ws, timeout)
        pre = [w] if send_hello else []
        return Outcome(pre + out.msgs, out.close_code, out.close_reason)
    assert transport == "wt", transport
    async with WtClient(server) as c:
        assert await c.connect() == 200
        c.open_stream()
        pre = []
        if send_hello:
            c.send(hello(room, "mallory"))
            pre.append(await c.recv())
            assert pre[0].kind == "welcome", pre
        for m in reliable:
            c.send(m)
        if raw_stream is not None:
            c.send_raw(raw_stream)
        for d in unreliable:
            c.send_datagram(d)
        out, _ = await c.until_closed(timeout)
        return Outcome(pre + out.msgs, out.close_code, out.close_reason)


def assert_refused_with(out: Outcome, name: str, *, error_message: bool = True) -> None:
    """PROTOCOL.md §6: Error(code) on the reliable channel, then close 4000+code, reason = name."""
    code = CODE[name]
    if error_message:
        assert out.errors == [code], f"expected one Error {code} ({name}), got {out.msgs!r}"
    else:
        assert out.errors == [], out.msgs
    assert out.close_code == 4000 + code, f"close {out.close_code} {out.close_reason!r}, want {4000 + code}"
    assert out.close_reason == name, f"close reason {out.close_reason!r}, want {name!r}"
