// A small page script using the browser client through its declarations
// (broadcaster/static/broadcaster-client.d.ts): `tsc --noEmit -p tests/js` must accept it, and
// reject the misuses marked @ts-expect-error (so the declarations are not just `any`).
import {
  BroadcasterClient,
  CloseCode,
  State,
  applyAppend,
  isWindow,
  statusLabel,
  type ClientMessage,
  type ServerMessage,
} from "../../broadcaster/static/broadcaster-client.js";

interface Overview {
  popCount: number;
  latencyMeanMs: number | null;
}

const client = new BroadcasterClient("wss://metrics.example/ws", {
  topics: ["overview", "regressions"],
  tokenProvider: async () => "eyJhbGciOiJIUzI1NiJ9.e30.sig",
  maxAttempts: 10,
});
// @ts-expect-error: an option that does not exist
new BroadcasterClient("ws://127.0.0.1:8765/ws", { topic: ["overview"] });
// @ts-expect-error: a fixed token is a string
new BroadcasterClient("ws://127.0.0.1:8765/ws", { token: 42 });

client.addEventListener("update", (event) => {
  const { topic, seq, stale, timestamp } = event.detail;
  if (topic === "overview") {
    const data = event.detail.data as unknown as Overview;
    console.log(seq, stale, timestamp, data.popCount, data.latencyMeanMs?.toFixed(1));
  }
  // A window topic's update is the whole merged window.
  const data: unknown = event.detail.data;
  if (isWindow(data)) {
    for (const series of data.series) {
      const [time, mean] = series.values[series.values.length - 1] ?? [data.from, null];
      console.log(series.tags["region"], new Date(time).toISOString(), mean, data.asOf);
    }
  }
});
client.addEventListener("status", (event) => {
  document.title = statusLabel(event.detail);
  if (event.detail.state === State.STOPPED && event.detail.lastClose?.code === CloseCode.REPLACED) {
    console.log("another tab took over");
  }
  // @ts-expect-error: not a state
  if (event.detail.state === "sleeping") console.log("never");
});
client.addEventListener("error", (event) => {
  const detail = event.detail;
  if ("source" in detail) console.warn("client:", detail.code, detail.message);
  else if (detail.code === "influxdb_unavailable") console.warn(detail.topic, detail.cause);
});
client.addEventListener("stopped", (event) => console.warn(event.detail.code, event.detail.reason));
client.addEventListener("message", (event) => describe(event.detail as ServerMessage));
client.connect();
client.subscribe("region-latency");
client.unsubscribe(["regressions"]);

/** Every server message type, narrowed by `type`; `never` proves the switch is complete. */
function describe(message: ServerMessage): string {
  switch (message.type) {
    case "welcome":
      return `${message.connectionId}: ${message.topics.length} topics, ${message.identity?.sub ?? "anonymous"}`;
    case "metrics_update":
      return `${message.topic} #${message.seq}${message.stale ? " stale" : ""}`;
    case "metrics_append": {
      const merged = applyAppend(
        { window: "1h", resolution: "10s", from: 0, to: 0, asOf: null, series: [] },
        message.data,
      );
      return `${message.topic} #${message.seq}: ${merged.series.length} series from ${merged.from}`;
    }
    case "subscription_confirmed":
      return message.topics.join(", ");
    case "pong":
      return `pong ${String(message.id ?? "")} at ${message.timestamp}`;
    case "error":
      return `${message.code}: ${message.message} ${message.unknownCount ?? ""}`;
    case "auth_refreshed":
      return `token valid until ${message.authExpiresAt}`;
    case "server_shutdown":
      return `back in ${message.reconnectAfterMs} ms`;
    default: {
      const unknown: never = message;
      return String(unknown);
    }
  }
}

const requests: ClientMessage[] = [
  { type: "subscribe", topics: ["overview"] },
  { type: "unsubscribe", topics: ["overview"] },
  { type: "ping", id: 1 },
  { type: "ping" },
  { type: "auth", token: "eyJhbGciOiJIUzI1NiJ9.e30.sig" },
  { type: "snapshot", topic: "latency-history" },
];
// @ts-expect-error: a snapshot names one topic
const badSnapshot: ClientMessage = { type: "snapshot", topics: ["latency-history"] };
// @ts-expect-error: a ping id cannot be an object
const badPing: ClientMessage = { type: "ping", id: { n: 1 } };
console.log(requests.length, badPing, badSnapshot, describe);
