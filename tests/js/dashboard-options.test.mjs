// Unit tests of broadcaster/static/dashboard-options.js, the dashboard's query-string options:
//   node --test tests/js/dashboard-options.test.mjs
// A value the client would refuse must be ignored with a warning, never passed on (a tight
// reconnect loop) and never stop the page (a constructor that throws).

import assert from "node:assert/strict";
import { test } from "node:test";

import { BroadcasterClient } from "../../broadcaster/static/broadcaster-client.js";
import { optionsFromQuery } from "../../broadcaster/static/dashboard-options.js";
import { fakeWebSocketClass } from "./fakes.mjs";

function parse(search) {
  const warnings = [];
  const options = optionsFromQuery(search, (message) => warnings.push(message));
  return { options, warnings };
}

test("valid values are taken as numbers", () => {
  const { options, warnings } = parse(
    "?baseDelayMs=200&maxDelayMs=1000&maxAttempts=50&pingIntervalMs=1000" +
      "&pongTimeoutMs=3000&connectTimeoutMs=3000&jitterRatio=0&probeIntervalMs=5000",
  );
  assert.deepEqual(options, {
    baseDelayMs: 200,
    maxDelayMs: 1000,
    jitterRatio: 0,
    maxAttempts: 50,
    probeIntervalMs: 5000,
    connectTimeoutMs: 3000,
    pingIntervalMs: 1000,
    pongTimeoutMs: 3000,
  });
  assert.deepEqual(warnings, []);
});

test("?baseDelayMs=0&probeIntervalMs=0 is ignored with warnings: no tight reconnect loop", () => {
  const { options, warnings } = parse("?baseDelayMs=0&probeIntervalMs=0");
  assert.deepEqual(options, {});
  assert.deepEqual(warnings, [
    "ignoring ?baseDelayMs=0: option baseDelayMs must be > 0, not 0",
    "ignoring ?probeIntervalMs=0: option probeIntervalMs must be > 0, not 0",
  ]);
});

test("every kind of bad value is ignored, and the rest still applies", () => {
  const { options, warnings } = parse(
    "?baseDelayMs=abc&maxDelayMs=&jitterRatio=-1&maxAttempts=0.5&pingIntervalMs=NaN" +
      "&pongTimeoutMs=Infinity&connectTimeoutMs=9e99&probeIntervalMs=7000",
  );
  assert.deepEqual(options, { probeIntervalMs: 7000 });
  assert.equal(warnings.length, 7);
  for (const name of ["baseDelayMs", "maxDelayMs", "jitterRatio", "maxAttempts"]) {
    assert.ok(warnings.some((w) => w.startsWith(`ignoring ?${name}=`)), name);
  }
});

test("maxDelayMs is checked against the baseDelayMs given, else the default", () => {
  assert.deepEqual(parse("?baseDelayMs=200&maxDelayMs=1000").options, {
    baseDelayMs: 200,
    maxDelayMs: 1000,
  });
  const { options, warnings } = parse("?maxDelayMs=1000");
  assert.deepEqual(options, {});
  assert.deepEqual(warnings, [
    "ignoring ?maxDelayMs=1000: option maxDelayMs must be >= baseDelayMs (5000), not 1000",
  ]);
});

test("whatever the query, the options make a client", () => {
  const { FakeWebSocket } = fakeWebSocketClass();
  const queries = [
    "?baseDelayMs=0&probeIntervalMs=0",
    "?baseDelayMs=999999999999&maxDelayMs=1",
    "?maxAttempts=-3&jitterRatio=1e400",
    "?baseDelayMs=100&maxDelayMs=50",
  ];
  for (const query of queries) {
    const { options } = parse(query);
    const client = new BroadcasterClient("ws://127.0.0.1:8765/ws", {
      WebSocket: FakeWebSocket,
      ...options,
    });
    assert.ok(client.options.baseDelayMs > 0, query);
    assert.ok(client.options.probeIntervalMs > 0, query);
  }
});
