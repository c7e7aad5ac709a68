// The load generator of scripts/bench: N WebSocket clients (npm `ws`) in one Node process.
//
//   node scripts/bench_node/loadgen.mjs --url ws://127.0.0.1:P/ws --clients N --topics bench \
//     --interval-ms 100 --seconds 20 [--connect-concurrency 500] [--ca ca.pem]
//
// For a wss:// URL, --ca names the PEM file of the CA that issued the server's certificate.
// --url may list several URLs, comma-separated (the nodes of a cluster): client i connects to
// URL i mod count, and the result counts the window's deliveries per URL (`deliveries_by_url`).
//
// Phases, each bounded by a timeout; one JSON line per phase on stdout for scripts/bench:
//   storm         open N clients (at most --connect-concurrency handshakes in flight); the time
//                 from the first connect until every client has its `welcome` (or failed)
//   ready         every welcomed client subscribed (`subscribe` sent on `welcome`) and has had an
//                 update of each topic; then two intervals (at least 1 s) to settle
//   window_start  the measurement window opens (wall clock t0, µs)
//   window_end    after --seconds (t1)
//   result        after the drain: until every broadcast sent in the window has reached every
//                 open client, at most max(2 s, 3 intervals)
// then every client closes (1000) and the process exits by itself. It also exits when stdin
// closes (the controller is gone) and, whatever happens, after a global watchdog.
//
// Clock: every time is the wall clock in µs, performance.timeOrigin + performance.now() (sub-ms
// resolution). A broadcast's send time is `sentAtUs` from the message: top level (the Node
// reference server), or in `data` / `data.series[0].rows[0]` (our service with the bench source);
// failing that `timestamp` (ms resolution; for our service that is when the topic's query started).
// Both processes run on the same machine, so they share the clock.
//
// Freshness: when an update's data carries `asOf` (the built-in topics: the time of the newest
// point in the database), the time from that point's own timestamp until the last client has the
// update (`freshness_ms`): how old the newest data is when every dashboard shows it.

import { createRequire } from "node:module";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const modules =
  process.env.BENCH_NODE_MODULES ?? new URL("../../.bench/node/node_modules/", import.meta.url).pathname;
const require = createRequire(modules.endsWith("/") ? modules : `${modules}/`);
const { WebSocket } = require("ws");

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    clients: { type: "string" },
    topics: { type: "string", default: "bench" },
    "interval-ms": { type: "string" },
    seconds: { type: "string", default: "20" },
    "connect-concurrency": { type: "string", default: "500" },
    ca: { type: "string" }, // PEM file of the CA to trust for a wss:// --url
  },
});
const urls = (args.url ?? "").split(",").filter(Boolean);
const ca = args.ca ? readFileSync(args.ca) : undefined;
const n = Number(args.clients);
const topics = args.topics.split(",").filter(Boolean);
const intervalMs = Number(args["interval-ms"]);
const windowS = Number(args.seconds);
const concurrency = Number(args["connect-concurrency"]);
if (!urls.length || !(n >= 1) || !(intervalMs > 0) || !(windowS > 0) || !(concurrency >= 1) || !topics.length) {
  console.error("loadgen.mjs: --url, --clients, --interval-ms, --seconds are required");
  process.exit(2);
}

const STORM_TIMEOUT_S = 30 + n / 50;
const READY_TIMEOUT_S = 10 + (5 * intervalMs) / 1000;
const SETTLE_S = Math.max(1, (2 * intervalMs) / 1000);
const DRAIN_TIMEOUT_S = Math.max(2, (3 * intervalMs) / 1000);
const CLOSE_TIMEOUT_S = 10;
const LAG_RESOLUTION_MS = 10;
const WATCHDOG_S = STORM_TIMEOUT_S + READY_TIMEOUT_S + SETTLE_S + windowS + DRAIN_TIMEOUT_S + CLOSE_TIMEOUT_S + 30;

const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const bump = (counter, key, by = 1) => {
  counter[key] = (counter[key] ?? 0) + by;
};

function percentile(values, q) {
  if (!values.length) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round((q / 100) * sorted.length + 0.5) - 1))];
}

async function until(predicate, timeoutS) {
  const deadline = performance.now() + timeoutS * 1000;
  while (!predicate()) {
    if (performance.now() >= deadline) return false;
    await sleep(10);
  }
  return true;
}

// --- state --------------------------------------------------------------------------------------

const clients = [];
const records = new Map(topics.map((t) => [t, new Map()])); // topic -> seq -> record
const failed = {}; // why a client never got its welcome
const closedByServer = {}; // close codes of welcomed clients we did not close
const other = {}; // message types other than welcome / subscription_confirmed / metrics_update
const sentFrom = {}; // where each broadcast's send time came from
let inFlight = 0;
let settled = 0;
let welcomedCount = 0;
let openCount = 0; // welcomed during the storm and not closed: the clients measured
let readyCount = 0; // of those, the ones with an update of every topic
let lateOpen = 0; // welcomed after the storm phase and not closed
let lateWelcomed = 0;
let updates = 0;
let updateBytes = 0;
let gaps = 0;
let repeats = 0;
let stale = 0;
let t0 = null; // window, wall µs
let t1 = null;
let windowArrivals = 0;
const windowArrivalsByUrl = {};
let ownClose = false;
let stormStart = 0;
let opening = true; // false once the storm phase is over: no more clients are started

function sentAt(message) {
  let value = message.sentAtUs;
  if (typeof value === "number") return [value, "sentAtUs"];
  const data = message.data;
  value = data?.sentAtUs ?? data?.series?.[0]?.rows?.[0]?.sentAtUs;
  if (typeof value === "number") return [value, "data.sentAtUs"];
  return [Date.parse(message.timestamp) * 1000, "timestamp"];
}

function asOfUs(message) {
  const asOf = message.data?.asOf;
  const ms = typeof asOf === "string" ? Date.parse(asOf) : NaN;
  return Number.isNaN(ms) ? null : ms * 1000;
}

function onUpdate(client, message, bytes, now) {
  updates += 1;
  updateBytes += bytes;
  if (message.stale === true) stale += 1;
  if (t0 !== null && t1 === null && now >= t0) {
    windowArrivals += 1;
    bump(windowArrivalsByUrl, client.url);
  }
  const { topic, seq } = message;
  const byTopic = records.get(topic);
  if (byTopic === undefined) {
    bump(other, `metrics_update of unexpected topic ${topic}`);
    return;
  }
  let record = byTopic.get(seq);
  if (record === undefined) {
    const [sent, from] = sentAt(message);
    bump(sentFrom, from);
    record = { sent, asOf: asOfUs(message), first: now, last: 0, count: 0 }; // last, count: measured clients
    byTopic.set(seq, record);
  }
  if (!client.late) {
    record.count += 1;
    if (now > record.last) record.last = now;
  }
  const previous = client.last.get(topic);
  if (previous === undefined) {
    if (client.last.size + 1 === topics.length && !client.late) readyCount += 1;
  } else if (seq <= previous) {
    repeats += 1;
    return;
  } else if (seq > previous + 1) {
    gaps += seq - previous - 1;
    client.gaps += seq - previous - 1;
  }
  client.last.set(topic, seq);
  if (t0 !== null && record.sent >= t0 && (t1 === null || record.sent < t1)) client.inWindow += 1;
}

function onMessage(client, data, isBinary) {
  const now = nowUs();
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    bump(other, isBinary ? "binary" : "invalid JSON");
    return;
  }
  const kind = message.type;
  if (kind === "metrics_update") {
    onUpdate(client, message, data.length, now);
  } else if (kind === "welcome") {
    client.welcomed = now;
    if (ownClose) {
      // Closing time: a handshake that was still pending completes; close it normally.
      client.late = true;
      lateOpen += 1;
      client.ws.close(1000);
      return;
    }
    client.ws.send(JSON.stringify({ type: "subscribe", topics }));
    if (!opening) {
      // After a storm timeout: a client whose handshake was still pending. It is kept (closing
      // it then could reset a connection the server is still setting up) but not measured.
      client.late = true;
      lateWelcomed += 1;
      lateOpen += 1;
      return;
    }
    welcomedCount += 1;
    openCount += 1;
    inFlight -= 1;
    settled += 1;
    startMore();
  } else if (kind !== "subscription_confirmed") {
    bump(other, String(kind));
  }
}

function onClose(client, code) {
  if (client.closed) return;
  client.closed = true;
  client.code = code;
  if (!ownClose && client.welcomed) bump(closedByServer, String(code));
  if (client.late) {
    lateOpen -= 1;
  } else if (!client.welcomed) {
    inFlight -= 1;
    settled += 1;
    bump(failed, client.error ?? `closed with ${code} before welcome`);
    startMore();
  } else {
    openCount -= 1;
    if (client.last.size === topics.length) readyCount -= 1;
  }
}

function startMore() {
  while (opening && clients.length < n && inFlight < concurrency) {
    const url = urls[clients.length % urls.length];
    const client = { ws: null, url, started: nowUs(), welcomed: 0, last: new Map(), gaps: 0, inWindow: 0 };
    client.closed = false;
    client.late = false;
    clients.push(client);
    inFlight += 1;
    let ws;
    try {
      ws = new WebSocket(url, {
        perMessageDeflate: false, // no handshake timeout: see the storm timeout in main()
        headers: { "User-Agent": "broadcaster-bench" },
        ...(ca ? { ca } : {}),
      });
    } catch (error) {
      client.error = `connect: ${error.message}`;
      onClose(client, 1006);
      continue;
    }
    client.ws = ws;
    ws.on("message", (data, isBinary) => onMessage(client, data, isBinary));
    ws.on("error", (error) => {
      client.error ??= error.code ?? error.message;
    });
    ws.on("close", (code) => onClose(client, code));
  }
}

// --- the run ------------------------------------------------------------------------------------

async function main() {
  stormStart = nowUs();
  startMore();
  const stormDone = await until(() => settled === n, STORM_TIMEOUT_S);
  opening = false;
  // After a storm timeout, the clients still waiting for their welcome are left waiting, not
  // closed: closing a connection whose handshake the server is processing can reset it under
  // the server. They are counted as `pending`; if they are welcomed later, as `late`.
  const pending = clients.filter((c) => !c.welcomed && !c.closed).length;
  const notStarted = n - clients.length;
  const perClient = clients.filter((c) => c.welcomed).map((c) => (c.welcomed - c.started) / 1e6);
  const welcomeTimes = clients
    .filter((c) => c.welcomed)
    .map((c) => c.welcomed)
    .sort((a, b) => a - b);
  const k = Math.min(1000, n);
  emit({
    event: "storm",
    clients: n,
    welcomed: welcomedCount,
    all_welcomed_s: welcomeTimes.length ? (welcomeTimes.at(-1) - stormStart) / 1e6 : null,
    first_1000_s: welcomeTimes.length >= k ? (welcomeTimes[k - 1] - stormStart) / 1e6 : null,
    per_client_p50_s: percentile(perClient, 50),
    per_client_p99_s: percentile(perClient, 99),
    timed_out: !stormDone,
    pending,
    not_started: notStarted,
    failed,
  });

  const allReady = await until(() => readyCount >= openCount, READY_TIMEOUT_S);
  emit({ event: "ready", ready: readyCount, open: openCount, timed_out: !allReady });
  await sleep(SETTLE_S * 1000);

  const lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  const cpu0 = process.cpuUsage();
  t0 = nowUs();
  lag.enable();
  emit({ event: "window_start", t0_us: t0 });
  await sleep(windowS * 1000);
  t1 = nowUs();
  lag.disable();
  const cpu = process.cpuUsage(cpu0);
  const arrivals = windowArrivals;
  emit({ event: "window_end", t1_us: t1, connections: openCount + lateOpen });

  const inWindow = () => {
    const out = [];
    for (const [topic, byTopic] of records) {
      for (const [seq, record] of byTopic) if (record.sent >= t0 && record.sent < t1) out.push([topic, seq, record]);
    }
    return out;
  };
  const drained = await until(() => inWindow().every(([, , r]) => r.count >= openCount), DRAIN_TIMEOUT_S);
  const window = inWindow();
  const complete = window.filter(([, , r]) => r.count >= openCount);
  const open = clients.filter((c) => c.welcomed && !c.closed && !c.late);
  const missed = open.map((c) => window.length - c.inWindow);
  const seconds = (t1 - t0) / 1e6;
  const quantiles = (values) => ({ 50: percentile(values, 50), 99: percentile(values, 99), 100: percentile(values, 100) });
  emit({
    event: "result",
    topics: topics.length,
    window_s: seconds,
    open: openCount,
    late_welcomed: lateWelcomed,
    late_open: lateOpen,
    pending: clients.filter((c) => !c.welcomed && !c.closed).length,
    deliveries: arrivals,
    deliveries_per_s: arrivals / seconds,
    deliveries_by_url: { ...windowArrivalsByUrl },
    expected_per_s: ((openCount + lateOpen) * topics.length * 1000) / intervalMs,
    broadcasts: window.length,
    expected_broadcasts: (topics.length * seconds * 1000) / intervalMs,
    incomplete: window.length - complete.length,
    drained,
    last_ms: quantiles(complete.map(([, , r]) => (r.last - r.sent) / 1000)),
    first_ms: quantiles(window.map(([, , r]) => (r.first - r.sent) / 1000)),
    freshness_ms: quantiles(complete.filter(([, , r]) => r.asOf !== null).map(([, , r]) => (r.last - r.asOf) / 1000)),
    freshness_samples: complete.filter(([, , r]) => r.asOf !== null).length,
    // Each broadcast's freshness, so that runs can be pooled (a run's phase is fixed at its start).
    freshness_values_ms: complete.filter(([, , r]) => r.asOf !== null).map(([, , r]) => (r.last - r.asOf) / 1000),
    missed_total: missed.reduce((a, b) => a + b, 0),
    clients_missing: missed.filter((m) => m > 0).length,
    missed_max_per_client: missed.length ? Math.max(...missed) : 0,
    gaps,
    repeats,
    stale,
    mean_update_bytes: updates ? updateBytes / updates : null,
    sent_from: sentFrom,
    closed_by_server: closedByServer,
    other_messages: other,
    failed,
    cpu_pct: (100 * (cpu.user + cpu.system)) / 1e6 / seconds,
    // How late a 10 ms timer fires (the histogram holds the time between firings).
    lag_ms: Object.fromEntries(
      [
        [50, lag.percentile(50)],
        [99, lag.percentile(99)],
        [100, lag.max],
      ].map(([q, ns]) => [q, Math.max(0, ns / 1e6 - LAG_RESOLUTION_MS)]),
    ),
  });

  // Close every welcomed client; let pending handshakes finish first (each is closed when its
  // welcome arrives), so that no connection is reset while the server is setting it up.
  ownClose = true;
  for (const client of clients) if (client.welcomed && !client.closed) client.ws.close(1000);
  await until(() => clients.every((c) => c.closed), CLOSE_TIMEOUT_S);
  for (const client of clients) if (client.ws && !client.closed) client.ws.terminate();
  process.exit(0);
}

setTimeout(() => {
  emit({ event: "error", error: `watchdog: still running after ${Math.round(WATCHDOG_S)} s` });
  process.exit(3);
}, WATCHDOG_S * 1000).unref();
process.stdin.on("end", () => process.exit(4));
process.stdin.on("error", () => process.exit(4));
process.stdin.resume();
main().catch((error) => {
  emit({ event: "error", error: String(error?.stack ?? error) });
  process.exit(1);
});
