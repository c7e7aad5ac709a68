// Fakes for the browser client's unit tests: a virtual clock and an in-memory WebSocket.
//
// Why fakes: these tests are the unit level. They check the client's timing policy (backoff,
// jitter, shutdown delay, ping and pong deadlines, the circuit breaker) exactly, in virtual
// time, in milliseconds, without waiting. The real thing, a real browser against the real
// service, is tests/client/test_dashboard_browser.py.

/** Timers in virtual time: nothing runs until advance() moves the clock past its due time. */
export class FakeClock {
  constructor() {
    this.nowMs = 0;
    this._timers = new Map(); // id -> { at, fn }
    this._nextId = 1;
    // Bound, so they can be handed to the client as options.
    this.setTimeout = (fn, ms) => {
      const id = this._nextId++;
      this._timers.set(id, { at: this.nowMs + Math.max(0, ms ?? 0), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this._timers.delete(id);
    };
    this.now = () => this.nowMs;
  }

  /** How many timers are waiting. */
  get pending() {
    return this._timers.size;
  }

  /** Milliseconds until the earliest timer, or null when none waits. */
  nextDelay() {
    let earliest = null;
    for (const { at } of this._timers.values()) {
      if (earliest === null || at < earliest) earliest = at;
    }
    return earliest === null ? null : earliest - this.nowMs;
  }

  /** Move the clock forward by `ms`, running every timer that falls due, in order. */
  advance(ms) {
    const target = this.nowMs + ms;
    for (;;) {
      let due = null;
      for (const [id, timer] of this._timers) {
        // Map order is creation order, so equal due times run first-set first.
        if (timer.at <= target && (due === null || timer.at < due[1].at)) due = [id, timer];
      }
      if (due === null) break;
      this._timers.delete(due[0]);
      this.nowMs = due[1].at;
      due[1].fn();
    }
    this.nowMs = target;
  }
}

/** A WebSocket class whose instances the test drives from the server's side. */
export function fakeWebSocketClass() {
  const sockets = [];

  class FakeWebSocket extends EventTarget {
    constructor(url) {
      super();
      this.url = url;
      this.readyState = 0; // CONNECTING
      this.sent = []; // decoded client messages
      this.closedByClient = null; // { code, reason } once the client called close()
      sockets.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      this.sent.push(JSON.parse(data));
    }

    close(code, reason) {
      // Like a dead peer: the close handshake never completes, so no "close" event follows.
      this.closedByClient = { code, reason };
      this.readyState = 2; // CLOSING
    }

    // ---- the server's side ----

    /** The handshake succeeded: the socket opens (the client may send its auth now). */
    open() {
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    }

    /** Open the socket (unless open() did) and send a welcome (fields override the defaults). */
    accept(fields = {}) {
      if (this.readyState === 0) this.open();
      this.receive({
        type: "welcome",
        connectionId: `ws_${sockets.indexOf(this) + 1}_1795308854343`,
        timestamp: "2026-11-22T00:54:14.343Z",
        topics: ["overview", "regressions", "region-latency"],
        subscribed: ["overview", "regressions"],
        broadcastIntervalMs: 10000,
        ...fields,
      });
    }

    /** Deliver one server message (an object is sent as JSON). */
    receive(message) {
      const data = typeof message === "string" ? message : JSON.stringify(message);
      this.dispatchEvent(Object.assign(new Event("message"), { data }));
    }

    /** The server closes the connection with a close frame. */
    serverClose(code = 1000, reason = "") {
      this.readyState = 3;
      this.dispatchEvent(Object.assign(new Event("close"), { code, reason, wasClean: true }));
    }

    /** The connection fails (refused, reset): "error" then "close" 1006, as browsers do. */
    fail() {
      this.readyState = 3;
      this.dispatchEvent(new Event("error"));
      this.dispatchEvent(
        Object.assign(new Event("close"), { code: 1006, reason: "", wasClean: false }),
      );
    }
  }

  return { FakeWebSocket, sockets };
}

/** A seeded uniform generator in [0, 1) (mulberry32), so "many clients" is reproducible. */
export function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
