// broadcaster-client.js: a dependency-free browser client for the broadcaster WebSocket
// protocol (docs/protocol.md). An ES module; no build step. See docs/browser-client.md.
//
//   import { BroadcasterClient } from "./broadcaster-client.js";
//   const client = new BroadcasterClient("ws://127.0.0.1:8765/ws", { topics: ["overview"] });
//   client.addEventListener("update", (event) => render(event.detail));
//   client.addEventListener("status", (event) => showStatus(event.detail));
//   client.connect();
//
// Connection policy, in one place:
// - The first connection is attempt 0 (state "connecting"). After a connection is lost or an
//   attempt fails, reconnect attempt k (1-based, state "reconnecting") waits
//   min(maxDelayMs, baseDelayMs * 2 ** (k - 1)) plus jitter random() * jitterRatio * delay.
// - An attempt succeeds when its `welcome` arrives; that resets the count. After maxAttempts
//   failed reconnect attempts in a row the state is "server_down" (an open circuit breaker):
//   one probe every probeIntervalMs plus jitter (half-open) until one gets a welcome.
// - After `server_shutdown`, the next attempt waits reconnectAfterMs plus jitter
//   random() * jitterRatio * max(reconnectAfterMs, PLANNED_JITTER_FLOOR_MS) instead of the
//   backoff delay (status.planned). The floor matters when the server says 0: without it
//   every client would come back in the same instant. Like the first connection and the
//   probes, it is not counted: if it fails, the next is reconnect attempt 1.
// - While connected, a `ping` every pingIntervalMs (the first right after the welcome); no
//   `pong` within pongTimeoutMs closes the socket and reconnects. An attempt with no welcome
//   within connectTimeoutMs fails.
// - Tokens (a service with --auth-mode jwt): with a `token` or a `tokenProvider` option, the
//   first message on every socket is {"type": "auth", "token": ...} (browsers cannot set the
//   Authorization header; a token never goes in the URL). The provider is called for every
//   socket and, after REFRESH_SHARE of the lifetime the welcome's (or an auth_refreshed's)
//   authExpiresAt leaves, to refresh the token in-band. A refused refresh (invalid_token) is
//   reported (status.authError, an "error" event) and tried again after the same share of
//   what is left, until less than MIN_REFRESH_LEFT_MS is left; the connection goes on until
//   the server closes it with 4005. A fixed `token` is never refreshed.
// - Close 4005 (token expired): planned like a server_shutdown with reconnectAfterMs 0
//   (jitter only; status.tokenExpired), with a fresh token from the provider. Close 4001
//   (invalid or missing token) or 4009 (replaced by a newer connection of the same identity):
//   no reconnection; the state is "stopped", status.lastClose says why, and a "stopped" event
//   carries { code, reason }. connect() starts again (e.g. once the user gave a new token).
//
// - Window topics (broadcaster-window.js): the client keeps each window topic's window, merges
//   every metrics_append into it and emits the merged window as an "update" (a metrics_update
//   whose data is the whole window), so an application handles every topic the same way. A
//   gap in seq sends {"type": "snapshot", "topic"} and the whole window comes again.
//
// Everything with a side effect outside this object (WebSocket, timers, clock, randomness) is
// an option, so the client runs under Node's test runner with fakes.

import { WindowKeeper } from "./broadcaster-window.js";

export { applyAppend, isWindow } from "./broadcaster-window.js";

/** The options and their defaults. */
export const DEFAULT_OPTIONS = Object.freeze({
  /** Exactly the topics to follow; null: the server's defaults, changed by subscribe(). */
  topics: null,
  baseDelayMs: 5000,
  maxDelayMs: 30000,
  jitterRatio: 0.5,
  maxAttempts: 5,
  probeIntervalMs: 60000,
  connectTimeoutMs: 10000,
  pingIntervalMs: 30000,
  pongTimeoutMs: 10000,
  /** RTT at or below which the quality is "excellent"; then "good" up to goodRttMs. */
  excellentRttMs: 100,
  goodRttMs: 300,
  /** A token (JWT) sent as the first message of every socket; never refreshed. */
  token: null,
  /** Or a function returning a token or a Promise of one: called per socket and to refresh. */
  tokenProvider: null,
  WebSocket: null, // default: globalThis.WebSocket
  random: null, // default: Math.random
  now: null, // default: performance.now(), else Date.now()
  setTimeout: null, // default: globalThis.setTimeout
  clearTimeout: null, // default: globalThis.clearTimeout
  dateNow: null, // default: Date.now (the wall clock, to read authExpiresAt)
});

/**
 * The longest delay a timer can have: browsers and Node run a setTimeout of more than
 * 2 ** 31 - 1 ms (about 24.8 days) after 1 ms, which would turn a long wait into a tight loop.
 */
export const MAX_DELAY_MS = 2 ** 31 - 1;

/**
 * The rule of each numeric option, as the Python client's ReconnectPolicy and HeartbeatPolicy
 * check theirs. Why check: a page that passes values through (the dashboard reads its URL)
 * must not be able to make the client reconnect in a tight loop with baseDelayMs 0 or
 * probeIntervalMs 0, or with NaN, which setTimeout treats as 0.
 */
const NUMBER_RULES = Object.freeze({
  baseDelayMs: { min: 0, exclusive: true, max: MAX_DELAY_MS },
  maxDelayMs: { min: "baseDelayMs", max: MAX_DELAY_MS },
  jitterRatio: { min: 0 },
  maxAttempts: { min: 1, integer: true },
  probeIntervalMs: { min: 0, exclusive: true, max: MAX_DELAY_MS },
  connectTimeoutMs: { min: 0, exclusive: true, max: MAX_DELAY_MS },
  pingIntervalMs: { min: 0, exclusive: true, max: MAX_DELAY_MS },
  pongTimeoutMs: { min: 0, exclusive: true, max: MAX_DELAY_MS },
  excellentRttMs: { min: 0 },
  goodRttMs: { min: "excellentRttMs" },
});
const FUNCTION_OPTIONS = [
  "WebSocket",
  "random",
  "now",
  "setTimeout",
  "clearTimeout",
  "dateNow",
  "tokenProvider",
];

/**
 * Check a full set of options (DEFAULT_OPTIONS merged with the caller's).
 * @throws {TypeError} a numeric option that is not a number, or a hook that is not a function
 * @throws {RangeError} a number outside its range, naming the option and the value
 */
export function checkOptions(options) {
  for (const [name, rule] of Object.entries(NUMBER_RULES)) {
    const value = options[name];
    if (typeof value !== "number") {
      throw new TypeError(`option ${name} must be a number, not ${describe(value)}`);
    }
    const min = typeof rule.min === "string" ? options[rule.min] : rule.min;
    const minText = typeof rule.min === "string" ? `${rule.min} (${min})` : String(min);
    let expected = null;
    if (!Number.isFinite(value)) expected = "a finite number";
    else if (rule.integer && !Number.isInteger(value)) expected = "an integer";
    else if (rule.exclusive ? !(value > min) : !(value >= min)) {
      expected = `${rule.exclusive ? ">" : ">="} ${minText}`;
    } else if (rule.max !== undefined && value > rule.max) expected = `<= ${rule.max}`;
    if (expected !== null) {
      throw new RangeError(`option ${name} must be ${expected}, not ${describe(value)}`);
    }
  }
  for (const name of FUNCTION_OPTIONS) {
    const value = options[name];
    if (value !== null && typeof value !== "function") {
      throw new TypeError(`option ${name} must be a function, not ${describe(value)}`);
    }
  }
  if (options.token !== null && (typeof options.token !== "string" || options.token === "")) {
    throw new TypeError(`option token must be a non-empty string, not ${describe(options.token)}`);
  }
  if (options.token !== null && options.tokenProvider !== null) {
    throw new TypeError("options token and tokenProvider exclude each other: give one");
  }
}

function describe(value) {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

/**
 * The smallest delay the jitter of a planned reconnection (after `server_shutdown`) is a share
 * of: the server may say reconnectAfterMs 0, and with the default jitterRatio 0.5 the clients
 * still spread over 1 s instead of all coming back at once. Same as the Python client's.
 */
export const PLANNED_JITTER_FLOOR_MS = 2000;

/** Refresh a token after this share of the lifetime it has left (as the Python client). */
export const REFRESH_SHARE = 0.8;
/** With less left than this, no more refresh attempts: the 4005 and a reconnection follow. */
export const MIN_REFRESH_LEFT_MS = 1000;
/** A refresh with no auth_refreshed or invalid_token after this long has failed. */
export const REFRESH_ANSWER_TIMEOUT_MS = 10000;

/** Close codes of the protocol that the client acts on (docs/protocol.md). */
export const CloseCode = Object.freeze({
  AUTH_FAILED: 4001, // invalid or missing token: do not reconnect with the same token
  TOKEN_EXPIRED: 4005, // reconnect with a fresh token
  REPLACED: 4009, // a newer connection of the same identity: do not reconnect
});
const STOP_CODES = new Set([CloseCode.AUTH_FAILED, CloseCode.REPLACED]);

/** Connection states, as `status.state`. */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  SERVER_DOWN: "server_down",
  STOPPED: "stopped",
  CLOSED: "closed",
});

/** The kinds of connection attempt; only failed COUNTED ones count towards maxAttempts. */
const Next = Object.freeze({
  FIRST: "first",
  COUNTED: "counted",
  PLANNED: "planned",
  PROBE: "probe",
});

// The status fields of a client with no connection and no attempt under way.
const NOTHING_IN_PROGRESS = Object.freeze({
  attempt: 0,
  planned: false,
  probing: false,
  probes: 0,
  retryInMs: null,
  nextAttemptAt: null,
  connectionId: null,
  rttMs: null,
  quality: null,
  tokenExpired: false,
  authExpiresAt: null,
});
const OPEN = 1; // WebSocket.OPEN, without relying on the injected class defining it
const CLIENT_CLOSE_CODE = 4000; // our own close of a silent or stuck socket (private range)

/** The delay before reconnect attempt `attempt` (1-based), without jitter. */
export function backoffDelayMs(attempt, baseDelayMs, maxDelayMs) {
  return Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
}

/** "excellent", "good" or "poor" for a round-trip time; null before the first one. */
export function rttQuality(rttMs, excellentRttMs = 100, goodRttMs = 300) {
  if (rttMs === null || rttMs === undefined) return null;
  if (rttMs <= excellentRttMs) return "excellent";
  if (rttMs <= goodRttMs) return "good";
  return "poor";
}

/** The label a page shows for a status: "Connected", "Reconnecting 2 of 5", ... */
export function statusLabel(status) {
  switch (status.state) {
    case State.CONNECTED:
      return "Connected";
    case State.CONNECTING:
      return "Connecting";
    case State.RECONNECTING:
      // The attempt planned by a server_shutdown (attempt 0) is, to a person, the first.
      return `Reconnecting ${Math.max(1, status.attempt)} of ${status.maxAttempts}`;
    case State.SERVER_DOWN:
      return "Server down";
    case State.STOPPED:
      return status.lastClose?.code === CloseCode.REPLACED ? "Replaced" : "Not authorized";
    case State.CLOSED:
      return "Closed";
    default:
      return "Not connected";
  }
}

export class BroadcasterClient extends EventTarget {
  /**
   * @param {string | string[]} url the WebSocket URL, e.g. "ws://127.0.0.1:8765/ws"; or
   *   several (the nodes of a cluster): each connection attempt goes to the next one in turn
   * @param {object} options see DEFAULT_OPTIONS; unknown keys are an error
   */
  constructor(url, options = {}) {
    super();
    const urls = Array.isArray(url) ? [...url] : [url];
    if (urls.length === 0 || !urls.every((one) => typeof one === "string")) {
      throw new TypeError("url must be a URL string or a non-empty array of them");
    }
    for (const key of Object.keys(options)) {
      if (!(key in DEFAULT_OPTIONS)) throw new TypeError(`unknown option ${JSON.stringify(key)}`);
    }
    const merged = { ...DEFAULT_OPTIONS };
    for (const [key, value] of Object.entries(options)) {
      if (value !== undefined) merged[key] = value;
    }
    checkOptions(merged);
    this.urls = Object.freeze(urls);
    this._urlIndex = 0; // the URL of the current (or next) attempt
    this.options = Object.freeze(merged);
    this._WebSocket = merged.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") throw new TypeError("no WebSocket constructor");
    this._random = merged.random ?? Math.random;
    this._now = merged.now ?? defaultNow;
    // Wrapped: a browser's setTimeout throws "Illegal invocation" when called detached.
    this._setTimeout = merged.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this._clearTimeout = merged.clearTimeout ?? ((id) => globalThis.clearTimeout(id));
    this._dateNow = merged.dateNow ?? (() => Date.now());
    // What to ask for after every welcome. With a `topics` option the client follows exactly
    // `_wanted`; without one it follows the server's defaults plus `_wanted` minus `_removed`.
    this._exact = merged.topics !== null;
    this._wanted = new Set(merged.topics === null ? [] : topicList(merged.topics, true));
    this._removed = new Set();
    this._serverTopics = []; // what the server last said this connection is subscribed to
    this._windows = new WindowKeeper(); // the window topics' windows of the current socket

    this._socket = null; // the current socket, or null between attempts
    this._welcomed = false; // the current socket got its welcome
    this._reconnectAfterMs = null; // from server_shutdown on the current socket
    this._failures = 0; // failed reconnect attempts in a row
    this._next = Next.FIRST; // the kind of the attempt in progress or waited for
    this._timers = {
      retry: null,
      connect: null,
      ping: null,
      pong: null,
      refresh: null,
      refreshAnswer: null,
    };
    this._expiresAt = null; // wall-clock ms at which the current socket's token expires
    this._refreshPending = false; // an auth refresh waits for its answer
    this._pingId = 0;
    this._pendingPing = null; // { id, sentAt }
    this._status = {
      state: State.IDLE,
      maxAttempts: merged.maxAttempts,
      ...NOTHING_IN_PROGRESS,
      lastClose: null,
      authError: null,
    };
  }

  /** A copy of the current status (see docs/browser-client.md for the fields). */
  get status() {
    return { ...this._status };
  }

  /** The topics the server last confirmed for this connection (welcome or confirmation). */
  get subscribedTopics() {
    return [...this._serverTopics];
  }

  /** Milliseconds until the next connection attempt or probe, or null if none is waiting. */
  nextAttemptInMs() {
    const at = this._status.nextAttemptAt;
    return at === null ? null : Math.max(0, at - this._now());
  }

  /** Start connecting. Calling it again while running does nothing. */
  connect() {
    const { state } = this._status;
    if (state !== State.IDLE && state !== State.CLOSED && state !== State.STOPPED) return;
    this._failures = 0;
    this._next = Next.FIRST;
    this._setStatus({
      state: State.CONNECTING,
      attempt: 0,
      planned: false,
      probing: false,
      probes: 0,
      retryInMs: null,
      nextAttemptAt: null,
    });
    this._open();
  }

  /** Follow more topics: sent now if connected, and again after every welcome. */
  subscribe(topics) {
    const names = topicList(topics);
    for (const name of names) {
      this._wanted.add(name);
      this._removed.delete(name);
    }
    this._send({ type: "subscribe", topics: names });
  }

  /** Stop following topics: sent now if connected, and again after every welcome. */
  unsubscribe(topics) {
    const names = topicList(topics);
    for (const name of names) {
      this._wanted.delete(name);
      this._removed.add(name);
    }
    this._windows.forget(names);
    this._send({ type: "unsubscribe", topics: names });
  }

  /** Close for good: no reconnection, no timers left. `connect()` starts again. */
  close() {
    this._clearTimers();
    this._pendingPing = null;
    this._dropSocket(1000, "client closed");
    // No connection and nothing counted any more: no RTT, quality or attempt to show.
    this._setStatus({ state: State.CLOSED, ...NOTHING_IN_PROGRESS });
  }

  // ---- one socket --------------------------------------------------------------------------

  _open() {
    if (this._status.state === State.CLOSED) return; // a listener closed us meanwhile
    this._welcomed = false;
    this._reconnectAfterMs = null;
    let socket;
    try {
      socket = new this._WebSocket(this.url);
    } catch (error) {
      // A malformed URL throws at once; count it as a failed attempt, not a crash.
      this._emitClientError("connect_failed", String(error));
      this._socketEnded({ code: null, reason: String(error) });
      return;
    }
    this._socket = socket;
    const current = () => this._socket === socket;
    socket.addEventListener("open", () => {
      if (current()) this._authenticate(socket);
    });
    socket.addEventListener("message", (event) => {
      if (current()) this._onMessage(socket, event.data);
    });
    socket.addEventListener("close", (event) => {
      if (current()) this._socketEnded({ code: event.code, reason: event.reason });
    });
    socket.addEventListener("error", () => {
      // Browsers fire "close" after "error"; other runtimes may not. End it here, once.
      if (current()) {
        this._dropSocket(CLIENT_CLOSE_CODE, "socket error");
        this._socketEnded({ code: 1006, reason: "socket error" });
      }
    });
    this._timers.connect = this._setTimeout(() => {
      this._timers.connect = null;
      if (current() && !this._welcomed) {
        this._dropSocket(CLIENT_CLOSE_CODE, "no welcome in time");
        this._socketEnded({ code: null, reason: "no welcome in time" });
      }
    }, this.options.connectTimeoutMs);
  }

  // Listeners run synchronously inside _emit and may close the client (or it may have moved
  // on): after each emit, `this._socket !== socket` means this socket is no longer ours.
  _onMessage(socket, data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this._emitClientError("bad_server_message", "the server sent a frame that is not JSON");
      return;
    }
    if (message === null || typeof message !== "object") return;
    this._emit("message", message);
    if (this._socket !== socket) return;
    switch (message.type) {
      case "welcome":
        this._onWelcome(socket, message);
        break;
      case "metrics_update":
        this._windows.onUpdate(message);
        this._emit("update", message);
        break;
      case "metrics_append":
        this._onAppend(message);
        break;
      case "subscription_confirmed":
        if (Array.isArray(message.topics)) this._serverTopics = message.topics;
        break;
      case "pong":
        this._onPong(message);
        break;
      case "auth_refreshed":
        this._onAuthRefreshed(message);
        break;
      case "error":
        if (message.code === "invalid_token" && this._refreshPending) {
          this._refreshFailed(`invalid_token: ${message.message}`);
        }
        this._emit("error", message);
        break;
      case "server_shutdown":
        if (Number.isFinite(message.reconnectAfterMs) && message.reconnectAfterMs >= 0) {
          this._reconnectAfterMs = message.reconnectAfterMs;
        }
        break;
      default:
        break; // unknown types are ignored (protocol: compatibility)
    }
  }

  /** A window topic's append: merged into its window, or a snapshot asked for after a gap. */
  _onAppend(message) {
    let outcome;
    try {
      outcome = this._windows.onAppend(message);
    } catch (error) {
      this._emitClientError("bad_server_message", `ignored a metrics_append: ${error.message}`);
      return;
    }
    if (outcome.askSnapshot) this._send({ type: "snapshot", topic: message.topic });
    if (outcome.update !== null) this._emit("update", outcome.update);
  }

  _onWelcome(socket, message) {
    this._windows = new WindowKeeper(); // a new connection: its windows come whole again
    this._clearTimer("connect");
    this._clearTimer("retry");
    this._welcomed = true;
    this._failures = 0;
    this._serverTopics = Array.isArray(message.subscribed) ? message.subscribed : [];
    this._resubscribe(this._serverTopics);
    this._setStatus({
      state: State.CONNECTED,
      attempt: 0,
      planned: false,
      probing: false,
      probes: 0,
      retryInMs: null,
      nextAttemptAt: null,
      connectionId: message.connectionId ?? null,
      rttMs: null,
      quality: null,
      tokenExpired: false,
      authError: null,
    });
    if (this._socket !== socket) return;
    this._emit("welcome", message);
    if (this._socket !== socket) return;
    this._sendPing();
    this._tokenExpiryKnown(message.authExpiresAt);
  }

  // ---- tokens ------------------------------------------------------------------------------

  /** The token to send now, as a Promise: the fixed one or the provider's answer. */
  _currentToken() {
    const { token, tokenProvider } = this.options;
    if (tokenProvider === null) return Promise.resolve(token);
    return new Promise((resolve) => resolve(tokenProvider())).then((value) => {
      if (typeof value !== "string" || value === "") {
        throw new TypeError(`tokenProvider gave ${describe(value)}, not a token`);
      }
      return value;
    });
  }

  /** The socket is open: with a token, send it as the first message. */
  _authenticate(socket) {
    const { token, tokenProvider } = this.options;
    if (tokenProvider === null) {
      if (token !== null) socket.send(JSON.stringify({ type: "auth", token }));
      return;
    }
    this._currentToken().then(
      (token) => {
        if (this._socket === socket && socket.readyState === OPEN) {
          socket.send(JSON.stringify({ type: "auth", token }));
        }
      },
      (error) => {
        if (this._socket !== socket) return;
        this._emitClientError("token_unavailable", `no token: ${error?.message ?? error}`);
        if (this._socket !== socket) return;
        this._dropSocket(CLIENT_CLOSE_CODE, "no token");
        this._socketEnded({ code: null, reason: "no token from tokenProvider" });
      },
    );
  }

  /** A welcome or auth_refreshed said when the token expires: plan the next refresh. */
  _tokenExpiryKnown(authExpiresAt) {
    const at = typeof authExpiresAt === "string" ? Date.parse(authExpiresAt) : Number.NaN;
    if (!Number.isFinite(at)) return;
    this._expiresAt = at;
    this._setStatus({ authExpiresAt });
    this._planRefresh();
  }

  _planRefresh() {
    this._clearTimer("refresh");
    if (this.options.tokenProvider === null || this._expiresAt === null) return;
    const leftMs = this._expiresAt - this._dateNow();
    if (leftMs < MIN_REFRESH_LEFT_MS) return; // too late: wait for the 4005
    const socket = this._socket;
    this._timers.refresh = this._setTimeout(
      () => {
        this._timers.refresh = null;
        this._refresh(socket);
      },
      Math.min(REFRESH_SHARE * leftMs, MAX_DELAY_MS),
    );
  }

  _refresh(socket) {
    this._refreshPending = true;
    this._currentToken().then(
      (token) => {
        if (this._socket !== socket || !this._refreshPending) return;
        if (!this._send({ type: "auth", token })) return;
        this._timers.refreshAnswer = this._setTimeout(() => {
          this._timers.refreshAnswer = null;
          this._refreshFailed(`no answer within ${REFRESH_ANSWER_TIMEOUT_MS} ms`);
        }, REFRESH_ANSWER_TIMEOUT_MS);
      },
      (error) => {
        if (this._socket === socket) this._refreshFailed(`no token: ${error?.message ?? error}`);
      },
    );
  }

  _onAuthRefreshed(message) {
    this._refreshPending = false;
    this._clearTimer("refreshAnswer");
    this._setStatus({ authError: null });
    this._tokenExpiryKnown(message.authExpiresAt);
  }

  _refreshFailed(reason) {
    this._refreshPending = false;
    this._clearTimer("refreshAnswer");
    this._setStatus({ authError: reason });
    this._planRefresh(); // again, after the same share of what is left
  }

  /** Subscriptions belong to a connection: ask again for what we follow after a welcome. */
  _resubscribe(serverDefaults) {
    const unwanted = this._exact
      ? serverDefaults.filter((topic) => !this._wanted.has(topic))
      : serverDefaults.filter((topic) => this._removed.has(topic));
    const missing = [...this._wanted].filter((topic) => !serverDefaults.includes(topic));
    if (unwanted.length) this._send({ type: "unsubscribe", topics: unwanted });
    if (missing.length) this._send({ type: "subscribe", topics: missing });
  }

  _sendPing() {
    this._timers.ping = this._setTimeout(() => this._sendPing(), this.options.pingIntervalMs);
    if (this._pendingPing !== null) return; // one at a time; its pong deadline still runs
    const id = ++this._pingId;
    this._pendingPing = { id, sentAt: this._now() };
    this._send({ type: "ping", id });
    this._timers.pong = this._setTimeout(() => {
      this._timers.pong = null;
      this._dropSocket(CLIENT_CLOSE_CODE, "no pong in time");
      this._socketEnded({ code: null, reason: "no pong in time" });
    }, this.options.pongTimeoutMs);
  }

  _onPong(message) {
    if (this._pendingPing === null || message.id !== this._pendingPing.id) return;
    const rttMs = this._now() - this._pendingPing.sentAt;
    this._pendingPing = null;
    this._clearTimer("pong");
    const { excellentRttMs, goodRttMs } = this.options;
    this._setStatus({ rttMs, quality: rttQuality(rttMs, excellentRttMs, goodRttMs) });
  }

  /** Forget the current socket (its late events are ignored) and close it if still open. */
  _dropSocket(code, reason) {
    const socket = this._socket;
    this._socket = null;
    if (socket === null) return;
    try {
      socket.close(code, reason);
    } catch {
      // already closing or closed: nothing to do
    }
  }

  /** The URL of the current (or next) connection attempt. */
  get url() {
    return this.urls[this._urlIndex];
  }

  /** The current socket ended (closed, failed, timed out): schedule what comes next. */
  _socketEnded(close) {
    this._socket = null;
    // The next attempt goes to the next URL: a client whose node died moves to another.
    this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    this._clearTimers();
    this._pendingPing = null;
    this._expiresAt = null;
    this._refreshPending = false;
    const welcomed = this._welcomed;
    const reconnectAfterMs = this._reconnectAfterMs;
    this._welcomed = false;
    this._reconnectAfterMs = null;
    const { jitterRatio, maxAttempts, probeIntervalMs, baseDelayMs, maxDelayMs } = this.options;
    const jittered = (delayMs) => delayMs + this._random() * jitterRatio * delayMs;

    // Only failed reconnect attempts count: not the first connection, not the attempt
    // planned by a server_shutdown, not probes.
    if (welcomed) this._failures = 0;
    else if (this._next === Next.COUNTED) this._failures += 1;
    const lost = {
      connectionId: null,
      rttMs: null,
      quality: null,
      tokenExpired: false,
      authExpiresAt: null,
      lastClose: { code: close.code, reason: close.reason, welcomed },
    };
    if (STOP_CODES.has(close.code)) {
      // Reconnecting as is cannot help: the same token is refused again, or it would replace
      // the newer connection of the same identity in turn.
      this._setStatus({ ...NOTHING_IN_PROGRESS, ...lost, state: State.STOPPED });
      this._emit("stopped", { code: close.code, reason: close.reason });
      return;
    }
    if (close.code === CloseCode.TOKEN_EXPIRED) {
      // Planned, with a fresh token; jitter only, with the floor, as after a server_shutdown.
      const spreadMs = jitterRatio * PLANNED_JITTER_FLOOR_MS;
      this._schedule(Next.PLANNED, this._random() * spreadMs, {
        ...lost,
        state: State.RECONNECTING,
        attempt: 0,
        probes: 0,
        tokenExpired: true,
      });
    } else if (reconnectAfterMs !== null) {
      // server_shutdown: the server's delay replaces the backoff; its jitter has a floor.
      const spreadMs = jitterRatio * Math.max(reconnectAfterMs, PLANNED_JITTER_FLOOR_MS);
      this._schedule(Next.PLANNED, reconnectAfterMs + this._random() * spreadMs, {
        ...lost,
        state: State.RECONNECTING,
        attempt: 0,
        probes: 0,
      });
    } else if (this._failures >= maxAttempts) {
      const probes = this._next === Next.PROBE ? this._status.probes + 1 : 0;
      this._schedule(Next.PROBE, jittered(probeIntervalMs), {
        ...lost,
        state: State.SERVER_DOWN,
        attempt: 0,
        probes,
      });
    } else {
      const attempt = this._failures + 1;
      this._schedule(Next.COUNTED, jittered(backoffDelayMs(attempt, baseDelayMs, maxDelayMs)), {
        ...lost,
        state: State.RECONNECTING,
        attempt,
        probes: 0,
      });
    }
  }

  /** Wait `delayMs`, then make the next attempt, of kind `next`. */
  _schedule(next, delayMs, fields) {
    this._next = next;
    delayMs = Math.min(delayMs, MAX_DELAY_MS); // the jitter may take it past what timers take
    // The timer first: a status listener that calls close() then clears it.
    this._timers.retry = this._setTimeout(() => {
      this._timers.retry = null;
      this._setStatus({ probing: next === Next.PROBE, retryInMs: null, nextAttemptAt: null });
      this._open();
    }, delayMs);
    this._setStatus({
      ...fields,
      planned: next === Next.PLANNED,
      probing: false,
      retryInMs: delayMs,
      nextAttemptAt: this._now() + delayMs,
    });
  }

  // ---- small helpers ---------------------------------------------------------------------

  _send(message) {
    const socket = this._socket;
    if (socket === null || !this._welcomed || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(message));
    return true;
  }

  _setStatus(fields) {
    this._status = { ...this._status, ...fields };
    this._emit("status", this.status);
  }

  /** An error found by the client itself, shaped like the protocol's `error` messages. */
  _emitClientError(code, message) {
    this._emit("error", { type: "error", code, message, source: "client" });
  }

  _emit(type, detail) {
    this.dispatchEvent(makeEvent(type, detail));
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) {
      this._clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  _clearTimers() {
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
  }
}

function topicList(topics, emptyAllowed = false) {
  const names = typeof topics === "string" ? [topics] : [...topics];
  const valid = names.every((name) => typeof name === "string" && name);
  if (!valid || (!names.length && !emptyAllowed)) {
    throw new TypeError("topics must be a non-empty list of topic names");
  }
  return names;
}

/** A CustomEvent; Node 18 has no global CustomEvent without a flag, so an Event there. */
function makeEvent(type, detail) {
  if (typeof CustomEvent === "function") return new CustomEvent(type, { detail });
  const event = new Event(type);
  Object.defineProperty(event, "detail", { value: detail, enumerable: true });
  return event;
}

function defaultNow() {
  return globalThis.performance?.now ? globalThis.performance.now() : Date.now();
}
