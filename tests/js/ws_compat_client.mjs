// A dashboard on npm `ws` (the Node client our users compare with), for tests/ws/test_client_compat.py.
//
//   node tests/js/ws_compat_client.mjs ws://127.0.0.1:P/ws TOPIC OVERSIZED_BYTES
//
// Connection 1: welcome, subscribe to TOPIC, one metrics_update, a WebSocket ping answered by a
// pong frame, a protocol `ping` answered by `pong`, then a clean close (1000) started by us.
// Connection 2: a message of OVERSIZED_BYTES, which the server must close with 1009.
// Prints one JSON line with what happened. `ws` comes from BENCH_NODE_MODULES.

import { createRequire } from "node:module";

const require = createRequire(`${process.env.BENCH_NODE_MODULES.replace(/\/$/, "")}/`);
const { WebSocket } = require("ws");
const [url, topic, oversized] = process.argv.slice(2);
setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out" }));
  process.exit(1);
}, 20_000).unref();

function open() {
  const ws = new WebSocket(url);
  const queue = [];
  const waiters = [];
  ws.on("message", (data) => {
    const message = JSON.parse(data.toString());
    const waiter = waiters.findIndex((w) => w.match(message));
    if (waiter >= 0) waiters.splice(waiter, 1)[0].resolve(message);
    else queue.push(message);
  });
  const next = (match) =>
    new Promise((resolve) => {
      const index = queue.findIndex(match);
      if (index >= 0) resolve(queue.splice(index, 1)[0]);
      else waiters.push({ match, resolve });
    });
  const closed = new Promise((resolve) => ws.on("close", (code) => resolve(code)));
  return { ws, next, closed };
}

const result = {};
const first = open();
result.welcome = (await first.next((m) => m.type === "welcome")).type;
first.ws.send(JSON.stringify({ type: "subscribe", topics: [topic] }));
result.confirmed = (await first.next((m) => m.type === "subscription_confirmed")).topics;
result.updateTopic = (await first.next((m) => m.type === "metrics_update")).topic;
result.pongFrame = await new Promise((resolve) => {
  first.ws.once("pong", (payload) => resolve(payload.toString()));
  first.ws.ping("are you there");
});
first.ws.send(JSON.stringify({ type: "ping", id: 7 }));
result.pongId = (await first.next((m) => m.type === "pong")).id;
first.ws.close(1000, "done");
result.clientCloseCode = await first.closed;

const second = open();
await second.next((m) => m.type === "welcome");
second.ws.send("x".repeat(Number(oversized)));
result.oversizedCloseCode = await second.closed;
console.log(JSON.stringify(result));
