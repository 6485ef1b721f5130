// @ts-check
// The client's reliable App messages (0x06) and their replay after a resume
// (PROTOCOL.md §7.2). Pure: payloads and sequence numbers in, decisions out;
// the client does the sending.
//
// Invariants:
// - Messages are numbered 1, 2, … for the player's whole life, across
//   resumes; `lastSeq` is the number of the newest.
// - `kept` holds the newest `capacity` messages, oldest first, with
//   consecutive numbers ending at `lastSeq`.
// - `written` is the number of the newest message handed to a live session;
//   those above it were sent while no session was open.

/** @typedef {{ seq: number, payload: Uint8Array }} Numbered */

/** Reliable App messages the reference clients keep for replay (PROTOCOL.md §7.2). */
export const APP_REPLAY_KEEP = 256;

export class AppOutbox {
  /** @internal */
  lastSeq = 0;
  /** @internal */
  written = 0;
  /** @internal @type {Numbered[]} */
  kept = [];
  /** @internal @type {number} */
  capacity;

  /** @param {number} [capacity] how many of the newest messages to keep for replay */
  constructor(capacity = APP_REPLAY_KEEP) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError('capacity must be an integer >= 0');
    this.capacity = capacity;
  }

  /** Number of the newest message (0: none yet). */
  get seq() {
    return this.lastSeq;
  }

  /**
   * Numbers a new message and keeps it for replay.
   * @param {Uint8Array} payload
   * @returns {number} its number
   */
  push(payload) {
    const seq = ++this.lastSeq;
    this.kept.push({ seq, payload });
    if (this.kept.length > this.capacity) this.kept.shift();
    return seq;
  }

  /**
   * Records that every message up to `seq` went to a live session.
   * @param {number} seq
   */
  markWritten(seq) {
    if (seq > this.written) this.written = seq;
  }

  /**
   * After a resume: the game has received messages up to `clientSeq`
   * (Welcome.client_seq). Returns those to send again, oldest first, and how
   * many above `clientSeq` are no longer kept, so are lost.
   * @param {number} clientSeq
   * @returns {{ resend: Numbered[], lost: number }}
   */
  resume(clientSeq) {
    const resend = this.kept.filter((m) => m.seq > clientSeq);
    const lost = Math.max(0, this.lastSeq - clientSeq - resend.length);
    // The server confirmed everything up to clientSeq: nothing below it is
    // ever needed again.
    this.kept = resend.slice();
    return { resend, lost };
  }

  /**
   * After a fresh join (a new player): numbering restarts and nothing is
   * replayed. Returns how many messages were never handed to any session
   * (sent while disconnected), so are lost for sure; those written to the
   * old player's session may or may not have reached its game.
   * @returns {number}
   */
  restart() {
    const neverWritten = this.lastSeq - this.written;
    this.lastSeq = 0;
    this.written = 0;
    this.kept = [];
    return neverWritten;
  }
}
