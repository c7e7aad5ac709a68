// Unit tests of window topics in the browser client (broadcaster/static/broadcaster-window.js
// and its use in broadcaster-client.js) under Node's test runner: the merge rule, the seq gap
// rule and the snapshot request, with the fake socket of tests/js/fakes.mjs. The Python client
// is tested against the real service in tests/client/test_client_window.py.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { BroadcasterClient } from "../../broadcaster/static/broadcaster-client.js";
import { WindowKeeper, applyAppend, isWindow } from "../../broadcaster/static/broadcaster-window.js";
import { FakeClock, fakeWebSocketClass } from "./fakes.mjs";

const S = 10000;
const series = (region, values) => ({
  name: "pop_metrics",
  tags: { region },
  columns: ["time", "mean", "p95"],
  values,
});
const WINDOW = {
  window: "1m",
  resolution: "10s",
  from: 0,
  to: 55000,
  asOf: "1970-01-01T00:00:50.000Z",
  series: [
    series("eu-west", [
      [0, 1, 2],
      [4 * S, 3, 4],
      [5 * S, 5, 6],
    ]),
    series("us-east", [[0, 7, 8]]),
  ],
};
const update = (seq, data = WINDOW) => ({
  type: "metrics_update",
  topic: "latency-history",
  seq,
  timestamp: "2026-11-22T00:54:14.345Z",
  stale: false,
  data,
});
const APPEND_DATA = {
  from: S,
  to: 65000,
  asOf: "1970-01-01T00:01:00.000Z",
  series: [
    series("eu-west", [
      [5 * S, 5.5, 6],
      [6 * S, 9, 10],
    ]),
    series("ap-south", [[6 * S, 11, 12]]),
  ],
};
const append = (seq, data = APPEND_DATA) => ({
  type: "metrics_append",
  topic: "latency-history",
  seq,
  timestamp: "2026-11-22T00:54:24.345Z",
  data,
});

describe("applyAppend", () => {
  test("replaces rows of the same time, inserts others in order, drops what is older than from", () => {
    const before = structuredClone(WINDOW);
    const merged = applyAppend(WINDOW, APPEND_DATA);
    assert.deepEqual(WINDOW, before, "the window given is not changed");
    assert.deepEqual(merged, {
      window: "1m",
      resolution: "10s",
      from: S,
      to: 65000,
      asOf: "1970-01-01T00:01:00.000Z",
      series: [
        // Sorted by name, then tags; us-east lost its only row, so it is gone.
        series("ap-south", [[6 * S, 11, 12]]),
        series("eu-west", [
          [4 * S, 3, 4],
          [5 * S, 5.5, 6],
          [6 * S, 9, 10],
        ]),
      ],
    });
    assert.equal(isWindow(merged), true);
    assert.equal(isWindow({ series: [] }), false);
    assert.equal(isWindow(null), false);
  });
});

describe("WindowKeeper", () => {
  test("merges appends in seq order and ignores ones already merged", () => {
    const keeper = new WindowKeeper();
    keeper.onUpdate(update(4));
    const first = keeper.onAppend(append(5));
    assert.equal(first.askSnapshot, false);
    assert.equal(first.update.type, "metrics_update");
    assert.equal(first.update.seq, 5);
    assert.deepEqual(first.update.data, applyAppend(WINDOW, APPEND_DATA));
    assert.deepEqual(keeper.onAppend(append(5)), { update: null, askSnapshot: false });
  });

  test("a gap drops the window and asks once for a snapshot, again only if it is lost", () => {
    const keeper = new WindowKeeper();
    keeper.onUpdate(update(4));
    assert.deepEqual(keeper.onAppend(append(6)), { update: null, askSnapshot: true });
    assert.deepEqual(keeper.onAppend(append(7)), { update: null, askSnapshot: false });
    assert.deepEqual(keeper.onAppend(append(8)), { update: null, askSnapshot: true });
    keeper.onUpdate(update(8)); // the snapshot
    assert.equal(keeper.onAppend(append(9)).update.seq, 9);
  });

  test("an append with no window asks for a snapshot; a plain value forgets the window", () => {
    const keeper = new WindowKeeper();
    assert.deepEqual(keeper.onAppend(append(2)), { update: null, askSnapshot: true });
    keeper.onUpdate(update(3));
    keeper.onUpdate({ ...update(4), data: { n: 1 } });
    assert.deepEqual(keeper.onAppend(append(5)), { update: null, askSnapshot: true });
    assert.throws(() => keeper.onAppend({ type: "metrics_append", topic: 1 }), TypeError);
  });
});

describe("the client and window topics", () => {
  function connected() {
    const clock = new FakeClock();
    const { FakeWebSocket, sockets } = fakeWebSocketClass();
    const client = new BroadcasterClient("ws://127.0.0.1:8765/ws", {
      WebSocket: FakeWebSocket,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      now: clock.now,
      random: () => 0,
      topics: ["latency-history"],
    });
    const updates = [];
    client.addEventListener("update", (event) => updates.push(event.detail));
    client.connect();
    const socket = sockets[0];
    socket.accept({ subscribed: [] });
    socket.sent.length = 0;
    return { client, clock, socket, sockets, updates };
  }

  test("emits the merged window as one update per message", () => {
    const { socket, updates } = connected();
    socket.receive(update(4));
    socket.receive(append(5));
    assert.equal(updates.length, 2);
    assert.deepEqual(updates[0].data, WINDOW);
    assert.equal(updates[1].type, "metrics_update");
    assert.equal(updates[1].seq, 5);
    assert.deepEqual(updates[1].data, applyAppend(WINDOW, APPEND_DATA));
    assert.deepEqual(socket.sent, []);
  });

  test("a gap in seq sends a snapshot request and the snapshot restores the window", () => {
    const { socket, updates } = connected();
    socket.receive(update(4));
    socket.receive(append(6));
    assert.deepEqual(socket.sent, [{ type: "snapshot", topic: "latency-history" }]);
    assert.equal(updates.length, 1, "nothing is emitted for the gap");
    const merged = applyAppend(WINDOW, APPEND_DATA);
    socket.receive(update(6, merged));
    socket.receive(append(7, { ...APPEND_DATA, series: [] }));
    assert.equal(updates.length, 3);
    assert.equal(updates[2].seq, 7);
    assert.deepEqual(updates[2].data.series, merged.series);
  });

  test("a new connection starts without windows: its first append asks for a snapshot", () => {
    const { client, clock, socket, sockets } = connected();
    socket.receive(update(4));
    socket.serverClose(1001, "going away");
    assert.equal(client.status.state, "reconnecting");
    clock.advance(clock.nextDelay()); // the reconnection
    const next = sockets[1];
    next.accept({ subscribed: ["latency-history"] });
    next.sent.length = 0;
    next.receive(append(5));
    assert.deepEqual(next.sent, [{ type: "snapshot", topic: "latency-history" }]);
  });
});
