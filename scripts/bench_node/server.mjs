// The reference broadcast server of scripts/bench: npm `ws`, the minimum of our protocol.
//
//   node scripts/bench_node/server.mjs --port 0 --interval-ms 100 --payload-bytes 1000
//       [--tls-cert cert.pem --tls-key key.pem]   (wss://: `ws` on a node:https server)
//
// On connect: `welcome` (subscribed to nothing). Accepts `subscribe` / `unsubscribe` (answers
// `subscription_confirmed`, then the topic's latest value, as our service does) and answers
// `ping` with `pong`. Every interval (drift-free ticks at start + k * interval; a late tick skips
// the ticks it missed, like broadcaster/broadcast/loop.py) it builds one `metrics_update` per topic,
// serializes it ONCE to a Buffer and hands that Buffer to `send` of every open subscriber: the
// idiomatic fast fan-out with `ws`. The message carries `sentAtUs` (in data.series[0].rows[0], the
// shape of our service's update), the wall clock (µs) just
// before serialization, and `data` padded so that the whole message is about --payload-bytes.
//
// Prints one JSON line on stdout once listening: {"event":"listening","port":P}; on SIGTERM or
// SIGINT (or when stdin closes: the controller is gone) it prints {"event":"stopped",...} with its
// counters and exits 0. `ws` is loaded from BENCH_NODE_MODULES (default: .bench/node/node_modules
// of the repository, where scripts/bench installs the locked version with `npm ci`).

import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { readFileSync } from "node:fs";
import { createServer } from "node:https";
import { parseArgs } from "node:util";

const modules =
  process.env.BENCH_NODE_MODULES ?? new URL("../../.bench/node/node_modules/", import.meta.url).pathname;
const require = createRequire(modules.endsWith("/") ? modules : `${modules}/`);
const { WebSocketServer, WebSocket } = require("ws");

const { values: args } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    "interval-ms": { type: "string", default: "100" },
    "payload-bytes": { type: "string", default: "1000" },
    topics: { type: "string", default: "bench" },
    "tls-cert": { type: "string" }, // with --tls-key: wss:// (an https server carries ws)
    "tls-key": { type: "string" },
  },
});
const https =
  args["tls-cert"] && args["tls-key"]
    ? createServer({ cert: readFileSync(args["tls-cert"]), key: readFileSync(args["tls-key"]) })
    : null;
const intervalMs = Number(args["interval-ms"]);
const payloadBytes = Number(args["payload-bytes"]);
const topics = args.topics.split(",").filter(Boolean);
if (!(intervalMs > 0) || !(payloadBytes >= 0) || topics.length === 0) {
  console.error("server.mjs: bad --interval-ms, --payload-bytes or --topics");
  process.exit(2);
}

const wallUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const subscribers = new Map(topics.map((t) => [t, new Set()]));
const latest = new Map(); // topic -> Buffer of the last metrics_update
const seqs = new Map(topics.map((t) => [t, 0]));
const counters = { connections: 0, broadcasts: 0, deliveries: 0, ticks: 0, skippedTicks: 0 };
let nextId = 0;

// The padding that brings a message to about --payload-bytes (computed once, per topic).
const pads = new Map(
  topics.map((topic) => {
    const probe = JSON.stringify(updateMessage(topic, 1_000_000, wallUs(), ""));
    return [topic, "x".repeat(Math.max(0, payloadBytes - probe.length))];
  }),
);

function updateMessage(topic, seq, sentAtUs, pad) {
  return {
    type: "metrics_update",
    topic,
    seq,
    timestamp: new Date(sentAtUs / 1000).toISOString(),
    stale: false,
    // The same shape as our service's update of a topics-file topic (scripts/bench_source.py),
    // so that the load generator parses the same structure from both servers.
    data: { series: [{ name: topic, tags: {}, rows: [{ sentAtUs, pad }] }] },
  };
}

const send = (ws, text) => {
  if (ws.readyState === WebSocket.OPEN) ws.send(text);
};

const wss = new WebSocketServer({
  ...(https ? { server: https } : { host: args.host, port: Number(args.port) }),
  path: "/ws",
  perMessageDeflate: false,
  clientTracking: true,
  maxPayload: 65536,
});

wss.on("connection", (ws) => {
  counters.connections += 1;
  const mine = new Set();
  send(
    ws,
    JSON.stringify({
      type: "welcome",
      connectionId: `ws_${++nextId}_${Date.now()}`,
      timestamp: new Date().toISOString(),
      topics,
      subscribed: [],
      broadcastIntervalMs: intervalMs,
    }),
  );
  ws.on("message", (data, isBinary) => {
    let message;
    try {
      message = isBinary ? null : JSON.parse(data);
    } catch {
      message = null;
    }
    if (message === null || typeof message !== "object") {
      send(ws, JSON.stringify({ type: "error", code: "invalid_message", message: "JSON object expected" }));
      return;
    }
    if (message.type === "ping") {
      const pong = { type: "pong", timestamp: new Date().toISOString() };
      if (message.id !== undefined && message.id !== null) pong.id = message.id;
      send(ws, JSON.stringify(pong));
    } else if (message.type === "subscribe" || message.type === "unsubscribe") {
      const names = Array.isArray(message.topics) ? message.topics : [];
      const added = [];
      for (const name of names) {
        const set = subscribers.get(name);
        if (set === undefined) continue;
        if (message.type === "subscribe" && !mine.has(name)) {
          mine.add(name);
          set.add(ws);
          added.push(name);
        } else if (message.type === "unsubscribe" && mine.delete(name)) {
          set.delete(ws);
        }
      }
      send(ws, JSON.stringify({ type: "subscription_confirmed", topics: [...mine].sort() }));
      for (const name of added) {
        const buffer = latest.get(name);
        if (buffer !== undefined) ws.send(buffer, { binary: false });
      }
    } else {
      send(ws, JSON.stringify({ type: "error", code: "unknown_type", message: "unknown type" }));
    }
  });
  ws.on("close", () => {
    for (const name of mine) subscribers.get(name).delete(ws);
    mine.clear();
  });
  ws.on("error", () => {});
});

function broadcast() {
  counters.ticks += 1;
  for (const topic of topics) {
    const set = subscribers.get(topic);
    if (set.size === 0) continue;
    const seq = seqs.get(topic) + 1;
    seqs.set(topic, seq);
    // Serialize once; every client gets the same Buffer, sent as a text frame.
    const buffer = Buffer.from(JSON.stringify(updateMessage(topic, seq, wallUs(), pads.get(topic))));
    latest.set(topic, buffer);
    counters.broadcasts += 1;
    for (const ws of set) {
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(buffer, { binary: false });
        counters.deliveries += 1;
      }
    }
  }
}

let nextTick = 0;
let timer = null;
function schedule() {
  timer = setTimeout(onTick, Math.max(0, nextTick - performance.now()));
}
function onTick() {
  broadcast();
  nextTick += intervalMs;
  const behind = performance.now() - nextTick;
  if (behind >= 0) {
    const missed = Math.floor(behind / intervalMs) + 1;
    counters.skippedTicks += missed;
    nextTick += missed * intervalMs;
  }
  schedule();
}

let stopping = false;
function stop(why) {
  if (stopping) return;
  stopping = true;
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify({ event: "stopped", why, ...counters })}\n`);
  for (const ws of wss.clients) ws.terminate();
  wss.close(() => (https ? https.close(() => process.exit(0)) : process.exit(0)));
  setTimeout(() => process.exit(0), 2000).unref();
}

wss.on("listening", () => {
  process.stdout.write(`${JSON.stringify({ event: "listening", port: wss.address().port })}\n`);
  nextTick = performance.now() + intervalMs;
  schedule();
});
wss.on("error", (error) => {
  console.error(`server.mjs: ${error.message}`);
  process.exit(1);
});
if (https) https.listen(Number(args.port), args.host);
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
process.stdin.on("end", () => stop("stdin closed"));
process.stdin.on("error", () => stop("stdin closed"));
process.stdin.resume();
