// broadcaster-window.js: window topics on the browser client (docs/protocol.md, "Window
// topics"). An ES module without dependencies, imported by broadcaster-client.js; the same
// rules as the Python client's broadcaster/client/window.py.
//
// A window topic sends its whole window once, as a metrics_update, then only what changed, as
// metrics_append messages whose seq continues the update's. WindowKeeper keeps each such
// topic's window for one connection and gives back the merged window as one metrics_update,
// so the application receives every topic's value through the same "update" event:
//
//   metrics_update (window data)  -> keep it, deliver it                last = seq
//   metrics_append, seq = last+1  -> merge (applyAppend), deliver it    last = seq
//   metrics_append, seq <= last   -> ignore (already merged)
//   metrics_append, other seq     -> a lost append: drop the window, ask for a snapshot
//   metrics_append, no window     -> ask for a snapshot (the update was lost or not yet sent)
//
// While a snapshot is awaited, appends are ignored; one two or more past the append that asked
// means the answer was lost too (a client that is behind keeps only the newest message per
// topic), and a snapshot is asked for again.

/** Whether a metrics_update's data is a window topic's whole window. */
export function isWindow(data) {
  return (
    data !== null && typeof data === "object" && "window" in data && Array.isArray(data.series)
  );
}

/** What identifies a series of a window: its name and tags (sorted), as a string. */
export function seriesKey(series) {
  const tags = Object.entries(series.tags ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([String(series.name ?? ""), tags]);
}

/**
 * `window` (a window topic's data) with `append` (a metrics_append's data) merged by the
 * protocol's rule; neither is changed. Per series (name + tags): a row whose time is already
 * there replaces it, others are inserted in time order; then every row older than `from` is
 * dropped, and a series left empty. Series come out sorted by name and tags, as the server
 * sends them.
 * @throws {TypeError} a malformed window or append
 */
export function applyAppend(window, append) {
  const merged = new Map(window.series.map((series) => [seriesKey(series), series]));
  for (const series of append.series) {
    const key = seriesKey(series);
    const held = merged.get(key);
    const rows = new Map(held ? held.values.map((row) => [row[0], row]) : []);
    for (const row of series.values) rows.set(row[0], row);
    const values = [...rows.values()].sort((a, b) => a[0] - b[0]);
    merged.set(key, { ...series, values });
  }
  const start = append.from;
  const kept = [];
  for (const key of [...merged.keys()].sort(compareSeriesKeys)) {
    const series = merged.get(key);
    const values = series.values.filter((row) => row[0] >= start);
    if (values.length) kept.push({ ...series, values });
  }
  return { ...window, from: start, to: append.to, asOf: append.asOf, series: kept };
}

/** Name first, then tags, as the server orders series (Python's tuple order). */
function compareSeriesKeys(a, b) {
  const [nameA, tagsA] = JSON.parse(a);
  const [nameB, tagsB] = JSON.parse(b);
  if (nameA !== nameB) return nameA < nameB ? -1 : 1;
  const flatA = tagsA.flat();
  const flatB = tagsB.flat();
  for (let i = 0; i < Math.min(flatA.length, flatB.length); i++) {
    if (flatA[i] !== flatB[i]) return flatA[i] < flatB[i] ? -1 : 1;
  }
  return flatA.length - flatB.length;
}

/** The window topics' windows of one connection (a new connection starts a new keeper). */
export class WindowKeeper {
  constructor() {
    this._held = new Map(); // topic -> { data | null, seq, awaitingSince | null }
  }

  /** A metrics_update: a window replaces what was held; another value forgets it. */
  onUpdate(message) {
    if (isWindow(message.data)) {
      this._held.set(message.topic, { data: message.data, seq: message.seq, awaitingSince: null });
    } else {
      this._held.delete(message.topic);
    }
  }

  /** Stop keeping `topics` (unsubscribed). */
  forget(topics) {
    for (const topic of topics) this._held.delete(topic);
  }

  /**
   * Apply one metrics_append by the rule above.
   * @returns {{update: object | null, askSnapshot: boolean}} the merged window as a
   *   metrics_update to deliver (or null), and whether to send a snapshot request
   * @throws {TypeError} a malformed message
   */
  onAppend(message) {
    const { topic, seq, data } = message;
    const malformed = typeof topic !== "string" || !Number.isInteger(seq);
    if (malformed || data === null || typeof data !== "object") {
      throw new TypeError("malformed metrics_append");
    }
    const held = this._held.get(topic);
    if (held === undefined) {
      this._held.set(topic, { data: null, seq, awaitingSince: seq });
      return { update: null, askSnapshot: true };
    }
    if (held.data === null) {
      if (seq >= held.awaitingSince + 2) {
        held.awaitingSince = seq;
        return { update: null, askSnapshot: true };
      }
      return { update: null, askSnapshot: false };
    }
    if (seq <= held.seq) return { update: null, askSnapshot: false };
    if (seq !== held.seq + 1) {
      this._held.set(topic, { data: null, seq, awaitingSince: seq });
      return { update: null, askSnapshot: true };
    }
    const merged = applyAppend(held.data, data);
    held.data = merged;
    held.seq = seq;
    return {
      update: { ...message, type: "metrics_update", stale: false, data: merged },
      askSnapshot: false,
    };
  }
}
