"""Third-party peers for Rally's adversarial suite.

* `Server`: a real `rally serve` process on ephemeral ports.
* Wire helpers: encoders/decoders written from PROTOCOL.md alone.
* `ws_*`: WebSocket peers built on the `websockets` library.
* `WtClient`: a WebTransport peer built on `aioquic` (HTTP/3 extended
  CONNECT, one bidirectional WebTransport stream, WebTransport datagrams).
* `HttpSession`: an HTTP-streaming peer (§11) built on `httpx` (HTTP/1.1
  through h11, HTTP/2 through h2): `GET /rally/http` in `stream`, `sse` or
  `poll` mode, numbered `POST`s.

Nothing here imports the Rust client: every byte is produced by these
independent implementations.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import shutil
import signal
import ssl
import struct
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import httpx
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
    18: "join_refused",
    19: "idle_timeout",
    20: "moved",
    21: "unavailable",
}
CODE = {name: code for code, name in ERRORS.items()}

PROTOCOL_VERSION = 2

# --------------------------------------------------------------------------
# Encoding (PROTOCOL.md §3–§5)
# --------------------------------------------------------------------------


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def hello(room: str | bytes, name: str | bytes, app: bytes = b"",
          version: int = PROTOCOL_VERSION) -> bytes:
    """0x01 Hello: version u16, room str, name str, app rest."""
    return b"\x01" + struct.pack(">H", version) + _str(room) + _str(name) + app


def input_msg(newest_seq: int, inputs: list[bytes | int], count: int | None = None) -> bytes:
    """0x02 Input: newest_seq u32, count u8, count × (len u8, bytes), newest first.

    An int in `inputs` is a one-byte input (a dots button byte). `count`
    overrides the count byte (for malformed messages)."""
    items = [bytes([i]) if isinstance(i, int) else bytes(i) for i in inputs]
    n = len(items) if count is None else count
    return (b"\x02" + struct.pack(">IB", newest_seq, n)
            + b"".join(bytes([len(i)]) + i for i in items))


def input_ack(snapshot_tick: int, newest_seq: int, inputs: list[bytes | int],
              count: int | None = None) -> bytes:
    """0x08 InputAck: snapshot_tick u32, newest_seq u32, count u8 (0-8), inputs."""
    items = [bytes([i]) if isinstance(i, int) else bytes(i) for i in inputs]
    n = len(items) if count is None else count
    return (b"\x08" + struct.pack(">IIB", snapshot_tick, newest_seq, n)
            + b"".join(bytes([len(i)]) + i for i in items))


def _varint(b: bytes, i: int) -> tuple[int, int]:
    """An unsigned LEB128 varint of at most 5 bytes and 32 bits (§5.2)."""
    v = 0
    for k in range(5):
        assert i < len(b), "delta truncated"
        v |= (b[i] & 0x7F) << (7 * k)
        i += 1
        if b[i - 1] & 0x80 == 0:
            assert v <= 0xFFFFFFFF, "varint over 32 bits"
            return v, i
    raise AssertionError("varint longer than 5 bytes")


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """Rally's delta (codec 0, PROTOCOL.md §5.2), written from the document:
    len, then (copy, lit, lit bytes) until len bytes are made."""
    n, i = _varint(delta, 0)
    out = bytearray()
    while len(out) < n:
        copy, i = _varint(delta, i)
        lit, i = _varint(delta, i)
        assert copy or lit, "an operation that makes no progress"
        at = len(out)
        assert at + copy + lit <= n, "a run past len"
        assert at + copy <= len(base), "a copy past the baseline"
        out += base[at:at + copy]
        assert i + lit <= len(delta), "delta truncated"
        out += delta[i:i + lit]
        i += lit
    assert i == len(delta), "trailing bytes after the delta"
    return bytes(out)


def dots_inputs(newest_seq: int, count: int, buttons: int) -> bytes:
    """An Input carrying inputs newest_seq-count+1 .. newest_seq, all `buttons`."""
    return input_msg(newest_seq, [buttons] * count)


def ping(t: int = 1) -> bytes:
    return b"\x03" + struct.pack(">Q", t)


LEAVE = b"\x04"


def resume(token: bytes, last_seq: int, version: int = PROTOCOL_VERSION) -> bytes:
    """0x05 Resume: version u16, token 16 bytes, last_seq u32 (23 bytes)."""
    assert len(token) == 16
    return b"\x05" + struct.pack(">H", version) + token + struct.pack(">I", last_seq)


def app_msg(payload: bytes) -> bytes:
    """0x06 App (reliable): payload = rest."""
    return b"\x06" + payload


def app_unreliable(payload: bytes) -> bytes:
    """0x07 AppUnreliable: payload = rest."""
    return b"\x07" + payload


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
    raw: bytes = b""

    def __getitem__(self, k):
        return self.f[k]

    def __repr__(self):
        return f"Msg({self.kind}, {self.f})"


def _read_str(b: bytes, i: int) -> tuple[str, int]:
    n = b[i]
    assert i + 1 + n <= len(b), f"str runs past the message: {b.hex()}"
    return b[i + 1 : i + 1 + n].decode(), i + 1 + n


# Welcome's fixed part: type, version, player_id, tick_hz, snapshot_every,
# tick, resume_token, resume_window_ms, reliable_seq, client_seq,
# max_message, max_input — then game (str) and app (rest).
_WELCOME_FIXED = struct.Struct(">BHIHHI16sIIIHB")


def decode(b: bytes) -> Msg:
    """One server→client message (§5). Raises on anything malformed."""
    assert len(b) >= 1, "empty server message"
    t = b[0]
    if t == 0x81:
        assert len(b) >= _WELCOME_FIXED.size + 1, f"Welcome too short: {b.hex()}"
        (_, ver, pid, hz, every, tick, token, window_ms, rseq, cseq, max_msg,
         max_input) = _WELCOME_FIXED.unpack_from(b)
        game, end = _read_str(b, _WELCOME_FIXED.size)
        return Msg("welcome", dict(version=ver, player_id=pid, tick_hz=hz, snapshot_every=every,
                                   tick=tick, resume_token=token, resume_window_ms=window_ms,
                                   reliable_seq=rseq, client_seq=cseq, max_message=max_msg,
                                   max_input=max_input, game=game, app=b[end:], size=len(b)), b)
    if t == 0x82:
        (pid,) = struct.unpack(">I", b[1:5])
        name, end = _read_str(b, 5)
        assert end == len(b), f"PlayerJoined with trailing bytes: {b.hex()}"
        return Msg("joined", dict(player_id=pid, name=name), b)
    if t == 0x83:
        assert len(b) == 5, f"PlayerLeft is 5 bytes: {b.hex()}"
        return Msg("left", dict(player_id=struct.unpack(">I", b[1:5])[0]), b)
    if t == 0x84:
        assert len(b) >= 17, f"Snapshot too short: {b.hex()}"
        ack, tick, st = struct.unpack(">IIQ", b[1:17])
        return Msg("snapshot", dict(ack_seq=ack, tick=tick, server_time_us=st, payload=b[17:]), b)
    if t == 0x8A:
        assert len(b) >= 22, f"SnapshotDelta too short: {b.hex()}"
        ack, tick, st, base, codec = struct.unpack(">IIQIB", b[1:22])
        return Msg("snapshot_delta", dict(ack_seq=ack, tick=tick, server_time_us=st,
                                          base_tick=base, codec=codec, delta=b[22:]), b)
    if t == 0x85:
        assert len(b) == 17, f"Pong is 17 bytes: {b.hex()}"
        c, s = struct.unpack(">QQ", b[1:17])
        return Msg("pong", dict(client_time_us=c, server_time_us=s), b)
    if t == 0x86:
        (code,) = struct.unpack(">H", b[1:3])
        reason, end = _read_str(b, 3)
        assert end == len(b), f"Error with trailing bytes: {b.hex()}"
        assert len(reason.encode()) <= 200, reason
        return Msg("error", dict(code=code, reason=reason), b)
    if t == 0x87:
        return Msg("app", dict(payload=b[1:]), b)
    if t == 0x88:
        return Msg("app_unreliable", dict(payload=b[1:]), b)
    if t == 0x89:
        room, at = _read_str(b, 1)
        node, at = _read_str(b, at)
        url, at = _read_str(b, at)
        wt_url, at = _read_str(b, at)
        n = b[at]
        at += 1
        hashes = [b[at + 32 * i: at + 32 * (i + 1)] for i in range(n)]
        assert all(len(h) == 32 for h in hashes), f"Redirect hash cut short: {b.hex()}"
        assert at + 32 * n == len(b), f"Redirect with trailing bytes: {b.hex()}"
        return Msg("redirect", dict(room=room, node=node, url=url, wt_url=wt_url,
                                    cert_hashes=hashes), b)
    raise AssertionError(f"unknown server message type {t:#x}: {b.hex()}")


def is_numbered(m: Msg) -> bool:
    """§7.1: PlayerJoined, PlayerLeft and App (0x87) are the numbered events."""
    return m.kind in ("joined", "left", "app")


# -- the built-in games' bytes (§12) --

DOTS_UP, DOTS_DOWN, DOTS_LEFT, DOTS_RIGHT = 1, 2, 4, 8


def dots_welcome(app: bytes) -> dict:
    """dots Welcome.app: arena_w f32, arena_h f32, speed f32 (12 bytes)."""
    assert len(app) == 12, f"dots Welcome.app is 12 bytes, got {len(app)}"
    w, h, speed = struct.unpack(">fff", app)
    return dict(arena_w=w, arena_h=h, speed=speed)


def dots_players(payload: bytes) -> dict[int, tuple[float, float]]:
    """dots Snapshot.payload: count u16, count × (id u32, x f32, y f32), by id."""
    (count,) = struct.unpack(">H", payload[:2])
    assert len(payload) == 2 + 12 * count, f"dots payload {len(payload)} B for {count} players"
    out = {}
    prev = 0
    for i in range(count):
        pid, x, y = struct.unpack(">Iff", payload[2 + 12 * i : 14 + 12 * i])
        assert pid > prev, "dots snapshot not ordered by id"
        prev = pid
        out[pid] = (x, y)
    return out


def dots_chat(from_id: int, text: bytes) -> bytes:
    """What dots sends every player for a chat App: id u32 + the text."""
    return struct.pack(">I", from_id) + text


def relayed(from_id: int, payload: bytes) -> bytes:
    """relay: App/AppUnreliable from a client reach the others as from u32 + bytes."""
    return struct.pack(">I", from_id) + payload


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


class Server:
    """`rally serve` on 127.0.0.1, UDP and TCP on one ephemeral port.

    `real_cert`: a certificate made by `rally cert` is handed to the server
    as `--cert/--key`, as a user's own certificate would be, so the TCP side
    speaks TLS (HTTPS, WSS, and HTTP/2 by ALPN `h2`); clients then trust it
    as their root (it names localhost and 127.0.0.1)."""

    def __init__(self, *flags: str, real_cert: bool = False):
        if not os.access(RALLY_BIN, os.X_OK):
            raise RuntimeError(f"rally binary not found at {RALLY_BIN} (set RALLY_BIN)")
        self.cert_dir = Path(tempfile.mkdtemp(prefix="rally-adv-"))
        self.stderr_path = self.cert_dir / "stderr.log"
        self.tls = real_cert
        # Set by a test that stops the server on purpose (SIGTERM).
        self.expect_exit = False
        if real_cert:
            subprocess.run([RALLY_BIN, "cert", "--cert-dir", str(self.cert_dir)], check=True,
                           capture_output=True)
            flags = ("--cert", str(self.cert_dir / "dev.pem"),
                     "--key", str(self.cert_dir / "dev.key"), *flags)
        env = dict(os.environ, RALLY_LOG=os.environ.get("RALLY_TEST_LOG", "warn"))
        last = ""
        # With --tcp-listen port 0 the server binds TCP to the port number the
        # OS gave UDP; when that TCP port is taken it exits ("Address already
        # in use"), so a start is retried a few times.
        for _ in range(8):
            self._err = open(self.stderr_path, "wb")
            self.proc = subprocess.Popen(
                # No heartbeat (PROTOCOL.md §7.3) unless a test asks: these
                # peers check exact message sequences and idle timeouts, and
                # a Pong every second would interleave with both.
                [RALLY_BIN, "serve", "--listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0",
                 "--cert-dir", str(self.cert_dir), "--heartbeat", "0", *flags],
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
        self.flags = flags
        self._game: str | None = None

    # -- plumbing --
    @property
    def http(self) -> str:
        if self.tls:
            return f"https://127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        if self.tls:
            return f"wss://127.0.0.1:{self.port}/rally"
        return f"ws://127.0.0.1:{self.port}/rally"

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS client context trusting the server's certificate (real_cert)."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.cert_pem))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.http}/health", timeout=5,
                                    context=self.ssl_context()) as r:
            return json.loads(r.read())

    def terminate(self) -> None:
        """SIGTERM: the server's graceful shutdown."""
        self.expect_exit = True
        self.proc.send_signal(signal.SIGTERM)

    def metrics(self) -> dict:
        return self.health()["metrics"]

    @property
    def game(self) -> str:
        if self._game is None:
            self._game = self.health()["game"]
        return self._game

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
    """How a session ended: messages seen, Error codes, close code/reason.

    For WebTransport, `close_code`/`close_reason` are the QUIC connection's
    close and `close_frame` says which CONNECTION_CLOSE frame the server sent
    (0x1d application, 0x1c transport, None: none came, e.g. idle timeout).
    HTTP streaming has no close code: `stream_end` says how its stream ended
    (`HttpSession.end_kind`: "end" for a clean end of the body)."""

    msgs: list[Msg]
    close_code: int | None
    close_reason: str | None
    close_frame: int | None = None
    stream_end: str | None = None
    statuses: list[int] = field(default_factory=list)

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


async def ws_join(url: str, room: str, name: str, app: bytes = b"", **kw):
    """Opens a WebSocket session and waits for Welcome."""
    ws = await ws_open(url, **kw)
    await ws.send(hello(room, name, app))
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


# The codepoints by which each draft of draft-ietf-webtrans-http3 says
# "WebTransport" in SETTINGS (each draft's §9.2 / §8.2), and the initial
# flow-control limits of drafts 13-16 (§9.2). aioquic knows only the first.
ENABLE_WEBTRANSPORT_DRAFT02 = 0x2B603742
WEBTRANSPORT_MAX_SESSIONS_DRAFT07 = 0xC671706A
WT_MAX_SESSIONS_DRAFT13 = 0x14E9CD29
WT_ENABLED_DRAFT15 = 0x2C7CF000
WT_INITIAL_MAX_DATA = 0x2B61
WT_INITIAL_MAX_STREAMS_UNI = 0x2B64
WT_INITIAL_MAX_STREAMS_BIDI = 0x2B65


class _DialectH3(H3Connection):
    """aioquic's HTTP/3 connection, whose SETTINGS say "WebTransport" in the
    given codepoints instead of aioquic's own ENABLE_WEBTRANSPORT (draft-02).
    H3_DATAGRAM = 1 and aioquic's other settings are kept; the WebTransport
    machinery (streams, datagrams) is aioquic's, whatever is advertised."""

    def __init__(self, quic, wt_settings: dict[int, int]):
        self._wt_settings = wt_settings  # read by __init__'s SETTINGS
        super().__init__(quic, enable_webtransport=True)

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        del settings[ENABLE_WEBTRANSPORT_DRAFT02]
        settings.update(self._wt_settings)
        return settings


class _WtProtocol(QuicConnectionProtocol):
    def __init__(self, *args, wt_settings: dict[int, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if wt_settings is None:
            self.h3 = H3Connection(self._quic, enable_webtransport=True)
        else:
            self.h3 = _DialectH3(self._quic, wt_settings)
        self.events: asyncio.Queue[H3Event | QuicEvent] = asyncio.Queue()
        self.terminated: ConnectionTerminated | None = None
        self.terminated_evt = asyncio.Event()
        # Which CONNECTION_CLOSE frame came from the server (0x1c transport,
        # 0x1d application), if any: aioquic reports its own idle timeout as
        # a ConnectionTerminated too, so the frame is what tells them apart.
        self.close_frame: int | None = None
        handlers = self._quic._QuicConnection__frame_handlers
        for ft in (0x1C, 0x1D):
            orig, epochs = handlers[ft]

            def seen(context, frame_type, buf, _orig=orig):
                if self.close_frame is None:
                    self.close_frame = frame_type
                return _orig(context, frame_type, buf)

            handlers[ft] = (seen, epochs)

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
    Messages read from the reliable stream go to `reliable`, datagrams to
    `datagrams` (raw bytes each); both also go to `inbox` as
    (channel, bytes), channel "stream" or "datagram".
    """

    def __init__(self, server: Server, *, origin: str | None = None,
                 path: str = "/rally", query: str = "", idle_timeout: float = 60.0,
                 protocol: str = "webtransport", wt_settings: dict[int, int] | None = None):
        """`protocol` is the CONNECT's `:protocol`; `wt_settings`, when
        given, replaces aioquic's ENABLE_WEBTRANSPORT in the SETTINGS sent
        (`{}`: no WebTransport codepoint at all)."""
        self.server = server
        self.protocol = protocol
        self.wt_settings = wt_settings
        self.response_headers: dict[bytes, bytes] = {}
        self.origin = origin
        self.path = path + (f"?{query}" if query else "")
        self.idle_timeout = idle_timeout
        self.session_id: int | None = None
        self.stream_id: int | None = None
        self.status: int | None = None
        self._buf = b""
        self.reliable: asyncio.Queue[bytes] = asyncio.Queue()
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()
        self.inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.stream_ended = False
        self._cm = None
        self.proto: _WtProtocol | None = None
        self._pump: asyncio.Task | None = None
        self._headers: asyncio.Queue[HeadersReceived] = asyncio.Queue()

    async def __aenter__(self) -> "WtClient":
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"],
                                max_datagram_frame_size=65536, server_name="localhost",
                                idle_timeout=self.idle_timeout)
        cfg.load_verify_locations(str(self.server.cert_pem))
        self._cm = quic_connect("127.0.0.1", self.server.port, configuration=cfg,
                                create_protocol=functools.partial(
                                    _WtProtocol, wt_settings=self.wt_settings),
                                wait_connected=True)
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
                        msg = self._buf[2 : 2 + n]
                        self.reliable.put_nowait(msg)
                        self.inbox.put_nowait(("stream", msg))
                        self._buf = self._buf[2 + n :]
                    if ev.stream_ended:
                        self.stream_ended = True
            elif isinstance(ev, DatagramReceived):
                if ev.stream_id == self.session_id:
                    self.datagrams.put_nowait(ev.data)
                    self.inbox.put_nowait(("datagram", ev.data))

    async def connect(self, extra_headers: list[tuple[bytes, bytes]] | None = None,
                      timeout: float = 5) -> int:
        """Sends the extended CONNECT; returns the response status."""
        sid = self.quic.get_next_available_stream_id()
        headers = [
            (b":method", b"CONNECT"),
            (b":scheme", b"https"),
            (b":authority", f"localhost:{self.server.port}".encode()),
            (b":path", self.path.encode()),
            (b":protocol", self.protocol.encode()),
        ]
        if self.origin is not None:
            headers.append((b"origin", self.origin.encode()))
        headers += extra_headers or []
        self.connect_stream_id = sid
        self.proto.h3.send_headers(stream_id=sid, headers=headers, end_stream=False)
        self.transmit()
        while True:
            ev = await asyncio.wait_for(self._headers.get(), timeout)
            if ev.stream_id == sid:
                break
        self.response_headers = dict(ev.headers)
        status = int(self.response_headers[b":status"])
        self.status = status
        if status == 200:
            self.session_id = sid
        return status

    async def server_settings(self, timeout: float = 5) -> dict[int, int]:
        """The server's SETTINGS, as aioquic parsed them (it refuses a
        repeated identifier, RFC 9114 §7.2.4, and HTTP/2's reserved ones)."""
        async def wait():
            while self.proto.h3.received_settings is None:
                await asyncio.sleep(0.01)
            return dict(self.proto.h3.received_settings)

        return await asyncio.wait_for(wait(), timeout)

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
        """Bytes as they are on a stream (no framing added); `end` sends FIN."""
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

    def close_connection(self, error_code: int = 0, reason: str = "") -> None:
        """Closes the QUIC connection (an application CONNECTION_CLOSE)."""
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self.transmit()

    async def recv(self, timeout: float = 5) -> Msg:
        return decode(await asyncio.wait_for(self.reliable.get(), timeout))

    async def recv_or_close(self, timeout: float = 5) -> Msg | None:
        """The next stream message, or None once the connection has closed
        and nothing is left to read."""
        if self.reliable.empty() and self.proto.terminated is not None:
            return None
        get = asyncio.ensure_future(self.reliable.get())
        end = asyncio.ensure_future(self.proto.terminated_evt.wait())
        done, _ = await asyncio.wait({get, end}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        end.cancel()
        if get in done:
            return decode(get.result())
        get.cancel()
        if not done:
            raise asyncio.TimeoutError()
        await asyncio.sleep(0)  # the pump may still hold bytes read before the close
        return decode(self.reliable.get_nowait()) if not self.reliable.empty() else None

    async def recv_until(self, pred, timeout: float = 5) -> Msg:
        async def run():
            while True:
                m = decode(await self.reliable.get())
                if pred(m):
                    return m

        return await asyncio.wait_for(run(), timeout)

    async def datagram_until(self, pred, timeout: float = 5) -> Msg:
        async def run():
            while True:
                m = decode(await self.datagrams.get())
                if pred(m):
                    return m

        return await asyncio.wait_for(run(), timeout)

    async def join(self, room: str, name: str, app: bytes = b"") -> Msg:
        st = await self.connect()
        assert st == 200, st
        self.open_stream()
        self.send(hello(room, name, app))
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
        return Outcome(msgs, t.error_code, t.reason_phrase, self.proto.close_frame), t


async def wt_join(server: Server, room: str, name: str, **kw) -> tuple[WtClient, Msg]:
    c = WtClient(server, **kw)
    await c.__aenter__()
    w = await c.join(room, name)
    return c, w


# --------------------------------------------------------------------------
# HTTP streaming peer (httpx: HTTP/1.1 via h11, HTTP/2 via h2) — §11
# --------------------------------------------------------------------------

HTTP_MODES = ("stream", "sse", "poll")


class PostRefused(Exception):
    """A POST that a well-behaved peer expected to be taken was not (204)."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"POST answered {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class StreamEnded(Exception):
    """The session's stream (or, polling, the session) has ended."""


def split_frames(buf: bytes) -> tuple[list[bytes], bytes]:
    """§2 framing: the whole frames at the start of `buf`, and what is left."""
    out = []
    while len(buf) >= 2:
        (n,) = struct.unpack(">H", buf[:2])
        if len(buf) < 2 + n:
            break
        out.append(buf[2 : 2 + n])
        buf = buf[2 + n :]
    return out, buf


def http_client(server: Server, http2: bool = False, **kw) -> httpx.AsyncClient:
    """An httpx client for the server's TCP side: HTTP/1.1 only, or HTTP/2
    only (ALPN `h2`, which needs the server's TLS: `real_cert`)."""
    if http2:
        assert server.tls, "HTTP/2 is served on the TLS listener only (§11)"
    kw.setdefault("timeout", httpx.Timeout(10, read=None))
    return httpx.AsyncClient(http1=not http2, http2=http2,
                             verify=server.ssl_context() or False, **kw)


class HttpSession:
    """One HTTP-streaming session (PROTOCOL.md §11).

    `open()` sends `GET /rally/http[?query][&mode=…]` and returns the status.
    Server messages go to `inbox` (decoded later by the Peer), then one None
    when the session has ended; `ended` is set then and `end_kind` says how:
    "end" (the body ended cleanly: the last chunk on HTTP/1.1, END_STREAM on
    HTTP/2), "reset" (the connection or stream broke off), "404" (polling:
    the session is gone), "dropped" (we dropped it). `leftover` holds bytes
    of a frame the stream ended inside (must stay empty).

    `post(body, seq)` sends one POST (`seq` defaults to the next number) and
    returns the httpx response; `send(msg)` POSTs one framed message and
    returns the status. POSTs go one at a time (§11.2)."""

    def __init__(self, server: Server, *, mode: str = "stream", http2: bool = False,
                 origin: str | None = None, query: str = "", autopoll: bool = True,
                 post_origin: bool = True):
        assert mode in HTTP_MODES, mode
        self.server = server
        self.mode = mode
        self.http2 = http2
        self.origin = origin
        self.post_origin = post_origin
        self.query = query
        self.autopoll = autopoll
        self.client: httpx.AsyncClient | None = None
        self.resp: httpx.Response | None = None
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.body: bytes = b""  # the GET's body when it was not a stream
        self.id: str | None = None
        self.seq = 0  # the last POST number taken
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.end_kind: str | None = None
        self.end_detail = ""
        self.leftover = b""
        self.sse_events: list[dict] = []  # every SSE event: {"event":…, "data":…}
        self.sse_session = asyncio.Event()
        # mode=stream: the keep-alive Pong the body opens with (§11.1),
        # checked and kept out of `inbox`.
        self.opening: Msg | None = None
        self.opened = asyncio.Event()
        self.polls: list[tuple[int, int]] = []  # (status, bytes) of each poll
        self.retried: list[str] = []  # POSTs sent again: their answer never came
        self._task: asyncio.Task | None = None
        self._post_lock = asyncio.Lock()

    @property
    def base(self) -> str:
        return self.server.http

    def url(self) -> str:
        q = [self.query] if self.query else []
        if self.mode != "stream":
            q.append(f"mode={self.mode}")
        return f"{self.base}/rally/http" + (("?" + "&".join(q)) if q else "")

    async def open(self, timeout: float = 5) -> int:
        self.client = http_client(self.server, self.http2)
        headers = {"origin": self.origin} if self.origin is not None else {}
        req = self.client.build_request("GET", self.url(), headers=headers)
        self.resp = await asyncio.wait_for(self.client.send(req, stream=True), timeout)
        self.status = self.resp.status_code
        self.headers = self.resp.headers
        if self.status != 200 or self.mode == "poll":
            self.body = await asyncio.wait_for(self.resp.aread(), timeout)
            await self.resp.aclose()
            if self.status == 200:
                self.id = self.headers.get("rally-session")
                if self.autopoll:
                    self._task = asyncio.create_task(self._poll_loop())
            return self.status
        self.id = self.headers.get("rally-session")
        reader = self._read_stream if self.mode == "stream" else self._read_sse
        self._task = asyncio.create_task(reader())
        if self.mode == "sse":
            await asyncio.wait_for(self.sse_session.wait(), timeout)
        else:
            await asyncio.wait_for(self.opened.wait(), timeout)
            o = self.opening
            assert o is not None, f"the stream ended before its opening Pong: {self.end_kind}"
            assert o.kind == "pong" and o["client_time_us"] == 0, \
                f"the stream does not open with a keep-alive Pong: {o}"
        return self.status

    # -- receiving --
    def _finish(self, kind: str, detail: str = "") -> None:
        if not self.ended.is_set():
            self.end_kind, self.end_detail = kind, detail
            self.ended.set()
            self.inbox.put_nowait(None)

    async def _read_stream(self) -> None:
        buf = b""
        try:
            async for chunk in self.resp.aiter_raw():
                msgs, buf = split_frames(buf + chunk)
                if msgs and not self.opened.is_set():
                    # §11.1: the body opens with a Pong nobody asked for.
                    self.opening = decode(msgs.pop(0))
                    self.opened.set()
                for m in msgs:
                    self.inbox.put_nowait(m)
            self.leftover = buf
            self._finish("end")
        except httpx.HTTPError as e:
            self.leftover = buf
            self._finish("reset", repr(e))
        finally:
            self.opened.set()
            await self.resp.aclose()

    async def _read_sse(self) -> None:
        """text/event-stream (WHATWG HTML §9.2): fields until a blank line."""
        ev: dict = {}
        try:
            async for line in self.resp.aiter_lines():
                if line == "":
                    if ev:
                        self._sse_event(ev)
                    ev = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data" and "data" in ev:
                    ev["data"] += "\n" + value
                else:
                    ev[name] = value
            if ev:
                self.leftover = repr(ev).encode()  # an event the stream ended inside
            self._finish("end")
        except httpx.HTTPError as e:
            self._finish("reset", repr(e))
        finally:
            await self.resp.aclose()

    def _sse_event(self, ev: dict) -> None:
        self.sse_events.append(ev)
        if ev.get("event") == "session":
            self.sse_session.set()
            return
        # Every other event is one server message in base64 with padding
        # (RFC 4648 §4); validate=True refuses any other alphabet.
        data = ev.get("data", "")
        assert len(data) % 4 == 0, f"SSE data is not padded base64: {data!r}"
        self.inbox.put_nowait(base64.b64decode(data, validate=True))

    async def poll(self, wait: bool = False, timeout: float = 30) -> tuple[int, list[bytes]]:
        """One `GET /rally/http/ID[?wait=1]` (§11.3): (status, messages)."""
        r = await self.client.get(f"{self.base}/rally/http/{self.id}" + ("?wait=1" if wait else ""),
                                  timeout=httpx.Timeout(10, read=timeout))
        self.polls.append((r.status_code, len(r.content)))
        if r.status_code != 200:
            return r.status_code, []
        msgs, rest = split_frames(r.content)
        assert rest == b"", f"a poll's body is not whole frames: {r.content.hex()}"
        return 200, msgs

    async def _poll_loop(self) -> None:
        try:
            while True:
                st, msgs = await self.poll(wait=True)
                for m in msgs:
                    self.inbox.put_nowait(m)
                if st == 404:
                    self._finish("404")
                    return
                if st != 200:
                    self._finish("poll-status", str(st))
                    return
        except httpx.HTTPError as e:
            self._finish("reset", repr(e))

    # -- sending --
    async def post(self, body: bytes, seq: int | None = None, *, session_id: str | None = None,
                   headers: dict | None = None, query: str | None = None) -> httpx.Response:
        """One POST /rally/http/ID?seq=N; N defaults to the next number."""
        async with self._post_lock:
            if seq is None:
                seq = self.seq + 1
            h = {"content-type": "application/octet-stream"}
            if self.origin is not None and self.post_origin:
                h["origin"] = self.origin
            h.update(headers or {})
            q = f"seq={seq}" if query is None else query
            url = f"{self.base}/rally/http/{session_id or self.id}?{q}"
            for attempt in range(3):
                try:
                    r = await self.client.post(url, content=body, headers=h)
                    break
                except httpx.RemoteProtocolError as e:
                    # No answer at all (a pooled HTTP/1.1 connection the server
                    # had closed): §11.2's client sends the POST again, same N.
                    self.retried.append(repr(e))
                    if attempt == 2:
                        raise
            if r.status_code == 204 and seq == self.seq + 1:
                self.seq = seq
            return r

    async def send_many(self, msgs: list[bytes]) -> int:
        """One POST carrying every message, each framed (§2); the status."""
        return (await self.post(b"".join(frame(m) for m in msgs))).status_code

    async def send(self, msg: bytes) -> int:
        return await self.send_many([msg])

    async def recv(self, timeout: float = 5) -> Msg:
        b = await asyncio.wait_for(self.inbox.get(), timeout)
        if b is None:
            self.inbox.put_nowait(None)
            raise StreamEnded(self.end_kind)
        return decode(b)

    async def until_closed(self, timeout: float = 10) -> "Outcome":
        await asyncio.wait_for(self.ended.wait(), timeout)
        msgs = []
        while not self.inbox.empty():
            b = self.inbox.get_nowait()
            if b is not None:
                msgs.append(decode(b))
        self.inbox.put_nowait(None)
        return Outcome(msgs, None, None, stream_end=self.end_kind)

    def drop(self) -> None:
        """Goes away without Leave: the stream's reader stops and its response
        is closed (HTTP/1.1: its TCP connection; HTTP/2: RST_STREAM)."""
        if self._task is not None:
            self._task.cancel()
        self._finish("dropped")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.aclose(), 3)
            except (asyncio.TimeoutError, Exception):
                pass

    async def __aenter__(self) -> "HttpSession":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def http_joined(s, room="posts", name="poster", **kw) -> HttpSession:
    """An HTTP session (stream mode) that has sent Hello and read Welcome."""
    h = HttpSession(s, **kw)
    assert await h.open() == 200, h.body
    assert await h.send(hello(room, name)) == 204
    w = await h.recv()
    assert w.kind == "welcome", w
    h.welcome = w
    return h


async def http_pongs_until(h: HttpSession, t: int, timeout: float = 5) -> list[int]:
    """Reads h's stream up to the Pong for `t`; the client_time_us of every
    Pong on the way (the ones before it say which Pings were taken)."""
    seen = []

    async def go():
        while True:
            m = await h.recv(timeout=3600)
            if m.kind == "pong":
                seen.append(m["client_time_us"])
                if m["client_time_us"] == t:
                    return seen

    return await asyncio.wait_for(go(), timeout)


async def http_still_goes_on(h: HttpSession, t: int) -> None:
    """The session takes the next POST (numbered next) and answers its Ping;
    no Pong of a refused POST came before it."""
    assert await h.send(ping(t)) == 204
    assert await http_pongs_until(h, t) == [t], "a refused POST's Ping was answered"


# --------------------------------------------------------------------------
# One player over either transport
# --------------------------------------------------------------------------


TRANSPORTS = ("ws", "wt", "http")


class Peer:
    """A session over `ws` (websockets), `wt` (aioquic) or `http` (HTTP
    streaming, §11, httpx), one interface.

    `send` is the reliable channel; `send_unreliable` a datagram on
    WebTransport (a binary message on WebSocket, a POST on HTTP). `next()`
    returns the next message from either channel; `channel` of the last one
    is "stream", "datagram", "ws" or "http". For `http`, keyword arguments
    go to `HttpSession` (mode="stream"|"sse"|"poll", http2, origin); a POST
    that is not answered 204 raises `PostRefused`, a read after the end of
    the session `StreamEnded`."""

    def __init__(self, server: Server, transport: str, **kw):
        assert transport in TRANSPORTS, transport
        self.server = server
        self.transport = transport
        self.kw = kw
        self.ws = None
        self.wt: WtClient | None = None
        self.http: HttpSession | None = None
        self.welcome: Msg | None = None
        self.channel: str | None = None
        self._stash: list[tuple[str, Msg]] = []

    async def open(self, query: str = "") -> "Peer":
        if self.transport == "ws":
            url = self.server.ws_url + (f"?{query}" if query else "")
            kw = dict(self.kw)
            if self.server.tls:
                kw.setdefault("ssl", self.server.ssl_context())
            self.ws = await ws_open(url, **kw)
        elif self.transport == "http":
            self.http = HttpSession(self.server, query=query, **self.kw)
            st = await self.http.open()
            assert st == 200, (st, self.http.body)
        else:
            self.wt = WtClient(self.server, query=query, **self.kw)
            await self.wt.__aenter__()
            st = await self.wt.connect()
            assert st == 200, st
            self.wt.open_stream()
        return self

    async def join(self, room: str, name: str, app: bytes = b"") -> Msg:
        await self.send(hello(room, name, app))
        w = await self.reply()
        assert w.kind == "welcome", w
        self.welcome = w
        return w

    async def reply(self, timeout: float = 5) -> Msg:
        """The next message on the reliable channel: the answer to Hello or
        Resume. A datagram (a snapshot of the room, say) may overtake it on
        WebTransport; such datagrams are kept for next()."""
        async def run():
            while True:
                m = await self._read(timeout=3600)
                if self.channel != "datagram":
                    return m
                self._stash.append((self.channel, m))

        m = await asyncio.wait_for(run(), timeout)
        if m.kind == "welcome":
            self.welcome = m
        return m

    @property
    def id(self) -> int:
        return self.welcome["player_id"]

    async def send(self, msg: bytes) -> None:
        if self.ws is not None:
            await self.ws.send(msg)
        elif self.http is not None:
            r = await self.http.post(frame(msg))
            if r.status_code != 204:
                raise PostRefused(r.status_code, r.content)
        else:
            self.wt.send(msg)

    async def send_unreliable(self, msg: bytes) -> None:
        if self.ws is not None or self.http is not None:
            await self.send(msg)
        else:
            self.wt.send_datagram(msg)

    async def next(self, timeout: float = 5) -> Msg:
        """The next message from either channel (`channel` says which)."""
        if self._stash:
            self.channel, m = self._stash.pop(0)
            return m
        return await self._read(timeout)

    async def _read(self, timeout: float) -> Msg:
        async def get():
            if self.ws is not None:
                while True:
                    m = await self.ws.recv()
                    if isinstance(m, bytes):
                        self.channel = "ws"
                        return decode(m)
            if self.http is not None:
                self.channel = "http"
                return await self.http.recv(timeout=3600)
            self.channel, b = await self.wt.inbox.get()
            return decode(b)

        return await asyncio.wait_for(get(), timeout)

    async def next_or_close(self, timeout: float = 5) -> Msg | None:
        """The next message, or None once the session has ended (and nothing
        read before the end is left)."""
        if self._stash:
            self.channel, m = self._stash.pop(0)
            return m
        if self.ws is not None:
            try:
                return await self.next(timeout)
            except ConnectionClosed:
                return None
        if self.http is not None:
            try:
                return await self.next(timeout)
            except StreamEnded:
                return None
        c = self.wt
        if c.inbox.empty() and c.proto.terminated is not None:
            return None
        get = asyncio.ensure_future(c.inbox.get())
        end = asyncio.ensure_future(c.proto.terminated_evt.wait())
        try:
            done, _ = await asyncio.wait({get, end}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # A caller that gives up must not leave a reader behind to take
            # (and lose) the next message.
            get.cancel()
            end.cancel()
            raise
        end.cancel()
        if get in done:
            self.channel, b = get.result()
            return decode(b)
        get.cancel()
        if not done:
            raise asyncio.TimeoutError()
        await asyncio.sleep(0)
        if c.inbox.empty():
            return None
        self.channel, b = c.inbox.get_nowait()
        return decode(b)

    async def sync_or_close(self, t: int, timeout: float = 5) -> tuple[list[Msg], Outcome | None]:
        """Like sync(), but a session that ends first is no hang: returns the
        reliable messages read and, if it ended, how (Outcome)."""
        out: list[Msg] = []
        try:
            await self.send(ping(t))
        except (ConnectionClosed, PostRefused):
            pass

        async def run():
            while True:
                m = await self.next_or_close(timeout=3600)
                if m is None:
                    o = await self.until_closed(1)
                    return out, Outcome(out + o.msgs, o.close_code, o.close_reason, o.close_frame)
                if m.kind == "pong" and m["client_time_us"] == t:
                    return out, None
                if self.channel in ("ws", "stream", "http"):
                    out.append(m)

        return await asyncio.wait_for(run(), timeout)

    async def until(self, pred, timeout: float = 5) -> Msg:
        async def run():
            while True:
                m = await self.next(timeout=3600)
                if pred(m):
                    return m

        return await asyncio.wait_for(run(), timeout)

    async def collect_until(self, pred, timeout: float = 5) -> list[Msg]:
        """Every message up to and including the first that matches `pred`."""
        out = []

        async def run():
            while True:
                m = await self.next(timeout=3600)
                out.append(m)
                if pred(m):
                    return out

        return await asyncio.wait_for(run(), timeout)

    async def sync(self, t: int, timeout: float = 5) -> list[Msg]:
        """Ping(t) on the reliable channel; returns the reliable messages read
        before its Pong (every message on WebSocket; stream ones on WT)."""
        await self.send(ping(t))
        out = []

        async def run():
            while True:
                m = await self.next(timeout=3600)
                if m.kind == "pong" and m["client_time_us"] == t:
                    return out
                if self.channel in ("ws", "stream", "http"):
                    out.append(m)

        return await asyncio.wait_for(run(), timeout)

    async def until_closed(self, timeout: float = 10) -> Outcome:
        """Reads to the end of the session: every message, then the close."""
        if self.ws is not None:
            return await ws_until_closed(self.ws, timeout)
        if self.http is not None:
            out = await self.http.until_closed(timeout)
            out.msgs[:0] = [m for _, m in self._stash]
            self._stash.clear()
            return out
        c = self.wt
        await asyncio.wait_for(c.proto.terminated_evt.wait(), timeout)
        await asyncio.sleep(0)
        msgs = [m for _, m in self._stash]
        self._stash.clear()
        while not c.inbox.empty():
            msgs.append(decode(c.inbox.get_nowait()[1]))
        t = c.proto.terminated
        return Outcome(msgs, t.error_code, t.reason_phrase, c.proto.close_frame)

    def drop(self) -> None:
        """Goes away without Leave: TCP reset (WS) / QUIC close, code 0 (WT) /
        the stream's response closed (HTTP)."""
        if self.ws is not None:
            self.ws.transport.abort()
        elif self.http is not None:
            self.http.drop()
        else:
            self.wt.close_connection(0)

    @property
    def closed(self) -> bool:
        if self.ws is not None:
            return self.ws.close_code is not None
        if self.http is not None:
            return self.http.ended.is_set()
        return self.wt.proto.terminated is not None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        elif self.http is not None:
            await self.http.close()
        elif self.wt is not None:
            await self.wt.__aexit__(None, None, None)


async def peer_join(server: Server, transport: str, room: str, name: str,
                    app: bytes = b"", query: str = "", **kw) -> Peer:
    p = Peer(server, transport, **kw)
    await p.open(query)
    await p.join(room, name, app)
    return p


async def read_roster(p: Peer, n: int, timeout: float = 5) -> list[Msg]:
    """The n PlayerJoined that follow a fresh Welcome (numbered 1..n)."""
    out = []
    while len(out) < n:
        m = await p.until(lambda m: m.kind != "snapshot" and m.kind != "app_unreliable", timeout)
        assert m.kind == "joined", f"roster: expected PlayerJoined, got {m!r}"
        out.append(m)
    return out


async def assert_still_serving(server: Server, room: str = "after",
                               transports: tuple[str, ...] = ("ws", "wt")) -> None:
    """A well-behaved peer on each transport still gets Welcome and then, for
    a game with snapshots, a snapshot (dots: one that has it); for relay, a
    Pong."""
    game = server.game
    for transport in transports:
        p = await peer_join(server, transport, f"{room}-{transport}", f"good-{transport}")
        try:
            assert p.id != 0
            assert p.welcome["version"] == PROTOCOL_VERSION
            assert p.welcome["game"] == game
            if game == "relay":
                await p.sync(99)
            else:
                snap = await p.until(lambda m: m.kind == "snapshot", 5)
                if game == "dots":
                    assert p.id in dots_players(snap["payload"])
        finally:
            await p.close()
    assert server.alive()


def run(coro, timeout: float = 60):
    """Runs one test coroutine with a deadline so a hang fails, not stalls."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def misbehave(server: Server, transport: str, *, room: str = "adv", send_hello: bool = True,
                    reliable: list[bytes] = (), unreliable: list[bytes] = (),
                    raw_stream: bytes | None = None, end_stream: bool = False,
                    ws_text: str | None = None, pace: float = 0.0,
                    raw_body: bytes | None = None, one_post: bool = False,
                    timeout: float = 10, **http_kw) -> Outcome:
    """Opens a session, (optionally) joins, then sends what it is told.

    `reliable`: messages on the reliable channel (a binary WebSocket message
    each, or a length-prefixed frame each on the WebTransport stream).
    `unreliable`: WebTransport datagrams (binary messages on WebSocket).
    `raw_stream`: bytes written as they are on the WebTransport stream;
    `end_stream`: then FIN.
    `pace`: seconds between WebSocket messages (0: back to back).
    HTTP streaming (`http`, keywords to `HttpSession`): `reliable` and
    `unreliable` go one message per POST (`one_post`: all in one POST);
    `raw_body`: then one POST of these bytes as they are. The statuses of
    the POSTs after Hello are in `Outcome.statuses`.
    Returns how the server ended the session (the Welcome first, if any).
    """
    if transport == "http":
        async with HttpSession(server, **http_kw) as h:
            st = await h.open()
            assert st == 200, (st, h.body)
            pre = []
            if send_hello:
                assert await h.send(hello(room, "mallory")) == 204
                pre.append(await h.recv())
                assert pre[0].kind == "welcome", pre
            statuses = []
            msgs = list(reliable) + list(unreliable)
            for batch in ([msgs] if one_post and msgs else [[m] for m in msgs]):
                statuses.append(await h.send_many(batch))
                if pace:
                    await asyncio.sleep(pace)
            if raw_body is not None:
                statuses.append((await h.post(raw_body)).status_code)
            out = await h.until_closed(timeout)
            out.msgs[:0] = pre
            out.statuses = statuses
            return out
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
        if raw_stream is not None or end_stream:
            c.send_raw(raw_stream or b"", end=end_stream)
        for d in unreliable:
            c.send_datagram(d)
        out, _ = await c.until_closed(timeout)
        return Outcome(pre + out.msgs, out.close_code, out.close_reason, out.close_frame)


def assert_refused_with(out: Outcome, name: str, *, error_message: bool = True,
                        only: bool = False) -> None:
    """PROTOCOL.md §6: Error(code) on the reliable channel, then close 4000+code, reason = name.

    `only`: the session got nothing but that Error (no Welcome, nothing else)."""
    code = CODE[name]
    if error_message:
        assert out.errors == [code], f"expected one Error {code} ({name}), got {out.msgs!r}"
        if only:
            assert [m.kind for m in out.msgs] == ["error"], f"more than the Error: {out.msgs!r}"
    else:
        assert out.errors == [], out.msgs
        if only:
            assert out.msgs == [], out.msgs
    if out.stream_end is not None:
        # HTTP streaming (§11.4): the Error is the last message, then the
        # stream ends — cleanly, not broken off; there is no close code.
        assert out.stream_end == "end", f"the stream ended by {out.stream_end}, want a clean end"
        if error_message:
            assert out.msgs[-1].kind == "error", f"the Error is not the last message: {out.msgs!r}"
        return
    assert out.close_code == 4000 + code, f"close {out.close_code} {out.close_reason!r}, want {4000 + code}"
    assert out.close_reason == name, f"close reason {out.close_reason!r}, want {name!r}"
    if out.close_frame is not None:
        assert out.close_frame == 0x1D, f"QUIC close frame {out.close_frame:#x}, want application (0x1d)"
