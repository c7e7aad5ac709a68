// Unit tests of the browser client's tokens (broadcaster/static/broadcaster-client.js) under
// Node's test runner, with the fake WebSocket and virtual clock of tests/js/fakes.mjs: the auth
// first message, the provider asked per socket, the in-band refresh and its timing, and what
// the close codes 4001, 4005 and 4009 do. tests/client/test_dashboard_browser.py runs the same
// code in Chromium against the real service with a real token.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  BroadcasterClient,
  CloseCode,
  REFRESH_ANSWER_TIMEOUT_MS,
  statusLabel,
} from "../../broadcaster/static/broadcaster-client.js";
import { FakeClock, fakeWebSocketClass } from "./fakes.mjs";

const URL = "ws://127.0.0.1:8765/ws";
const EPOCH_MS = Date.parse("2026-11-22T00:00:00.000Z");

/** A client on a fake clock whose wall clock starts at EPOCH_MS; its pings never time out
 * (these tests are about tokens, and leave pings unanswered). */
function makeClient(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const client = new BroadcasterClient(URL, {
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    dateNow: () => EPOCH_MS + clock.nowMs,
    random: () => 0,
    pingIntervalMs: 10 ** 9,
    pongTimeoutMs: 10 ** 9,
    ...options,
  });
  const events = [];
  for (const type of ["error", "stopped", "welcome"]) {
    client.addEventListener(type, (event) => events.push([type, event.detail]));
  }
  const last = () => sockets[sockets.length - 1];
  return { client, clock, sockets, events, last };
}

/** An ISO time `ms` after the fake wall clock's now. */
function inMs(clock, ms) {
  return new Date(EPOCH_MS + clock.nowMs + ms).toISOString();
}

/** Let pending promise callbacks (an async tokenProvider's answer) run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

function counter(prefix = "token") {
  const given = [];
  const provider = () => {
    given.push(`${prefix}-${given.length + 1}`);
    return given[given.length - 1];
  };
  return { provider, given };
}

const auths = (socket) => socket.sent.filter((message) => message.type === "auth");

describe("sending the token", () => {
  test("a fixed token is the first message of every socket, not in the URL", () => {
    const { client, last } = makeClient({ token: "the.jwt" });
    client.connect();
    last().open();
    assert.deepEqual(last().sent, [{ type: "auth", token: "the.jwt" }]);
    assert.equal(last().url, URL);
    last().accept();
    assert.equal(client.status.state, "connected");
    client.close();
  });

  test("without a token nothing is sent before the welcome", () => {
    const { client, last } = makeClient();
    client.connect();
    last().open();
    assert.deepEqual(last().sent, []);
    client.close();
  });

  test("a provider (a Promise too) is asked again for every socket", async () => {
    const given = [];
    const provider = async () => {
      given.push(`token-${given.length + 1}`);
      return given[given.length - 1];
    };
    const { client, clock, sockets, last } = makeClient({ tokenProvider: provider });
    client.connect();
    last().open();
    await settle();
    last().accept();
    last().fail();
    clock.advance(clock.nextDelay());
    last().open();
    await settle();
    assert.deepEqual(
      sockets.map((socket) => auths(socket)[0]?.token),
      ["token-1", "token-2"],
    );
    client.close();
  });

  test("a provider that throws fails the attempt, which is retried with backoff", async () => {
    let calls = 0;
    const provider = () => {
      calls += 1;
      if (calls === 1) throw new Error("identity provider unreachable");
      return "token-ok";
    };
    const { client, clock, events, last } = makeClient({ tokenProvider: provider });
    client.connect();
    last().open();
    await settle();
    assert.equal(client.status.state, "reconnecting");
    assert.equal(client.status.attempt, 1);
    const [type, error] = events.find(([kind]) => kind === "error");
    assert.equal(type, "error");
    assert.equal(error.code, "token_unavailable");
    assert.match(error.message, /identity provider unreachable/);
    assert.equal(clock.nextDelay(), 5000);
    clock.advance(5000);
    last().open();
    await settle();
    assert.deepEqual(auths(last()), [{ type: "auth", token: "token-ok" }]);
    client.close();
  });

  test("token and tokenProvider together, or an empty token, are refused", () => {
    assert.throws(() => makeClient({ token: "a", tokenProvider: () => "b" }), TypeError);
    assert.throws(() => makeClient({ token: "" }), TypeError);
    assert.throws(() => makeClient({ tokenProvider: "not a function" }), TypeError);
  });
});

describe("refreshing in-band", () => {
  test("after 80 % of what is left, again after each auth_refreshed", async () => {
    const { provider, given } = counter();
    const { client, clock, last } = makeClient({ tokenProvider: provider });
    client.connect();
    last().open();
    await settle();
    last().accept({ authExpiresAt: inMs(clock, 100_000), identity: { sub: "a", tenant: null } });
    assert.equal(client.status.authExpiresAt, inMs(clock, 100_000));
    clock.advance(79_999);
    await settle();
    assert.equal(auths(last()).length, 1, "no refresh before 80 s");
    clock.advance(1);
    await settle();
    assert.deepEqual(auths(last())[1], { type: "auth", token: "token-2" });
    last().receive({ type: "auth_refreshed", authExpiresAt: inMs(clock, 100_000) });
    assert.equal(client.status.authExpiresAt, inMs(clock, 100_000));
    clock.advance(80_000);
    await settle();
    assert.deepEqual(auths(last())[2], { type: "auth", token: "token-3" });
    assert.deepEqual(given, ["token-1", "token-2", "token-3"]);
    assert.equal(client.status.state, "connected");
    client.close();
  });

  test("a refused refresh is reported, the connection goes on, and it is tried again", async () => {
    const { provider } = counter();
    const { client, clock, events, last } = makeClient({ tokenProvider: provider });
    client.connect();
    last().open();
    await settle();
    last().accept({ authExpiresAt: inMs(clock, 100_000) });
    clock.advance(80_000);
    await settle();
    last().receive({ type: "error", code: "invalid_token", message: "signature mismatch" });
    assert.equal(client.status.authError, "invalid_token: signature mismatch");
    assert.equal(client.status.state, "connected");
    assert.ok(events.some(([type, detail]) => type === "error" && detail.code === "invalid_token"));
    // 20 s left: tried again after 16 s.
    clock.advance(15_999);
    await settle();
    assert.equal(auths(last()).length, 2);
    clock.advance(1);
    await settle();
    assert.equal(auths(last()).length, 3);
    client.close();
  });

  test("a refresh with no answer fails after its timeout", async () => {
    const { provider } = counter();
    const { client, clock, last } = makeClient({ tokenProvider: provider });
    client.connect();
    last().open();
    await settle();
    last().accept({ authExpiresAt: inMs(clock, 1_000_000) });
    clock.advance(800_000);
    await settle();
    clock.advance(REFRESH_ANSWER_TIMEOUT_MS);
    assert.equal(client.status.authError, `no answer within ${REFRESH_ANSWER_TIMEOUT_MS} ms`);
    client.close();
  });

  test("a fixed token is never refreshed", () => {
    const { client, clock, last } = makeClient({ token: "fixed" });
    client.connect();
    last().accept({ authExpiresAt: inMs(clock, 100_000) });
    clock.advance(99_000);
    assert.equal(auths(last()).length, 1);
    client.close();
  });
});

describe("close codes", () => {
  for (const [code, reason, label] of [
    [CloseCode.AUTH_FAILED, "invalid token: signature verification failed", "Not authorized"],
    [CloseCode.REPLACED, "replaced by a newer connection", "Replaced"],
  ]) {
    test(`${code} stops: no reconnection, a stopped event with the reason`, () => {
      const { client, clock, sockets, events, last } = makeClient({ token: "t" });
      client.connect();
      last().accept();
      last().serverClose(code, reason);
      assert.equal(client.status.state, "stopped");
      assert.equal(statusLabel(client.status), label);
      assert.deepEqual(client.status.lastClose, { code, reason, welcomed: true });
      assert.deepEqual(
        events.filter(([type]) => type === "stopped"),
        [["stopped", { code, reason }]],
      );
      assert.equal(clock.pending, 0, "no timer left: nothing will reconnect");
      clock.advance(3_600_000);
      assert.equal(sockets.length, 1);
      client.connect(); // the page may start again, e.g. with a new token
      assert.equal(sockets.length, 2);
      client.close();
    });
  }

  test("4001 before any welcome (no token) stops too", () => {
    const { client, clock, sockets, last } = makeClient();
    client.connect();
    last().open();
    last().serverClose(CloseCode.AUTH_FAILED, "no token");
    assert.equal(client.status.state, "stopped");
    assert.deepEqual(client.status.lastClose, {
      code: 4001,
      reason: "no token",
      welcomed: false,
    });
    clock.advance(3_600_000);
    assert.equal(sockets.length, 1);
  });

  test("4005 reconnects soon, planned, with a fresh token", async () => {
    const { provider, given } = counter();
    const { client, clock, sockets, last } = makeClient({
      tokenProvider: provider,
      random: () => 0.999,
    });
    client.connect();
    last().open();
    await settle();
    last().accept({ authExpiresAt: inMs(clock, 3_600_000) });
    last().serverClose(CloseCode.TOKEN_EXPIRED, "token expired");
    assert.equal(client.status.state, "reconnecting");
    assert.equal(client.status.tokenExpired, true);
    assert.equal(client.status.planned, true);
    assert.equal(client.status.attempt, 0);
    // Jitter only: at most 0.5 x the 2 s floor.
    assert.ok(client.status.retryInMs <= 1000, `waits ${client.status.retryInMs} ms`);
    clock.advance(client.status.retryInMs);
    assert.equal(sockets.length, 2);
    last().open();
    await settle();
    assert.deepEqual(auths(last()), [{ type: "auth", token: "token-2" }]);
    last().accept();
    assert.equal(client.status.tokenExpired, false);
    assert.deepEqual(given, ["token-1", "token-2"]);
    client.close();
  });
});
