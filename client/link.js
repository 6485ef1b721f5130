// @ts-check
// Rally transport links: one WebSocket or one WebTransport session each.
// They only move bytes and decode messages (PROTOCOL.md §1, §2); the choice
// between them, handshakes and sessions live in race.js and rally.js.

import { DecodeError, decodeServerMessage, encodeFrame, encodeLeave, FrameDecoder } from './codec.js';

/** @typedef {import('./codec.js').ServerMessage} ServerMessage */
/** @typedef {'webtransport' | 'websocket'} TransportKind */
/** Where a message arrived: a WebTransport datagram or stream, or a WebSocket message. */
/** @typedef {'datagram' | 'stream' | 'websocket'} Channel */
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
