// Rally transport links: one WebSocket or one WebTransport session each.
// They only move bytes and decode messages (PROTOCOL.md §1, §2); the choice
// between them, handshakes and game logic live in rally.js.

import { DecodeError, decodeServerMessage, encodeFrame, encodeLeave, FrameDecoder } from './codec.js';

export const noop = () => {};

export function clockMs() {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

export function nowUs() {
  return Math.round(clockMs() * 1000);
}

/** One WebSocket: every message is a binary WebSocket message. */
export class WebSocketLink {
  constructor(url) {
    this.kind = 'websocket';
    this.url = url;
    this.ws = null;
    this.onMessage = noop; // (msg, channel)
    this.onClose = noop; // ({code, reason, error?})
    this.closed = false;
    /** Resolves when the socket itself has closed (whoever closed it). */
    this.socketClosed = new Promise((resolve) => {
      this._socketClosed = resolve;
    });
  }

  /** Resolves when the socket is open. */
  open() {
    return new Promise((resolve, reject) => {
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
          this._finish({ code: null, reason: 'server sent a text message', error: new DecodeError('text message') });
          this.close(4005, 'unexpected_message');
          return;
        }
        let msg;
        try {
          msg = decodeServerMessage(ev.data);
        } catch (e) {
          this._finish({ code: null, reason: `bad server message: ${e.message}`, error: e });
          this.close(4001, 'bad_message');
          return;
        }
        this.onMessage(msg, 'websocket');
      };
      ws.onerror = noop; // onclose follows with the details we can get
      ws.onclose = (ev) => {
        this._socketClosed();
        if (!opened) reject(new Error(`WebSocket failed to connect (close code ${ev.code})`));
        this._finish({ code: ev.code, reason: ev.reason || `WebSocket closed (${ev.code})` });
      };
    });
  }

  _finish(info) {
    if (this.closed) return;
    this.closed = true;
    this.onClose(info);
  }

  sendReliable(bytes) {
    if (!this.closed && this.ws && this.ws.readyState === 1) this.ws.send(bytes);
  }

  sendUnreliable(bytes) {
    this.sendReliable(bytes);
  }

  /** Sends Leave and closes; resolves once closed or after `waitMs`. */
  leave(waitMs = 300) {
    if (this.closed || !this.ws || this.ws.readyState !== 1) return this.close(1000, 'bye');
    this.ws.send(encodeLeave());
    // The server answers Leave by closing with 1000 "bye" (PROTOCOL.md §7).
    let t;
    const timer = new Promise((resolve) => {
      t = setTimeout(resolve, waitMs);
    });
    return Promise.race([this.socketClosed, timer]).then(() => {
      clearTimeout(t);
      return this.close(1000, 'bye');
    });
  }

  close(code = 1000, reason = 'bye') {
    const ws = this.ws;
    const wasClosed = this.closed;
    this.closed = true;
    if (!wasClosed) this.onClose({ code, reason, local: true });
    if (ws && ws.readyState === 1) {
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    // readyState 0 (connecting): onopen closes it.
    return Promise.resolve();
  }
}

/**
 * One WebTransport session: the first bidirectional stream carries
 * length-prefixed reliable frames; datagrams carry one message each.
 */
export class WebTransportLink {
  constructor(url, certHash) {
    this.kind = 'webtransport';
    this.url = url;
    this.certHashes = certHash ? [].concat(certHash) : null; // Uint8Array(32)s to pin, or null
    this.wt = null;
    this.writer = null;
    this.dgramWriter = null;
    this.onMessage = noop;
    this.onClose = noop;
    this.closed = false;
  }

  /** Resolves once the session is ready and the reliable stream is open. */
  async open() {
    const options = { requireUnreliable: true };
    if (this.certHashes) options.serverCertificateHashes = this.certHashes.map((value) => ({ algorithm: 'sha-256', value }));
    const wt = new WebTransport(this.url, options);
    this.wt = wt;
    // Attach handlers at once: an unobserved rejection would be logged.
    wt.closed.then(
      (info) => this._finish({ code: info?.closeCode ?? null, reason: info?.reason || 'session closed' }),
      (err) => this._finish({ code: err?.streamErrorCode ?? null, reason: err?.message || 'session failed', error: err }),
    );
    await wt.ready;
    if (this.closed) throw new Error('closed');
    const stream = await wt.createBidirectionalStream();
    this.writer = stream.writable.getWriter();
    this.writer.closed.catch(noop);
    const dg = wt.datagrams;
    const writable = typeof dg.createWritable === 'function' ? dg.createWritable() : dg.writable;
    this.dgramWriter = writable.getWriter();
    this.dgramWriter.closed.catch(noop);
    this._readStream(stream.readable.getReader());
    this._readDatagrams(dg.readable.getReader());
  }

  async _readStream(reader) {
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
      this._finish({ code: null, reason: 'reliable stream ended' });
    } catch (e) {
      if (e instanceof DecodeError) {
        this._finish({ code: null, reason: `bad server message: ${e.message}`, error: e });
        this.close(4001, 'bad_message');
      } else {
        this._finish({ code: e?.streamErrorCode ?? null, reason: e?.message || 'reliable stream failed', error: e });
      }
    }
  }

  async _readDatagrams(reader) {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.closed) return;
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

  _finish(info) {
    if (this.closed) return;
    this.closed = true;
    this.onClose(info);
  }

  sendReliable(bytes) {
    if (this.closed || !this.writer) return Promise.resolve();
    return this.writer.write(encodeFrame(bytes)).catch(noop);
  }

  sendUnreliable(bytes) {
    if (this.closed || !this.dgramWriter) return;
    // Datagrams are dropped, not queued, when the session cannot take them.
    this.dgramWriter.write(bytes).catch(noop);
  }

  async leave(waitMs = 300) {
    if (!this.closed && this.writer) {
      const sent = this.writer.write(encodeFrame(encodeLeave())).catch(noop);
      await Promise.race([sent, new Promise((r) => setTimeout(r, waitMs))]);
      // Give the server a moment to close with "bye" itself.
      await Promise.race([this.wt.closed.catch(noop), new Promise((r) => setTimeout(r, waitMs))]);
    }
    return this.close(0, 'bye');
  }

  close(code = 0, reason = 'bye') {
    const wasClosed = this.closed;
    this.closed = true;
    if (!wasClosed) this.onClose({ code, reason, local: true });
    if (this.wt) {
      try {
        this.wt.close({ closeCode: code, reason });
      } catch {
        // Already closed.
      }
    }
    return Promise.resolve();
  }
}
