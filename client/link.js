// @ts-check
// Rally transport links: one WebSocket, one WebTransport session or one
// HTTP streaming session each. They only move bytes and decode messages
// (PROTOCOL.md §1, §2, §11); the choice between them, handshakes and
// sessions live in race.js and rally.js.

import { DecodeError, ErrorCode, decodeServerMessage, encodeFrame, encodeLeave, FrameDecoder } from './codec.js';

/** @typedef {import('./codec.js').ServerMessage} ServerMessage */
/** @typedef {import('./codec.js').ErrorMsg} ErrorMsg */
/** @typedef {'webtransport' | 'websocket' | 'http'} TransportKind */
/**
 * Where a message arrived: a WebTransport datagram or stream, a WebSocket
 * message, or the body of an HTTP streaming session.
 */
/** @typedef {'datagram' | 'stream' | 'websocket' | 'http'} Channel */
/**
 * How a link ended: the close code (WebSocket close code or WebTransport
 * application code) when there is one, a reason, and the local error if any.
 * @typedef {{ code: number | null, reason: string, error?: unknown, local?: boolean }} CloseInfo
 */
/**
 * @typedef {object} Link
 * @property {TransportKind} kind
 * @property {boolean} closed
 * @property {(msg: ServerMessage, channel: Channel) => void} onMessage
 * @property {(info: CloseInfo) => void} onClose
 * @property {() => Promise<void>} open
 * @property {(bytes: Uint8Array) => void} sendReliable
 * @property {(bytes: Uint8Array) => void} sendUnreliable
 * @property {(waitMs?: number) => Promise<void>} leave
 * @property {(code?: number, reason?: string) => void} close
 */

export const noop = () => {};

/** Milliseconds of a monotonic clock. */
export function clockMs() {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

/** Microseconds of the same clock, for Ping (only this client reads them back). */
export function nowUs() {
  return Math.round(clockMs() * 1000);
}

/**
 * Resolves after `ms`, or when `promise` settles, whichever is first.
 * @param {Promise<unknown>} promise
 * @param {number} ms
 */
function settledOrAfter(promise, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let t;
  const timer = new Promise((resolve) => {
    t = setTimeout(resolve, ms);
  });
  return Promise.race([promise.then(noop, noop), timer]).finally(() => clearTimeout(t));
}

/**
 * Types `bytes` as backed by a plain ArrayBuffer, as WebSocket.send wants:
 * codec.js builds every message in a fresh one (never a SharedArrayBuffer).
 * @param {Uint8Array} bytes
 */
function ownBuffer(bytes) {
  return /** @type {Uint8Array<ArrayBuffer>} */ (bytes);
}

/**
 * One WebSocket: every message is a binary WebSocket message, on the one
 * ordered channel WebSocket has.
 * @implements {Link}
 */
export class WebSocketLink {
  /** @type {TransportKind} */
  kind = 'websocket';
  /** @type {WebSocket | null} */
  ws = null;
  /** @type {(msg: ServerMessage, channel: Channel) => void} */
  onMessage = noop;
  /** @type {(info: CloseInfo) => void} */
  onClose = noop;
  closed = false;
  /** @type {() => void} */
  markSocketClosed = noop;
  /** Resolves when the socket itself has closed (whoever closed it). */
  socketClosed = new Promise((resolve) => {
    this.markSocketClosed = () => resolve(undefined);
  });

  /** @param {string} url */
  constructor(url) {
    this.url = url;
  }

  /**
   * Resolves when the socket is open.
   * @returns {Promise<void>}
   */
  open() {
    return new Promise((resolve, reject) => {
      /** @type {WebSocket} */
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        reject(e);
        return;
      }
      this.ws = ws;
      ws.binaryType = 'arraybuffer';
      let opened = false;
      ws.onopen = () => {
        opened = true;
        if (this.closed) {
          // Closed while connecting: close now (closing a CONNECTING socket
          // makes Chrome log an error, so it was deferred to here).
          ws.close(1000, 'bye');
          return;
        }
        resolve();
      };
      ws.onmessage = (ev) => {
        if (this.closed) return;
        if (typeof ev.data === 'string') {
          this.finish({ code: null, reason: 'server sent a text message', error: new DecodeError('text message') });
          this.close(4005, 'unexpected_message');
          return;
        }
        /** @type {ServerMessage} */
        let msg;
        try {
          msg = decodeServerMessage(ev.data);
        } catch (e) {
          this.finish({ code: null, reason: `bad server message: ${/** @type {Error} */ (e).message}`, error: e });
          this.close(4001, 'bad_message');
          return;
        }
        this.onMessage(msg, 'websocket');
      };
      ws.onerror = noop; // onclose follows with the details we can get
      ws.onclose = (ev) => {
        this.markSocketClosed();
        if (!opened) reject(new Error(`WebSocket failed to connect (close code ${ev.code})`));
        this.finish({ code: ev.code, reason: ev.reason || `WebSocket closed (${ev.code})` });
      };
    });
  }

  /** @param {CloseInfo} info */
  finish(info) {
    if (this.closed) return;
    this.closed = true;
    this.onClose(info);
  }

  /** @param {Uint8Array} bytes */
  sendReliable(bytes) {
    if (!this.closed && this.ws && this.ws.readyState === 1) this.ws.send(ownBuffer(bytes));
  }

  /** @param {Uint8Array} bytes */
  sendUnreliable(bytes) {
    this.sendReliable(bytes);
  }

  /**
   * Sends Leave and closes; resolves once closed or after `waitMs`.
   * @param {number} [waitMs]
   */
  async leave(waitMs = 300) {
    if (!this.closed && this.ws && this.ws.readyState === 1) {
      this.ws.send(ownBuffer(encodeLeave()));
      // The server answers Leave by closing with 1000 "bye" (PROTOCOL.md §7).
      await settledOrAfter(this.socketClosed, waitMs);
    }
    this.close(1000, 'bye');
  }

  /**
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = 'bye') {
    const ws = this.ws;
    if (!this.closed) {
      this.closed = true;
      this.onClose({ code, reason, local: true });
    }
    if (ws && ws.readyState === 1) {
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    // readyState 0 (connecting): onopen closes it.
  }
}

/**
 * The writable side of a session's datagrams, feature-detected: the
 * current spec's `createWritable()` (the only form Safari 26.x has; its
 * `writable` is undefined), else the older `writable` attribute (Chromium),
 * else null, when unreliable messages go on the stream (docs/SAFARI.md).
 * @param {WebTransportDatagramDuplexStream} dg
 * @returns {WritableStream<Uint8Array> | null}
 */
export function datagramWritable(dg) {
  const d = /** @type {{ createWritable?: () => WritableStream<Uint8Array>, writable?: WritableStream<Uint8Array> }} */ (/** @type {unknown} */ (dg));
  if (typeof d.createWritable === 'function') {
    try {
      return d.createWritable();
    } catch {
      // Fall back to the attribute.
    }
  }
  try {
    return d.writable ?? null;
  } catch {
    return null;
  }
}

/**
 * One WebTransport session: the first bidirectional stream carries
 * length-prefixed reliable frames; datagrams carry one message each.
 * @implements {Link}
 */
export class WebTransportLink {
  /** @type {TransportKind} */
  kind = 'webtransport';
  /** @type {WebTransport | null} */
  wt = null;
  /** @type {WritableStreamDefaultWriter<Uint8Array> | null} */
  writer = null;
  /** @type {WritableStreamDefaultWriter<Uint8Array> | null} */
  dgramWriter = null;
  /** @type {(msg: ServerMessage, channel: Channel) => void} */
  onMessage = noop;
  /** @type {(info: CloseInfo) => void} */
  onClose = noop;
  closed = false;

  /**
   * @param {string} url
   * @param {Uint8Array[] | null} certHashes SHA-256 digests to pin, or null to verify normally
   */
  constructor(url, certHashes) {
    this.url = url;
    this.certHashes = certHashes;
  }

  /** Resolves once the session is ready and the reliable stream is open. */
  async open() {
    /** @type {WebTransportOptions} */
    const options = { requireUnreliable: true };
    if (this.certHashes) {
      options.serverCertificateHashes = this.certHashes.map((value) => ({ algorithm: 'sha-256', value: /** @type {BufferSource} */ (value) }));
    }
    const wt = new WebTransport(this.url, options);
    this.wt = wt;
    // Attach handlers at once: an unobserved rejection would be logged.
    wt.closed.then(
      (info) => this.finish({ code: info?.closeCode ?? null, reason: info?.reason || 'session closed' }),
      (err) => this.finish({ code: err?.streamErrorCode ?? null, reason: err?.message || 'session failed', error: err }),
    );
    await wt.ready;
    if (this.closed) throw new Error('closed');
    // The session's one bidirectional stream is the reliable channel (PROTOCOL.md §1).
    const stream = await wt.createBidirectionalStream();
    this.writer = stream.writable.getWriter();
    this.writer.closed.catch(noop);
    const dg = wt.datagrams;
    const writable = datagramWritable(dg);
    this.dgramWriter = writable ? writable.getWriter() : null;
    this.dgramWriter?.closed.catch(noop);
    this.readStream(stream.readable.getReader());
    this.readDatagrams(dg.readable.getReader());
  }

  /** @param {ReadableStreamDefaultReader<Uint8Array>} reader */
  async readStream(reader) {
    const frames = new FrameDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const payload of frames.push(value)) {
          if (this.closed) return;
          this.onMessage(decodeServerMessage(payload), 'stream');
        }
      }
      this.finish({ code: null, reason: 'reliable stream ended' });
    } catch (e) {
      const err = /** @type {{ message?: string, streamErrorCode?: number }} */ (e);
      if (e instanceof DecodeError) {
        this.finish({ code: null, reason: `bad server message: ${e.message}`, error: e });
        this.close(4001, 'bad_message');
      } else {
        this.finish({ code: err?.streamErrorCode ?? null, reason: err?.message || 'reliable stream failed', error: e });
      }
    }
  }

  /** @param {ReadableStreamDefaultReader<Uint8Array>} reader */
  async readDatagrams(reader) {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.closed) return;
        /** @type {ServerMessage} */
        let msg;
        try {
          msg = decodeServerMessage(value);
        } catch {
          // A datagram is one unreliable message; a bad one is skipped, as
          // a lost one would be.
          continue;
        }
        this.onMessage(msg, 'datagram');
      }
    } catch {
      // The session ended; the stream reader or `closed` reports why.
    }
  }

  /** @param {CloseInfo} info */
  finish(info) {
    if (this.closed) return;
    this.closed = true;
    this.onClose(info);
  }

  /** @param {Uint8Array} bytes */
  sendReliable(bytes) {
    if (this.closed || !this.writer) return;
    this.writer.write(encodeFrame(bytes)).catch(noop);
  }

  /** @param {Uint8Array} bytes */
  sendUnreliable(bytes) {
    if (this.closed || !this.wt) return;
    // A datagram must fit one QUIC packet; a bigger message takes the
    // stream, as the server does for its own (PROTOCOL.md §1). The limit
    // is read each time: it follows the path's MTU. Without a way to write
    // datagrams (datagramWritable), everything takes the stream.
    if (!this.dgramWriter || bytes.length > this.wt.datagrams.maxDatagramSize) {
      this.sendReliable(bytes);
      return;
    }
    // Datagrams are dropped, not queued, when the session cannot take them.
    this.dgramWriter.write(bytes).catch(noop);
  }

  /**
   * Sends Leave and closes; resolves once the server closed or after `waitMs`.
   * @param {number} [waitMs]
   */
  async leave(waitMs = 300) {
    if (!this.closed && this.writer && this.wt) {
      await settledOrAfter(this.writer.write(encodeFrame(encodeLeave())), waitMs);
      // Give the server a moment to close with "bye" itself.
      await settledOrAfter(this.wt.closed, waitMs);
    }
    this.close(0, 'bye');
  }

  /**
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 0, reason = 'bye') {
    if (!this.closed) {
      this.closed = true;
      this.onClose({ code, reason, local: true });
    }
    if (this.wt) {
      try {
        this.wt.close({ closeCode: code, reason });
      } catch {
        // Already closed.
      }
    }
  }
}

/**
 * How an HttpLink posts (PROTOCOL.md §11.2). The defaults suit Rally's own
 * defaults; tests shrink the delays.
 * @typedef {object} HttpLinkOptions
 * @property {number} maxPostBytes largest POST body (16384: the server's default --http-max-post); a 413 halves it
 * @property {number} postRetries times a POST that got no answer (or a 5xx) is sent again, with the same number (4)
 * @property {number} postRetryMs delay before the first retry, doubled for each next one (100)
 * @property {number} postTimeoutMs a POST unanswered this long counts as failed and is sent again (5000)
 * @property {number} maxQueuedUnreliableBytes unreliable messages waiting to be posted beyond this are dropped, oldest first (65536)
 */

/** @type {Readonly<HttpLinkOptions>} */
export const HTTP_LINK_DEFAULTS = Object.freeze({
  maxPostBytes: 16 * 1024,
  postRetries: 4,
  postRetryMs: 100,
  postTimeoutMs: 5000,
  maxQueuedUnreliableBytes: 64 * 1024,
});

/**
 * A short message for a failure.
 * @param {unknown} e
 */
function messageOf(e) {
  const m = /** @type {{ message?: unknown }} */ (e)?.message;
  return typeof m === 'string' && m ? m : String(e);
}

/**
 * Concatenates frames into one POST body.
 * @param {Uint8Array[]} parts
 * @param {number} size
 */
function concat(parts, size) {
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * One HTTP streaming session (PROTOCOL.md §11), for networks that pass
 * neither QUIC nor WebSocket: `GET /rally/http` opens it, its response body
 * brings every server message framed as on the WebTransport stream, and the
 * client's messages go up in POSTs bound to the session by its id
 * (`Rally-Session`), one at a time, numbered from 1. Like WebSocket it has
 * one ordered channel: reliable and unreliable messages share one outbox,
 * sent in the order they were written; a POST whose answer was lost is sent
 * again with the same number, which the server does not take twice.
 * @implements {Link}
 */
export class HttpLink {
  /** @type {TransportKind} */
  kind = 'http';
  /** @type {string | null} the session's id (Rally-Session), once open */
  session = null;
  /** @type {(msg: ServerMessage, channel: Channel) => void} */
  onMessage = noop;
  /** @type {(info: CloseInfo) => void} */
  onClose = noop;
  closed = false;
  /** Number of the last POST the server took (204). */
  seq = 0;
  /** POSTs sent, retries included. */
  posts = 0;
  /** @type {{ frame: Uint8Array, reliable: boolean }[]} framed messages waiting to be posted, oldest first */
  queue = [];
  /** Unreliable messages dropped because too many waited. */
  dropped = 0;
  posting = false;
  /** Leave is queued: nothing more is sent, and the stream's end is normal. */
  leaving = false;
  /** @type {ErrorMsg | null} the last fatal Error the stream brought (its code is the close code, §11.4) */
  lastError = null;
  /** Aborts the stream and every POST. */
  abort = new AbortController();
  /** @type {(() => void)[]} */
  idleWaiters = [];
  /** @type {() => void} */
  markStreamEnded = noop;
  /** Resolves when the response body has ended or failed (or was never opened and the link closed). */
  streamEnded = new Promise((resolve) => {
    this.markStreamEnded = () => resolve(undefined);
  });

  /**
   * @param {string} url the session URL, `http(s)://HOST:PORT/rally/http[?token=…]`
   * @param {Partial<HttpLinkOptions>} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...HTTP_LINK_DEFAULTS, ...options };
    this.maxPostBytes = this.options.maxPostBytes;
    // keepalive lets the POST carrying Leave outlive a page being closed;
    // only same-origin, where no CORS preflight is needed.
    this.sameOrigin = globalThis.location?.origin === new URL(url).origin;
  }

  /**
   * Resolves once the server answered the GET with a session: its id is
   * known and its body is being read.
   * @returns {Promise<void>}
   */
  async open() {
    /** @type {Response} */
    let res;
    try {
      res = await fetch(this.url, { cache: 'no-store', signal: this.abort.signal });
    } catch (e) {
      throw new Error(`HTTP streaming request failed: ${messageOf(e)}`);
    }
    const refuse = (/** @type {string} */ why) => {
      res.body?.cancel().catch(noop);
      return new Error(why);
    };
    if (this.closed) throw refuse('closed');
    if (res.status !== 200) throw refuse(`HTTP streaming refused: HTTP ${res.status}`);
    const id = res.headers.get('rally-session');
    if (!id || !/^[0-9a-f]{32}$/i.test(id)) throw refuse('HTTP streaming: the response has no Rally-Session header');
    if (!res.body) throw refuse('HTTP streaming unavailable: the response body cannot be read as a stream');
    this.session = id;
    this.readStream(res.body.getReader());
    this.kick();
  }

  /** @param {ReadableStreamDefaultReader<Uint8Array>} reader */
  async readStream(reader) {
    const frames = new FrameDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const payload of frames.push(value)) {
          if (this.closed) return;
          const msg = decodeServerMessage(payload);
          // Keep-alive (§11.4): a Pong nobody asked for, to keep proxies
          // from cutting a quiet stream.
          if (msg.type === 'pong' && msg.clientTimeUs === 0) continue;
          if (msg.type === 'error' && msg.code !== ErrorCode.resume_failed) this.lastError = msg;
          this.onMessage(msg, 'http');
        }
      }
      if (frames.pending > 0) {
        this.end({ code: null, reason: 'HTTP stream ended inside a frame', error: new DecodeError('truncated frame') });
        return;
      }
      // The session ends when its stream ends: after Error when there was
      // one (its code is the close code, §6), else normally.
      const e = this.lastError;
      if (e) this.end({ code: 4000 + e.code, reason: e.codeName });
      else if (this.leaving) this.end({ code: 1000, reason: 'bye' });
      else this.end({ code: null, reason: 'HTTP stream ended' });
    } catch (e) {
      if (this.closed) return;
      if (e instanceof DecodeError) this.end({ code: null, reason: `bad server message: ${e.message}`, error: e });
      else this.end({ code: null, reason: `HTTP stream failed: ${messageOf(e)}`, error: e });
    } finally {
      this.markStreamEnded();
    }
  }

  /**
   * Reports `info` (once) and stops everything.
   * @param {CloseInfo} info
   */
  end(info) {
    if (!this.closed) {
      this.closed = true;
      this.onClose(info);
    }
    this.abort.abort();
    this.wake();
  }

  /** Resolves anyone waiting for the outbox to drain. */
  wake() {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  /** Resolves when nothing waits to be posted and no POST is in flight (or the link closed). */
  idle() {
    if (this.closed || (!this.posting && this.queue.length === 0)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(() => resolve(undefined)));
  }

  /**
   * @param {Uint8Array} bytes
   * @param {boolean} reliable
   */
  enqueue(bytes, reliable) {
    if (this.closed || this.leaving) return;
    this.queue.push({ frame: encodeFrame(bytes), reliable });
    if (!reliable) this.trimUnreliable();
    this.kick();
  }

  /** Drops the oldest unreliable messages while too many bytes of them wait. */
  trimUnreliable() {
    let bytes = 0;
    for (const e of this.queue) if (!e.reliable) bytes += e.frame.length;
    while (bytes > this.options.maxQueuedUnreliableBytes) {
      const i = this.queue.findIndex((e) => !e.reliable);
      if (i < 0) break;
      bytes -= this.queue[i].frame.length;
      this.queue.splice(i, 1);
      this.dropped++;
    }
  }

  /** Starts posting unless a POST is in flight (it carries on by itself). */
  kick() {
    if (this.posting || this.session === null || this.closed || this.queue.length === 0) return;
    this.pump().catch((e) => this.end({ code: null, reason: `HTTP streaming failed: ${messageOf(e)}`, error: e }));
  }

  /** Posts what waits, one POST at a time, as much as fits one body. */
  async pump() {
    this.posting = true;
    try {
      while (!this.closed && this.queue.length > 0) {
        let size = 0;
        let n = 0;
        while (n < this.queue.length && (n === 0 || size + this.queue[n].frame.length <= this.maxPostBytes)) {
          size += this.queue[n].frame.length;
          n++;
        }
        const batch = this.queue.splice(0, n);
        const verdict = await this.post(concat(batch.map((e) => e.frame), size));
        if (verdict === 'too-large') {
          if (batch.length > 1) {
            // Nothing of it was taken (§11.2): send it again in smaller POSTs.
            this.queue.unshift(...batch);
            this.maxPostBytes = Math.max(1, Math.floor(size / 2));
            continue;
          }
          this.end({ code: null, reason: `a message of ${size - 2} bytes is larger than the server's POST limit (HTTP 413)` });
        }
        if (verdict !== 'ok') return;
      }
    } finally {
      this.posting = false;
      if (this.closed || this.queue.length === 0) this.wake();
    }
  }

  /** @param {number} n */
  postUrl(n) {
    const u = new URL(this.url);
    u.pathname = `${u.pathname.replace(/\/$/, '')}/${this.session}`;
    u.search = `?seq=${n}`;
    return u.toString();
  }

  /**
   * Sends one body as the next POST, again with the same number while it
   * gets no answer (bounded).
   * @param {Uint8Array} body
   * @returns {Promise<'ok' | 'too-large' | 'ended'>}
   */
  async post(body) {
    const n = this.seq + 1;
    let delay = this.options.postRetryMs;
    for (let attempt = 1; ; attempt++) {
      const ctl = new AbortController();
      const stop = () => ctl.abort();
      this.abort.signal.addEventListener('abort', stop);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        ctl.abort();
      }, this.options.postTimeoutMs);
      let status = 0;
      let why = '';
      try {
        this.posts++;
        const res = await fetch(this.postUrl(n), {
          method: 'POST',
          body: ownBuffer(body),
          headers: { 'content-type': 'application/octet-stream' },
          cache: 'no-store',
          signal: ctl.signal,
          keepalive: this.leaving && this.sameOrigin,
        });
        status = res.status;
        await res.arrayBuffer().catch(noop);
      } catch (e) {
        why = timedOut ? `no answer within ${this.options.postTimeoutMs} ms` : messageOf(e);
      } finally {
        clearTimeout(timer);
        this.abort.signal.removeEventListener('abort', stop);
      }
      if (this.closed) return 'ended';
      if (status >= 200 && status < 300) {
        this.seq = n;
        return 'ok';
      }
      if (status === 413) return 'too-large';
      if (status === 400 || status === 403 || status === 404 || status === 409) {
        // 404: the session has ended; 400 (a bad frame) ends it too. The
        // stream says how (its Error), if it ends within a moment.
        await settledOrAfter(this.streamEnded, 1000);
        const what = status === 404 ? 'the session has ended' : status === 409 ? 'POST out of sequence' : status === 403 ? 'origin not allowed' : 'bad POST body';
        this.end({ code: null, reason: `HTTP streaming: ${what} (POST ${n}: HTTP ${status})` });
        return 'ended';
      }
      if (attempt > this.options.postRetries) {
        this.end({ code: null, reason: `HTTP streaming: POST ${n} failed ${attempt} times (${why || `HTTP ${status}`})` });
        return 'ended';
      }
      await settledOrAfter(this.streamEnded, delay);
      delay *= 2;
      if (this.closed) return 'ended';
    }
  }

  /** @param {Uint8Array} bytes */
  sendReliable(bytes) {
    this.enqueue(bytes, true);
  }

  /** @param {Uint8Array} bytes */
  sendUnreliable(bytes) {
    this.enqueue(bytes, false);
  }

  /**
   * Sends Leave and closes; resolves once the server ended the stream or
   * after `waitMs` for the POST and as long again for the stream.
   * @param {number} [waitMs]
   */
  async leave(waitMs = 300) {
    if (!this.closed && this.session !== null && !this.leaving) {
      // Nothing is sent after Leave; its POST may outlive the page.
      this.leaving = true;
      this.queue.push({ frame: encodeFrame(encodeLeave()), reliable: true });
      this.kick();
      await settledOrAfter(this.idle(), waitMs);
      // The server ends the stream after Leave (PROTOCOL.md §11.4).
      await settledOrAfter(this.streamEnded, waitMs);
    }
    this.close(1000, 'bye');
  }

  /**
   * Closes at once: aborts the stream and any POST in flight. Without Leave
   * the server keeps the player for resume.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = 'bye') {
    if (!this.closed) {
      this.closed = true;
      this.onClose({ code, reason, local: true });
    }
    this.abort.abort();
    this.markStreamEnded();
    this.wake();
  }
}
