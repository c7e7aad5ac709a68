// Unit tests of broadcaster/static/broadcaster-client.js under Node's test runner:
//   node --test tests/js/
// A fake WebSocket and a virtual clock (tests/js/fakes.mjs) make every delay exact: this is
// the unit level. tests/client/test_dashboard_browser.py runs the real client in Chromium against
// the real service.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  BroadcasterClient,
  MAX_DELAY_MS,
  PLANNED_JITTER_FLOOR_MS,
  backoffDelayMs,
  rttQuality,
  statusLabel,
} from "../../broadcaster/static/broadcaster-client.js";
import { FakeClock, fakeWebSocketClass, seededRandom } from "./fakes.mjs";

const URL = "ws://127.0.0.1:8765/ws";

/** A client wired to a fake clock and fake sockets; `random` is 0 unless given. */
function makeClient(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const client = new BroadcasterClient(URL, {
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0,
    ...options,
  });
  const statuses = [];
  const events = [];
  client.addEventListener("status", (event) => statuses.push(event.detail));
  for (const type of ["welcome", "update", "message", "error"]) {
    client.addEventListener(type, (event) => events.push([type, event.detail]));
  }
  const last = () => sockets[sockets.length - 1];
  return { client, clock, sockets, statuses, events, last };
}

/** Advance to the next timer, checking how long it was; returns the waited delay. */
function waitNext(clock) {
  const delay = clock.nextDelay();
  assert.notEqual(delay, null, "a timer should be pending");
  clock.advance(delay);
  return delay;
}

describe("several URLs", () => {
  test("takes a list of URLs, not an empty one", () => {
    const urls = ["ws://10.0.0.1:8765/ws", "ws://10.0.0.2:8765/ws"];
    const { FakeWebSocket } = fakeWebSocketClass();
    const client = new BroadcasterClient(urls, { WebSocket: FakeWebSocket });
    assert.deepEqual(client.urls, urls);
    assert.equal(client.url, urls[0]);
    assert.throws(() => new BroadcasterClient([], { WebSocket: FakeWebSocket }), TypeError);
  });

  test("a client whose node goes away reconnects to the next URL", () => {
    const urls = ["ws://10.0.0.1:8765/ws", "ws://10.0.0.2:8765/ws"];
    const clock = new FakeClock();
    const { FakeWebSocket, sockets } = fakeWebSocketClass();
    const client = new BroadcasterClient(urls, {
      WebSocket: FakeWebSocket,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      now: clock.now,
      random: () => 0,
    });
    client.connect();
    assert.equal(sockets[0].url, urls[0]);
    sockets[0].fail();
    waitNext(clock);
    assert.equal(sockets[1].url, urls[1]);
    sockets[1].fail();
    waitNext(clock);
    assert.equal(sockets[2].url, urls[0]);
    client.close();
  });
});

describe("backoff", () => {
  test("attempt k waits min(maxDelayMs, baseDelayMs * 2**(k-1)) while attempts fail", () => {
    const { client, clock, sockets, last } = makeClient();
    client.connect();
    assert.equal(client.status.state, "connecting");
    assert.equal(statusLabel(client.status), "Connecting");
    last().fail();

    const delays = [];
    const labels = [];
    for (let attempt = 1; attempt <= 5; attempt++) {
      labels.push(statusLabel(client.status));
      const socketsBefore = sockets.length;
      const delay = clock.nextDelay();
      clock.advance(delay - 1);
      assert.equal(sockets.length, socketsBefore, "no attempt before the delay is over");
      clock.advance(1);
      assert.equal(sockets.length, socketsBefore + 1, "the attempt starts when it is over");
      delays.push(delay);
      last().fail();
    }

    assert.deepEqual(delays, [5000, 10000, 20000, 30000, 30000]);
    assert.deepEqual(labels, [1, 2, 3, 4, 5].map((k) => `Reconnecting ${k} of 5`));
    assert.equal(client.status.state, "server_down");
    assert.equal(statusLabel(client.status), "Server down");
    client.close();
  });

  test("backoffDelayMs is capped and options change the schedule", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((k) => backoffDelayMs(k, 5000, 30000)),
      [5000, 10000, 20000, 30000, 30000, 30000],
    );
    const { client, clock, last } = makeClient({ baseDelayMs: 100, maxDelayMs: 250 });
    client.connect();
    const delays = [];
    for (let i = 0; i < 4; i++) {
      last().fail();
      delays.push(waitNext(clock));
    }
    assert.deepEqual(delays, [100, 200, 250, 250]);
    client.close();
  });

  test("a lost connection starts again at attempt 1 after a welcome", () => {
    const { client, clock, last } = makeClient();
    client.connect();
    last().fail();
    waitNext(clock);
    last().fail();
    assert.equal(statusLabel(client.status), "Reconnecting 2 of 5");
    waitNext(clock);
    last().accept();
    assert.equal(statusLabel(client.status), "Connected");
    last().serverClose(4008, "outbox full: client is not reading fast enough");
    assert.equal(statusLabel(client.status), "Reconnecting 1 of 5");
    assert.equal(clock.nextDelay(), 5000);
    assert.deepEqual(client.status.lastClose, {
      code: 4008,
      reason: "outbox full: client is not reading fast enough",
      welcomed: true,
    });
    client.close();
  });
});

describe("jitter", () => {
  test("adds random() * jitterRatio * delay", () => {
    const { client, clock, last } = makeClient({ random: () => 0.75 });
    client.connect();
    last().fail();
    assert.equal(clock.nextDelay(), 5000 + 0.75 * 0.5 * 5000);
    client.close();
  });

  test("spreads many clients evenly over [delay, 1.5 * delay]", () => {
    const random = seededRandom(20261122);
    const clients = 1000;
    const delays = [];
    for (let i = 0; i < clients; i++) {
      const { client, clock, last } = makeClient({ random });
      client.connect();
      last().fail();
      delays.push(clock.nextDelay());
      client.close();
    }
    assert.ok(Math.min(...delays) >= 5000);
    assert.ok(Math.max(...delays) <= 7500);
    assert.ok(new Set(delays).size > clients * 0.99, "nearly every client waits differently");
    // Ten 250 ms buckets, about 100 clients each; a thundering herd would fill one.
    const buckets = Array(10).fill(0);
    for (const delay of delays) buckets[Math.min(9, Math.floor((delay - 5000) / 250))]++;
    for (const count of buckets) assert.ok(count >= 50 && count <= 150, `buckets: ${buckets}`);
  });
});

describe("server_shutdown", () => {
  test("waits reconnectAfterMs plus jitter, and is not a failed attempt", () => {
    const { client, clock, sockets, last } = makeClient({ random: () => 0.5 });
    client.connect();
    last().accept();
    last().receive({
      type: "server_shutdown",
      reason: "server shutting down",
      reconnectAfterMs: 2000,
      timestamp: "2026-11-22T00:55:07.651Z",
    });
    last().serverClose(1001, "server shutting down");

    assert.equal(client.status.state, "reconnecting");
    assert.equal(client.status.planned, true);
    assert.equal(client.status.attempt, 0, "not a counted attempt");
    assert.equal(client.status.retryInMs, 2500);
    assert.equal(statusLabel(client.status), "Reconnecting 1 of 5");
    assert.equal(clock.nextDelay(), 2000 + 0.5 * 0.5 * 2000);
    clock.advance(2499);
    assert.equal(sockets.length, 1);
    clock.advance(1);
    assert.equal(sockets.length, 2);

    last().accept();
    assert.equal(client.status.state, "connected");
    client.close();
  });

  test("reconnectAfterMs 0 still gets jitter, from a 2000 ms floor", () => {
    const { client, clock, last } = makeClient({ random: () => 0.5 });
    client.connect();
    last().accept();
    last().receive({ type: "server_shutdown", reason: "x", reconnectAfterMs: 0 });
    last().serverClose(1001, "server shutting down");
    assert.equal(PLANNED_JITTER_FLOOR_MS, 2000);
    assert.equal(client.status.planned, true);
    assert.equal(clock.nextDelay(), 0.5 * 0.5 * 2000);
    client.close();
  });

  test("a herd told reconnectAfterMs 0 spreads over [0, 1000] ms, not one instant", () => {
    const random = seededRandom(20261129);
    const clients = 1000;
    const delays = [];
    for (let i = 0; i < clients; i++) {
      const { client, clock, last } = makeClient({ random });
      client.connect();
      last().accept();
      last().receive({ type: "server_shutdown", reason: "x", reconnectAfterMs: 0 });
      last().serverClose(1001, "server shutting down");
      delays.push(clock.nextDelay());
      client.close();
    }
    assert.ok(Math.min(...delays) >= 0);
    assert.ok(Math.max(...delays) <= 1000);
    assert.ok(new Set(delays).size > clients * 0.99, "nearly every client waits differently");
    const buckets = Array(10).fill(0); // ten 100 ms buckets, about 100 clients each
    for (const delay of delays) buckets[Math.min(9, Math.floor(delay / 100))]++;
    for (const count of buckets) assert.ok(count >= 50 && count <= 150, `buckets: ${buckets}`);
  });

  test("a failed planned attempt is not counted: attempt 1 comes next", () => {
    const { client, clock, last } = makeClient();
    client.connect();
    last().accept();
    last().receive({ type: "server_shutdown", reason: "x", reconnectAfterMs: 700 });
    last().serverClose(1001, "server shutting down");
    assert.equal(waitNext(clock), 700);
    last().fail(); // the server is still restarting
    assert.equal(client.status.planned, false);
    assert.equal(client.status.attempt, 1);
    assert.equal(statusLabel(client.status), "Reconnecting 1 of 5");
    assert.equal(clock.nextDelay(), 5000);
    for (let attempt = 1; attempt <= 5; attempt++) {
      waitNext(clock);
      last().fail();
    }
    assert.equal(client.status.state, "server_down", "after 5 counted failures, not 6");
    client.close();
  });
});

describe("subscriptions", () => {
  test("resubscribes its topics after every welcome", () => {
    const { client, clock, sockets, last } = makeClient({
      topics: ["overview", "region-latency"],
    });
    client.connect();
    last().accept({ subscribed: ["overview", "regressions"] });
    const expected = [
      { type: "unsubscribe", topics: ["regressions"] },
      { type: "subscribe", topics: ["region-latency"] },
    ];
    assert.deepEqual(
      last().sent.filter((m) => m.type !== "ping"),
      expected,
    );

    last().serverClose(1006, "");
    waitNext(clock);
    assert.equal(sockets.length, 2);
    last().accept({ subscribed: ["overview", "regressions"] });
    assert.deepEqual(
      last().sent.filter((m) => m.type !== "ping"),
      expected,
    );
    client.close();
  });

  test("subscribe() and unsubscribe() are sent at once and remembered across reconnects", () => {
    const { client, clock, last } = makeClient(); // no topics option: the server's defaults
    client.connect();
    last().accept({ subscribed: ["overview", "regressions"] });
    assert.deepEqual(
      last().sent.filter((m) => m.type !== "ping"),
      [],
    );
    client.subscribe(["region-latency"]);
    client.unsubscribe("regressions");
    assert.deepEqual(
      last().sent.filter((m) => m.type !== "ping"),
      [
        { type: "subscribe", topics: ["region-latency"] },
        { type: "unsubscribe", topics: ["regressions"] },
      ],
    );
    last().receive({ type: "subscription_confirmed", topics: ["overview", "region-latency"] });
    assert.deepEqual(client.subscribedTopics, ["overview", "region-latency"]);

    last().fail();
    waitNext(clock);
    last().accept({ subscribed: ["overview", "regressions"] });
    assert.deepEqual(
      last().sent.filter((m) => m.type !== "ping"),
      [
        { type: "unsubscribe", topics: ["regressions"] },
        { type: "subscribe", topics: ["region-latency"] },
      ],
    );
    client.close();
  });

  test("subscribe() before connecting is sent after the welcome", () => {
    const { client, last } = makeClient();
    client.subscribe(["region-latency"]);
    client.connect();
    last().accept({ subscribed: ["overview"] });
    assert.deepEqual(
      last().sent.filter((m) => m.type !== "ping"),
      [{ type: "subscribe", topics: ["region-latency"] }],
    );
    client.close();
  });
});

describe("client pings", () => {
  test("measure the round trip and label its quality", () => {
    const { client, clock, last } = makeClient();
    client.connect();
    last().accept();
    assert.deepEqual(last().sent, [{ type: "ping", id: 1 }], "the first ping goes at once");
    clock.advance(42);
    last().receive({ type: "pong", timestamp: "2026-11-22T00:53:54.424Z", id: 1 });
    assert.equal(client.status.rttMs, 42);
    assert.equal(client.status.quality, "excellent");

    clock.advance(30000 - 42);
    assert.deepEqual(last().sent.at(-1), { type: "ping", id: 2 });
    clock.advance(250);
    last().receive({ type: "pong", id: 999 }); // not ours: ignored
    assert.equal(client.status.rttMs, 42);
    last().receive({ type: "pong", id: 2 });
    assert.equal(client.status.rttMs, 250);
    assert.equal(client.status.quality, "good");
    client.close();
  });

  test("quality thresholds: <= 100 ms excellent, <= 300 ms good, else poor", () => {
    assert.equal(rttQuality(null), null);
    assert.equal(rttQuality(0.4), "excellent");
    assert.equal(rttQuality(100), "excellent");
    assert.equal(rttQuality(100.1), "good");
    assert.equal(rttQuality(300), "good");
    assert.equal(rttQuality(300.1), "poor");
  });

  test("no pong within pongTimeoutMs closes the socket and reconnects", () => {
    const { client, clock, sockets, last } = makeClient();
    client.connect();
    last().accept();
    last().receive({ type: "pong", id: 1 });
    clock.advance(30000); // ping 2 goes out; the server has gone silent
    const silent = last();
    assert.deepEqual(silent.sent.at(-1), { type: "ping", id: 2 });
    clock.advance(9999);
    assert.equal(silent.closedByClient, null);
    assert.equal(client.status.state, "connected");
    clock.advance(1);

    assert.equal(silent.closedByClient.code, 4000);
    assert.equal(statusLabel(client.status), "Reconnecting 1 of 5");
    assert.equal(client.status.connectionId, null);
    assert.equal(client.status.rttMs, null, "the RTT belongs to the lost connection");
    assert.equal(client.status.quality, null);
    waitNext(clock);
    assert.equal(sockets.length, 2);
    last().accept();
    assert.equal(client.status.state, "connected");
    client.close();
  });

  test("pings are sent only while connected", () => {
    const { client, clock, sockets, last } = makeClient();
    client.connect();
    clock.advance(5000);
    assert.deepEqual(last().sent, []);
    last().accept();
    last().serverClose(1000, "");
    clock.advance(60000); // reconnect attempt pending or in progress, never welcomed
    assert.ok(sockets.slice(1).every((socket) => socket.sent.length === 0));
    client.close();
  });
});

describe("circuit breaker", () => {
  test("server_down after maxAttempts; a half-open probe that succeeds reconnects", () => {
    const { client, clock, sockets, statuses, last } = makeClient({
      maxAttempts: 3,
      random: () => 0.5,
    });
    client.connect();
    last().fail();
    for (let attempt = 1; attempt <= 3; attempt++) {
      waitNext(clock);
      last().fail();
    }
    assert.equal(client.status.state, "server_down");
    assert.equal(sockets.length, 4); // the first connection and 3 reconnect attempts
    const probeDelay = 60000 + 0.5 * 0.5 * 60000;
    assert.equal(clock.nextDelay(), probeDelay);

    clock.advance(probeDelay);
    assert.equal(sockets.length, 5);
    assert.equal(client.status.state, "server_down", "still down while the probe runs");
    assert.equal(client.status.probing, true);
    last().fail(); // the probe fails: stay down, probe again later
    assert.equal(client.status.state, "server_down");
    assert.equal(client.status.probing, false);
    assert.equal(client.status.probes, 1);
    assert.equal(clock.nextDelay(), probeDelay);

    clock.advance(probeDelay);
    last().accept({ connectionId: "ws_9_1795308854343" });
    assert.equal(client.status.state, "connected");
    assert.equal(client.status.connectionId, "ws_9_1795308854343");
    assert.ok(statuses.some((status) => status.state === "server_down" && status.probing));

    last().serverClose(1006, ""); // attempts were reset by the welcome
    assert.equal(statusLabel(client.status), "Reconnecting 1 of 3");
    assert.equal(clock.nextDelay(), 5000 + 0.5 * 0.5 * 5000);
    client.close();
  });

  test("probeIntervalMs is configurable", () => {
    const { client, clock, last } = makeClient({ maxAttempts: 1, probeIntervalMs: 1000 });
    client.connect();
    last().fail();
    waitNext(clock);
    last().fail();
    assert.equal(client.status.state, "server_down");
    assert.equal(clock.nextDelay(), 1000);
    client.close();
  });
});

describe("lifecycle and events", () => {
  test("an attempt with no welcome within connectTimeoutMs fails", () => {
    const { client, clock, sockets, last } = makeClient({ connectTimeoutMs: 3000 });
    client.connect();
    const stuck = last();
    clock.advance(2999);
    assert.equal(stuck.closedByClient, null);
    clock.advance(1);
    assert.equal(stuck.closedByClient.code, 4000);
    assert.equal(statusLabel(client.status), "Reconnecting 1 of 5");
    waitNext(clock);
    assert.equal(sockets.length, 2);
    client.close();
  });

  test("close() stops everything and leaves no timer", () => {
    const { client, clock, sockets, last } = makeClient();
    client.connect();
    last().accept();
    client.close();
    assert.deepEqual(last().closedByClient, { code: 1000, reason: "client closed" });
    assert.equal(client.status.state, "closed");
    assert.equal(clock.pending, 0);
    clock.advance(10 * 60000);
    assert.equal(sockets.length, 1);
  });

  test("close() clears the connection's RTT, quality and attempt count", () => {
    const { client, clock, last } = makeClient();
    client.connect();
    last().accept();
    clock.advance(42);
    last().receive({ type: "pong", id: 1 });
    assert.equal(client.status.rttMs, 42);
    client.close();
    assert.equal(client.status.rttMs, null, "no connection, so no round-trip time");
    assert.equal(client.status.quality, null);

    client.connect();
    last().serverClose(1006, "");
    waitNext(clock);
    last().serverClose(1006, "");
    assert.equal(client.status.attempt, 2);
    client.close();
    assert.equal(client.status.attempt, 0, "attempt is 0 outside reconnecting");
    assert.equal(statusLabel(client.status), "Closed");
  });

  test("a listener may close the client from inside any event", () => {
    for (const [type, when] of [
      ["status", (status) => status.state === "reconnecting"],
      ["status", (status) => status.state === "connected"],
      ["status", (status) => status.state === "connecting"],
      ["message", () => true],
      ["welcome", () => true],
    ]) {
      const { client, clock, sockets, last } = makeClient();
      client.addEventListener(type, (event) => {
        if (when(event.detail)) client.close();
      });
      client.connect();
      if (sockets.length) last().accept();
      if (client.status.state !== "closed") last().serverClose(1006, "");
      assert.equal(client.status.state, "closed", `closed from a ${type} event`);
      assert.equal(clock.pending, 0, `no timer left after a close from a ${type} event`);
      const made = sockets.length;
      clock.advance(10 * 60000);
      assert.equal(sockets.length, made, "no reconnection after close()");
    }
  });

  test("dispatches welcome, update, message and error events", () => {
    const { client, events, last } = makeClient();
    client.connect();
    last().accept({ connectionId: "ws_1_1" });
    const update = {
      type: "metrics_update",
      topic: "overview",
      seq: 7,
      timestamp: "2026-11-22T00:54:14.345Z",
      stale: true,
      data: { popCount: 24 },
    };
    last().receive(update);
    last().receive({ type: "error", code: "influxdb_unavailable", topic: "overview" });
    last().receive("not json");
    last().receive({ type: "something_new" }); // unknown types are passed on, not an error

    const kinds = events.map(([type, d]) => `${type}:${d.type === "error" ? d.code : d.type}`);
    assert.deepEqual(kinds, [
      "message:welcome",
      "welcome:welcome",
      "message:metrics_update",
      "update:metrics_update",
      "message:influxdb_unavailable",
      "error:influxdb_unavailable",
      "error:bad_server_message",
      "message:something_new",
    ]);
    assert.deepEqual(events[3][1], update);
    assert.equal(client.status.connectionId, "ws_1_1");
    client.close();
  });

  test("unknown options are refused", () => {
    assert.throws(() => new BroadcasterClient(URL, { baseDelay: 1 }), /unknown option/);
  });
});

describe("option checks", () => {
  const { FakeWebSocket } = fakeWebSocketClass();
  const make = (options) => new BroadcasterClient(URL, { WebSocket: FakeWebSocket, ...options });

  // The same rules as the Python client's ReconnectPolicy and HeartbeatPolicy.
  const bad = [
    [{ baseDelayMs: 0 }, "option baseDelayMs must be > 0, not 0"],
    [{ baseDelayMs: -5 }, "option baseDelayMs must be > 0, not -5"],
    [{ baseDelayMs: Number.NaN }, "option baseDelayMs must be a finite number, not NaN"],
    [{ baseDelayMs: Infinity }, "option baseDelayMs must be a finite number, not Infinity"],
    [{ maxDelayMs: 1000 }, "option maxDelayMs must be >= baseDelayMs (5000), not 1000"],
    [{ maxDelayMs: 2 ** 31 }, `option maxDelayMs must be <= ${MAX_DELAY_MS}, not ${2 ** 31}`],
    [{ jitterRatio: -0.1 }, "option jitterRatio must be >= 0, not -0.1"],
    [{ jitterRatio: Number.NaN }, "option jitterRatio must be a finite number, not NaN"],
    [{ maxAttempts: 0 }, "option maxAttempts must be >= 1, not 0"],
    [{ maxAttempts: 2.5 }, "option maxAttempts must be an integer, not 2.5"],
    [{ probeIntervalMs: 0 }, "option probeIntervalMs must be > 0, not 0"],
    [{ connectTimeoutMs: 0 }, "option connectTimeoutMs must be > 0, not 0"],
    [{ pingIntervalMs: 0 }, "option pingIntervalMs must be > 0, not 0"],
    [{ pongTimeoutMs: -1 }, "option pongTimeoutMs must be > 0, not -1"],
    [{ excellentRttMs: -1 }, "option excellentRttMs must be >= 0, not -1"],
    [{ goodRttMs: 50 }, "option goodRttMs must be >= excellentRttMs (100), not 50"],
  ];
  for (const [options, message] of bad) {
    test(`refuses ${JSON.stringify(options)} with a RangeError naming it`, () => {
      assert.throws(() => make(options), { name: "RangeError", message });
    });
  }

  test("a value that is not a number, or a hook that is not a function, is a TypeError", () => {
    assert.throws(() => make({ baseDelayMs: "5000" }), {
      name: "TypeError",
      message: 'option baseDelayMs must be a number, not "5000"',
    });
    assert.throws(() => make({ random: 0.5 }), {
      name: "TypeError",
      message: "option random must be a function, not 0.5",
    });
  });

  test("accepts the limits and the defaults, and undefined means the default", () => {
    make({});
    make({ baseDelayMs: 1, maxDelayMs: 1, jitterRatio: 0, maxAttempts: 1, probeIntervalMs: 1 });
    make({ maxDelayMs: MAX_DELAY_MS, excellentRttMs: 0, goodRttMs: 0 });
    make({ baseDelayMs: undefined, pingIntervalMs: undefined });
  });

  test("a long jittered wait is capped at MAX_DELAY_MS, not run after 1 ms", () => {
    const { client, clock, last } = makeClient({
      random: () => 0.99,
      baseDelayMs: MAX_DELAY_MS,
      maxDelayMs: MAX_DELAY_MS,
    });
    client.connect();
    last().fail();
    assert.equal(clock.nextDelay(), MAX_DELAY_MS);
    assert.equal(client.status.retryInMs, MAX_DELAY_MS);
    client.close();
  });
});
