// TypeScript declarations of broadcaster-client.js (the browser client) and of every message
// of the broadcaster WebSocket protocol. The prose reference is docs/protocol.md, the
// machine-readable one docs/asyncapi.yaml; the client is described in docs/browser-client.md.
// Checked by `tsc --noEmit` in the test suite (tests/js/example.ts).
//
// Messages are a discriminated union on `type`: narrow with `switch (message.type)`. Servers
// may add fields and message types; a `message` event can carry a type not listed here.

// ---- the protocol: server -> client ---------------------------------------------------------

/** ISO 8601 in UTC with milliseconds and a `Z`, e.g. `2026-11-22T00:54:14.344Z`. */
export type Timestamp = string;

/** The first message on every connection. */
export interface WelcomeMessage {
  type: "welcome";
  /** `ws_<n>_<unix ms>`, as in the status API and the logs. */
  connectionId: string;
  timestamp: Timestamp;
  /** Every topic this connection may subscribe to. */
  topics: string[];
  /** The topics this connection is already subscribed to (the server's defaults). */
  subscribed: string[];
  broadcastIntervalMs: number;
  /** The cluster's name (`--cluster-name`), or null when the service runs standalone. */
  cluster: string | null;
  /** The process serving this connection (`--node-id`), for logs and support. */
  nodeId: string;
  /** Only with `--auth-mode jwt`: who the token says this is. */
  identity?: { sub: string; tenant: string | null };
  /** Only with `--auth-mode jwt`: when the connection's token expires. */
  authExpiresAt?: Timestamp;
}

/** One topic's value. `Data` is the topic's shape (docs/protocol.md, Topic data). */
export interface MetricsUpdateMessage<Data = Record<string, unknown>> {
  type: "metrics_update";
  topic: string;
  /** The topic's query counter, shared by all clients: a gap means missed updates. */
  seq: number;
  /** The numbering `seq` belongs to: it changes only when `seq` restarts, so compare (epoch, seq). */
  epoch: string;
  /** When the value was read (for a stale value, when the original was read). */
  timestamp: Timestamp;
  /** The last good value, resent because the latest query failed. */
  stale: boolean;
  data: Data;
}

/** One series of a window: a measurement and its GROUP BY tags, one row per resolution step
 * with data, sorted by time. A row is `[bucket start in Unix ms, ...one value per column]`. */
export interface WindowSeries {
  name: string;
  tags: Record<string, string>;
  /** "time" first, then the query's fields, e.g. ["time", "mean", "p95"]. */
  columns: string[];
  values: Array<[number, ...Array<number | string | boolean | null>]>;
}

/** A window topic's whole window (`latency-history`): the `data` of its metrics_update, and
 * what the client emits after merging each metrics_append. */
export interface WindowData {
  /** The window's length and resolution as in the topics file, e.g. "1h" and "10s". */
  window: string;
  resolution: string;
  /** The window start (Unix ms, a whole resolution step): no row is older. */
  from: number;
  /** The end of the range covered (Unix ms, exclusive). */
  to: number;
  /** The time of the newest row, or null with no row. */
  asOf: Timestamp | null;
  series: WindowSeries[];
}

/** What changed in a window: only new or changed rows, and the new window start. */
export interface WindowAppendData {
  from: number;
  to: number;
  asOf: Timestamp | null;
  series: WindowSeries[];
}

/** A window topic's rows that are new or changed since the topic's previous message. `seq`
 * continues the topic's metrics_update counter: anything but last + 1 means a lost append
 * (the client then sends a `snapshot`). The client merges it and emits a metrics_update. */
export interface MetricsAppendMessage {
  type: "metrics_append";
  topic: string;
  seq: number;
  /** The numbering `seq` belongs to, as on metrics_update. */
  epoch: string;
  timestamp: Timestamp;
  data: WindowAppendData;
}

/** The answer to a subscribe or unsubscribe: all the topics subscribed now, sorted. */
export interface SubscriptionConfirmedMessage {
  type: "subscription_confirmed";
  topics: string[];
}

/** A ping `id` the server can echo exactly. */
export type PingId = null | boolean | number | string;

/** The answer to a `ping`; `id` is the ping's, absent when it had none. */
export interface PongMessage {
  type: "pong";
  timestamp: Timestamp;
  id?: Exclude<PingId, null>;
}

/** The `code` of an `error` message. */
export type ErrorCode =
  | "invalid_json"
  | "unknown_type"
  | "invalid_topic"
  | "invalid_message"
  | "binary_not_supported"
  | "rate_limited"
  | "influxdb_unavailable"
  | "invalid_token"
  | "forbidden_topic"
  | "not_subscribed";

/** Why a topic's query failed (`influxdb_unavailable` only). New causes may be added. */
export type FailureCause =
  | "unavailable"
  | "timeout"
  | "query_rejected"
  | "bad_response"
  | "internal_error";

/** Something went wrong; the connection stays open for every code. */
export interface ErrorMessage {
  type: "error";
  code: ErrorCode;
  /** For people and logs; it may change, so don't parse it. */
  message: string;
  /** invalid_topic, forbidden_topic: the first 3 refused names. */
  topics?: string[];
  /** invalid_topic: how many names were not topics. */
  unknownCount?: number;
  /** forbidden_topic: how many names the token does not allow. */
  forbiddenCount?: number;
  /** influxdb_unavailable: the topic whose query failed; not_subscribed: the snapshot's. */
  topic?: string;
  /** influxdb_unavailable: why. */
  cause?: FailureCause;
}

/** The answer to an `auth` message that replaced the connection's token. */
export interface AuthRefreshedMessage {
  type: "auth_refreshed";
  authExpiresAt: Timestamp;
}

/** The server is shutting down; it closes the connection with 1001 next. */
export interface ServerShutdownMessage {
  type: "server_shutdown";
  reason: string;
  /** Wait at least this long before reconnecting, plus jitter. */
  reconnectAfterMs: number;
  timestamp: Timestamp;
}

/** Any message the server sends. */
export type ServerMessage =
  | WelcomeMessage
  | MetricsUpdateMessage
  | MetricsAppendMessage
  | SubscriptionConfirmedMessage
  | PongMessage
  | ErrorMessage
  | AuthRefreshedMessage
  | ServerShutdownMessage;

// ---- the protocol: client -> server ---------------------------------------------------------

/** 1 to 100 topic names of 1 to 128 characters each. */
export interface SubscribeMessage {
  type: "subscribe";
  topics: string[];
}

export interface UnsubscribeMessage {
  type: "unsubscribe";
  topics: string[];
}

export interface PingMessage {
  type: "ping";
  id?: PingId;
}

/** The first message (browsers present their token so), or a refresh at any time. */
export interface AuthMessage {
  type: "auth";
  token: string;
}

/** Ask for a subscribed topic's whole value again (the client sends it after a seq gap in a
 * window topic); answered with a metrics_update from memory. */
export interface SnapshotMessage {
  type: "snapshot";
  topic: string;
}

/** Any message a client sends. */
export type ClientMessage =
  | SubscribeMessage
  | UnsubscribeMessage
  | PingMessage
  | AuthMessage
  | SnapshotMessage;

// ---- the client -----------------------------------------------------------------------------

export interface BroadcasterClientOptions {
  /** Exactly the topics to follow; null: the server's defaults, changed by subscribe(). */
  topics?: string[] | null;
  baseDelayMs?: number;
  maxDelayMs?: number;
  jitterRatio?: number;
  maxAttempts?: number;
  probeIntervalMs?: number;
  connectTimeoutMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  excellentRttMs?: number;
  goodRttMs?: number;
  /** A token (JWT) sent as the first message of every socket; never refreshed. */
  token?: string | null;
  /** Or a function giving a token (or a Promise of one): called per socket and to refresh. */
  tokenProvider?: (() => string | Promise<string>) | null;
  WebSocket?: (new (url: string) => WebSocket) | null;
  random?: (() => number) | null;
  now?: (() => number) | null;
  setTimeout?: ((callback: () => void, delayMs: number) => unknown) | null;
  clearTimeout?: ((id: unknown) => void) | null;
  /** The wall clock in ms (Date.now), to read authExpiresAt. */
  dateNow?: (() => number) | null;
}

export type ConnectionState =
  | "idle"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "server_down"
  | "stopped"
  | "closed";

export type RttQuality = "excellent" | "good" | "poor";

export interface ClientStatus {
  state: ConnectionState;
  maxAttempts: number;
  attempt: number;
  planned: boolean;
  probing: boolean;
  probes: number;
  retryInMs: number | null;
  nextAttemptAt: number | null;
  connectionId: string | null;
  rttMs: number | null;
  quality: RttQuality | null;
  /** True while reconnecting after a 4005 (token expired). */
  tokenExpired: boolean;
  /** With a token: when the current connection's token expires, or null. */
  authExpiresAt: Timestamp | null;
  /** Why the last in-band refresh failed, or null. */
  authError: string | null;
  /** How the last connection or attempt ended; `code` null when the client gave up on it. */
  lastClose: { code: number | null; reason: string; welcomed: boolean } | null;
}

/** An error the client found itself (not from the server), shaped like an `error` message. */
export interface ClientErrorDetail {
  type: "error";
  code: "connect_failed" | "bad_server_message" | "token_unavailable";
  message: string;
  source: "client";
}

/** The server closed with 4001 or 4009: the client does not reconnect. */
export interface StoppedDetail {
  code: number | null;
  reason: string;
}

export interface BroadcasterClientEventMap {
  status: CustomEvent<ClientStatus>;
  welcome: CustomEvent<WelcomeMessage>;
  update: CustomEvent<MetricsUpdateMessage>;
  /** Every message, including types the client does not know. */
  message: CustomEvent<ServerMessage | { type: string; [field: string]: unknown }>;
  error: CustomEvent<ErrorMessage | ClientErrorDetail>;
  stopped: CustomEvent<StoppedDetail>;
}

export declare class BroadcasterClient extends EventTarget {
  /** @throws TypeError an unknown option, or a value of the wrong type; RangeError out of range. */
  /** `url`: one WebSocket URL, or several (a cluster's nodes), tried in turn. */
  constructor(url: string | readonly string[], options?: BroadcasterClientOptions);
  /** The URL of the current (or next) connection attempt. */
  readonly url: string;
  /** Every URL given, in the order they are tried. */
  readonly urls: readonly string[];
  readonly options: Readonly<Required<BroadcasterClientOptions>>;
  /** A copy of the current status. */
  readonly status: ClientStatus;
  /** The topics the server last confirmed for this connection. */
  readonly subscribedTopics: string[];
  /** Milliseconds until the next connection attempt or probe, or null if none is waiting. */
  nextAttemptInMs(): number | null;
  /** Start connecting; does nothing while running. After close() or "stopped", starts again. */
  connect(): void;
  /** Follow more topics: sent now if connected, and again after every welcome. */
  subscribe(topics: string | Iterable<string>): void;
  /** Stop following topics: sent now if connected, and again after every welcome. */
  unsubscribe(topics: string | Iterable<string>): void;
  /** Close for good: no reconnection, no timers left. */
  close(): void;

  addEventListener<K extends keyof BroadcasterClientEventMap>(
    type: K,
    listener: (this: BroadcasterClient, event: BroadcasterClientEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof BroadcasterClientEventMap>(
    type: K,
    listener: (this: BroadcasterClient, event: BroadcasterClientEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

export declare const DEFAULT_OPTIONS: Readonly<Required<BroadcasterClientOptions>>;
/** The longest delay a timer can have (2^31 - 1 ms). */
export declare const MAX_DELAY_MS: number;
export declare const PLANNED_JITTER_FLOOR_MS: number;
/** A token is refreshed after this share of the lifetime it has left. */
export declare const REFRESH_SHARE: number;
export declare const MIN_REFRESH_LEFT_MS: number;
export declare const REFRESH_ANSWER_TIMEOUT_MS: number;
export declare const CloseCode: Readonly<{ AUTH_FAILED: 4001; TOKEN_EXPIRED: 4005; REPLACED: 4009 }>;
export declare const State: Readonly<{
  IDLE: "idle";
  CONNECTING: "connecting";
  CONNECTED: "connected";
  RECONNECTING: "reconnecting";
  SERVER_DOWN: "server_down";
  STOPPED: "stopped";
  CLOSED: "closed";
}>;

/** @throws TypeError or RangeError, as the constructor, for a full set of options. */
export declare function checkOptions(options: Required<BroadcasterClientOptions>): void;
/** The delay before reconnect attempt `attempt` (1-based), without jitter. */
export declare function backoffDelayMs(
  attempt: number,
  baseDelayMs: number,
  maxDelayMs: number,
): number;
export declare function rttQuality(
  rttMs: number | null | undefined,
  excellentRttMs?: number,
  goodRttMs?: number,
): RttQuality | null;
/** The label a page shows for a status: "Connected", "Reconnecting 2 of 5", ... */
export declare function statusLabel(status: ClientStatus): string;
/** Whether a metrics_update's data is a window topic's whole window. */
export declare function isWindow(data: unknown): data is WindowData;
/** `window` with `append` merged by the protocol's rule (neither is changed). */
export declare function applyAppend(window: WindowData, append: WindowAppendData): WindowData;
