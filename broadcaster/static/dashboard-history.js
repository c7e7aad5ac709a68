// What the dashboard's chart and freshness line show, as pure functions of the data: no DOM,
// no uPlot, so Node's test runner imports it (tests/js/dashboard-history.test.mjs).
//
// - chartColumns: a window topic's data (docs/protocol.md, "Window topics": series per region,
//   rows [time ms, mean, p95]) -> uPlot's columns: one shared x (unix seconds, every time any
//   region has a row) and per region its values of one statistic, null where it has no row.
// - regionsInRegression: the regressions topic's data -> the regions to highlight.
// - freshness: the newest data's time and the broadcast interval -> the freshness line; it is
//   `late` once the data is older than two intervals (a tick or more was missed).

/** The statistics of latency-history a chart can draw (its window's columns). */
export const STATS = Object.freeze(["mean", "p95"]);

/** How many broadcast intervals old data may be before the freshness line warns. */
export const LATE_AFTER_INTERVALS = 2;

/**
 * uPlot columns of one statistic of a window, per region (the series' `region` tag).
 * @param {object} window a window topic's data (the client's merged window)
 * @param {string} stat a column of the window's series, e.g. "mean"
 * @returns {{regions: string[], times: number[], values: (number|null)[][]}} regions sorted;
 *   times in unix seconds, ascending; values[i] the column of regions[i], aligned with times
 */
export function chartColumns(window, stat) {
  const byRegion = new Map();
  for (const series of Array.isArray(window?.series) ? window.series : []) {
    const region = series?.tags?.region;
    const column = Array.isArray(series?.columns) ? series.columns.indexOf(stat) : -1;
    if (typeof region !== "string" || column < 1 || !Array.isArray(series.values)) continue;
    const points = byRegion.get(region) ?? new Map();
    for (const row of series.values) {
      if (!Array.isArray(row) || !Number.isFinite(row[0])) continue;
      points.set(row[0], Number.isFinite(row[column]) ? row[column] : null);
    }
    byRegion.set(region, points);
  }
  const regions = [...byRegion.keys()].sort();
  const timesMs = [...new Set(regions.flatMap((r) => [...byRegion.get(r).keys()]))].sort(
    (a, b) => a - b,
  );
  return {
    regions,
    times: timesMs.map((ms) => ms / 1000),
    values: regions.map((r) => timesMs.map((ms) => byRegion.get(r).get(ms) ?? null)),
  };
}

/**
 * The regions that have a PoP in regression, sorted, from the regressions topic's data.
 * @param {object} data {"regressions": [{"pop", "region", ...}, ...]}
 * @returns {string[]}
 */
export function regionsInRegression(data) {
  const found = Array.isArray(data?.regressions) ? data.regressions : [];
  return [...new Set(found.map((r) => r?.region).filter((r) => typeof r === "string"))].sort();
}

/** "1.2 s", "3 min 05 s", "2 h 07 min": an age, short. */
export function formatAge(ageMs) {
  const seconds = Math.max(0, ageMs) / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.floor(seconds);
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, "0")} s`;
  }
  const minutes = Math.floor(whole / 60);
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/** "13:14:50 UTC" for unix ms. */
export function utcClock(unixMs) {
  return `${new Date(unixMs).toISOString().slice(11, 19)} UTC`;
}

/**
 * The freshness line: how old the data on the page is.
 * @param {number|null} dataMs unix ms of the data (the service's read time), null if none yet
 * @param {number} nowMs the browser's clock (a clock ahead of the service's reads as 0 s ago)
 * @param {number|null} intervalMs the service's broadcast interval (the welcome's), if known
 * @returns {{text: string, late: boolean, ageMs: number|null}}
 */
export function freshness(dataMs, nowMs, intervalMs) {
  if (!Number.isFinite(dataMs)) return { text: "Waiting for data", late: false, ageMs: null };
  const ageMs = Math.max(0, nowMs - dataMs);
  const late = Number.isFinite(intervalMs) && ageMs > LATE_AFTER_INTERVALS * intervalMs;
  let text = `Data as of ${utcClock(dataMs)}, ${formatAge(ageMs)} ago`;
  if (late) text += ` (late: the service sends every ${formatAge(intervalMs)})`;
  return { text, late, ageMs };
}
