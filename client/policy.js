// @ts-check
// Connection policies, pure: timing defaults, the reconnect backoff, which
// errors are worth a retry, and RTT smoothing. rally.js applies them.

import { NO_RETRY_CODES } from './codec.js';

/**
 * @typedef {object} Timing
 * @property {number} headStartMs head start of WebTransport before WebSocket is also tried (300)
 * @property {number} webTransportTimeoutMs WebTransport attempt timeout, cert-hash fetch and handshake included (2500)
 * @property {number} webSocketTimeoutMs WebSocket attempt timeout (10000)
 * @property {number} httpHeadStartMs head start of WebSocket before HTTP streaming is also tried (2500)
 * @property {number} httpTimeoutMs HTTP streaming attempt timeout (10000)
 * @property {number} reprobeAfterMs a remembered WebSocket or HTTP streaming win skips the faster tiers for this long (10 min)
 * @property {number} pingIntervalMs ping period (250)
 * @property {number} reconnectBaseMs first reconnect delay before jitter (500)
 * @property {number} reconnectMaxMs reconnect delay cap (10000)
 * @property {number} watchdogMs a session from which nothing at all (snapshots, Pongs, the server's heartbeat) arrives for this long is dropped and reconnected (2000; 0: off; PROTOCOL.md §7.3)
 * @property {number} inputHistory inputs kept for prediction replay (256)
 */

/** Timing defaults; every one can be overridden in connect() options. */
export const DEFAULTS = /** @type {Readonly<Timing>} */ (Object.freeze({
  headStartMs: 300,
  webTransportTimeoutMs: 2500,
  webSocketTimeoutMs: 10000,
  httpHeadStartMs: 2500,
  httpTimeoutMs: 10000,
  reprobeAfterMs: 10 * 60 * 1000,
  pingIntervalMs: 250,
  reconnectBaseMs: 500,
  reconnectMaxMs: 10000,
  watchdogMs: 2000,
  inputHistory: 256,
}));

/**
 * Delay before reconnect attempt `attempt` (0-based): capped exponential,
 * jittered in [50%, 100%].
 * @param {number} attempt
 * @param {{ baseMs?: number, maxMs?: number, random?: () => number }} [opts]
 * @returns {number}
 */
export function backoffDelay(attempt, { baseMs = DEFAULTS.reconnectBaseMs, maxMs = DEFAULTS.reconnectMaxMs, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling * (0.5 + 0.5 * random()));
}

/**
 * Whether a session that ended with this Rally error code may be retried.
 * @param {number} code
 * @returns {boolean}
 */
export function mayRetry(code) {
  return !NO_RETRY_CODES.includes(code);
}

/**
 * Smoothed round-trip time and jitter. RTT as TCP's SRTT (RFC 6298, gain
 * 1/8); jitter as RTP's interarrival jitter (RFC 3550 §6.4.1): the mean
 * difference between consecutive samples, gain 1/16.
 */
export class RttEstimator {
  /** @type {number | null} */
  rtt = null;
  jitter = 0;
  samples = 0;
  /** @internal @type {number | null} */
  last = null;

  /** @param {number} ms */
  sample(ms) {
    if (!(ms >= 0) || !Number.isFinite(ms)) return;
    if (this.rtt === null || this.last === null) {
      this.rtt = ms;
    } else {
      this.rtt += (ms - this.rtt) / 8;
      this.jitter += (Math.abs(ms - this.last) - this.jitter) / 16;
    }
    this.last = ms;
    this.samples++;
  }
}
