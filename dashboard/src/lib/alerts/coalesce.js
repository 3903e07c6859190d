/**
 * Reloads triggered by live messages: at most one in flight and one queued, however many triggers arrive.
 * A broadcast only says "something changed"; the API read after it is the truth, so ten messages during one
 * read need one more read, not ten.
 */

/**
 * @param {() => Promise<unknown>} load
 * @returns {{run: () => Promise<void>, readonly busy: boolean}}
 */
export function coalesce(load) {
  /** @type {Promise<void>|null} */
  let inflight = null;
  let queued = false;

  async function loop() {
    try {
      do {
        queued = false;
        try {
          await load();
        } catch {
          // the loader reports its own errors; a failed read must not stop the queued one
        }
      } while (queued);
    } finally {
      inflight = null;
    }
  }

  return {
    run() {
      if (inflight) {
        queued = true;
        return inflight;
      }
      inflight = loop();
      return inflight;
    },
    get busy() {
      return inflight !== null;
    }
  };
}
