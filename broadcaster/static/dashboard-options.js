// The dashboard's client options from its query string, e.g. ?baseDelayMs=200&maxAttempts=10.
// A module of its own, without the page's DOM code, so Node's test runner can import it
// (tests/js/dashboard-options.test.mjs).
//
// Why it checks each value with the client's own rules: the URL is anyone's to edit, and a
// value the client refuses would otherwise stop the page from connecting at all, while one it
// should refuse (baseDelayMs=0) would make it reconnect in a tight loop. A bad value is
// ignored, with a console warning, and the option keeps its default.

import { DEFAULT_OPTIONS, checkOptions } from "./broadcaster-client.js";

/** The client options a page URL may set. */
export const QUERY_OPTIONS = Object.freeze([
  "baseDelayMs",
  "maxDelayMs",
  "jitterRatio",
  "maxAttempts",
  "probeIntervalMs",
  "connectTimeoutMs",
  "pingIntervalMs",
  "pongTimeoutMs",
]);

/**
 * Client options from a query string. Values are taken in QUERY_OPTIONS order, each checked
 * together with those already taken (so maxDelayMs is compared with the baseDelayMs given).
 * @param {string} search e.g. location.search
 * @param {(message: string) => void} warn where to report an ignored value
 */
export function optionsFromQuery(search, warn = (message) => console.warn(message)) {
  const params = new URLSearchParams(search);
  const options = {};
  for (const name of QUERY_OPTIONS) {
    const raw = params.get(name);
    if (raw === null) continue;
    const value = raw.trim() === "" ? Number.NaN : Number(raw);
    try {
      checkOptions({ ...DEFAULT_OPTIONS, ...options, [name]: value });
      options[name] = value;
    } catch (error) {
      warn(`ignoring ?${name}=${raw}: ${error.message}`);
    }
  }
  return options;
}
