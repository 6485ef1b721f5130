// @ts-check
// Client-side prediction (PROTOCOL.md §5, Snapshot): start from your own
// state as the server last stated it, then re-apply the inputs it had not
// handed to the game yet. Pure: the game supplies the one step it already
// runs on the server, as a function that returns a new state.

/** @typedef {{ seq: number, bytes: Uint8Array }} SentInput */

/**
 * Your predicted state: `apply` run over every input numbered above
 * `ackSeq`, oldest first, starting from `state`. `apply` must return a new
 * state rather than change its argument: `state` is the snapshot's.
 * @template S
 * @param {S} state your own state from the snapshot
 * @param {number} ackSeq the snapshot's ack_seq
 * @param {{ unackedInputs(ackSeq: number): SentInput[] }} client where the sent inputs are (a RallyClient)
 * @param {(state: S, input: Uint8Array) => S} apply one input's effect, as the server's game applies it
 * @returns {S}
 */
export function predict(state, ackSeq, client, apply) {
  let s = state;
  for (const input of client.unackedInputs(ackSeq)) s = apply(s, input.bytes);
  return s;
}
