// The live dashboard of index.html: one BroadcasterClient, the topics it can draw
// (`overview`, `regressions`: RENDERERS) rendered as they arrive, and the connection status.
// No framework: every value goes into the page with textContent.
//
// Which topics to follow is the service's choice, not the page's: the client is made without
// a `topics` option, so it follows each connection's default subscriptions (the welcome's
// `subscribed`, i.e. the service's --default-topics). Of those, the page draws the ones it has
// a renderer for and hides the panels of the others.
//
// Query-string overrides (for tests and experiments): ?ws=ws://host:port/ws and the numeric
// client options, e.g. ?baseDelayMs=200&maxAttempts=10&pingIntervalMs=1000. Values the client
// would refuse are ignored with a console warning (dashboard-options.js).

import { BroadcasterClient, statusLabel } from "./broadcaster-client.js";
import { optionsFromQuery } from "./dashboard-options.js";

// Set once per page load: a test can check that the page was never reloaded.
window.__loadId ??= `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;

const CAUSES = {
  unavailable: "database unreachable",
  timeout: "database timed out",
  query_rejected: "query rejected by the database",
  bad_response: "unusable answer from the database",
};

/** The WebSocket URL: ?ws=..., else the service's /api/client-config, else a guess. */
async function websocketUrl(search) {
  const override = new URLSearchParams(search).get("ws");
  if (override) return override;
  try {
    const response = await fetch("api/client-config", { cache: "no-store" });
    if (response.ok) {
      const config = await response.json();
      if (typeof config.websocketUrl === "string") return config.websocketUrl;
    }
  } catch (error) {
    console.warn("no client config from the service", error);
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.hostname || "127.0.0.1"}:8765/ws`;
}

// ---- rendering -------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function text(id, value) {
  $(id).textContent = value;
}

function ms(value) {
  return typeof value === "number" ? `${value.toFixed(1)} ms` : "–";
}

function pct(value, digits = 2) {
  return typeof value === "number" ? `${value.toFixed(digits)} %` : "–";
}

function count(value) {
  return typeof value === "number" ? String(value) : "–";
}

/** "00:54:29 UTC" for an ISO timestamp; "–" for none. */
function clock(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "–" : `${date.toISOString().slice(11, 19)} UTC`;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const value of cells) {
    const td = document.createElement("td");
    td.textContent = value;
    tr.append(td);
  }
  return tr;
}

function renderOverview(data) {
  text("pop-count", count(data.popCount));
  text("pops-up", count(data.up));
  text("pops-down", count(data.down));
  text("regression-count", count(data.regressionCount));
  text("latency-mean", ms(data.latencyMeanMs));
  text("latency-p95", ms(data.latencyP95Ms));
  text("loss-mean", pct(data.lossMeanPct));
  const regions = Object.entries(data.regions ?? {}).map(([name, region]) =>
    row([name, count(region.pops), count(region.up), ms(region.latencyMeanMs)]),
  );
  $("regions-body").replaceChildren(...regions);
}

function renderRegressions(data) {
  const found = Array.isArray(data.regressions) ? data.regressions : [];
  $("no-regressions").hidden = found.length > 0;
  $("regressions-table").hidden = found.length === 0;
  $("regressions-body").replaceChildren(
    ...found.map((r) =>
      row([
        r.pop,
        r.region,
        ms(r.currentMs),
        ms(r.baselineMs),
        typeof r.increasePct === "number" ? `+${r.increasePct.toFixed(0)} %` : "–",
        clock(r.since),
      ]),
    ),
  );
}

const RENDERERS = { overview: renderOverview, regressions: renderRegressions };
const DRAWN = Object.keys(RENDERERS);

// Per topic: the latest update, and why its query last failed (while it is stale).
const latest = {};
const failures = {};
let updatesReceived = 0;

function renderFreshness(topic) {
  const update = latest[topic];
  if (!update) return;
  const section = $(topic);
  section.classList.toggle("stale", update.stale === true);
  const badge = $(`${topic}-stale`);
  badge.hidden = update.stale !== true;
  badge.textContent = update.stale
    ? `Stale: data as of ${clock(update.timestamp)}, ${failures[topic] ?? "database unreachable"}`
    : "";
  text(`${topic}-updated`, `Updated ${clock(update.timestamp)} · #${update.seq}`);
  renderNotice();
}

function onUpdate(update) {
  const render = RENDERERS[update.topic];
  if (!render) return;
  updatesReceived += 1;
  text("update-count", String(updatesReceived));
  if (!update.stale) delete failures[update.topic];
  latest[update.topic] = update;
  render(update.data ?? {});
  renderFreshness(update.topic);
}

function onError(error) {
  if (error.code === "influxdb_unavailable" && error.topic in RENDERERS) {
    failures[error.topic] = CAUSES[error.cause] ?? "database query failed";
  } else {
    console.warn("broadcaster error", error);
  }
}

let currentStatus = null;

function renderNotice() {
  const notice = $("notice");
  const live = currentStatus?.state === "connected";
  const stale = DRAWN.filter((topic) => latest[topic]?.stale);
  let message = "";
  if (!live && Object.keys(latest).length) {
    message =
      "Not live: the figures below are the last ones received before the connection was lost.";
  } else if (stale.length) {
    message =
      `Stale data (${stale.join(", ")}): the service cannot read the database; ` +
      "showing the last good values.";
  }
  notice.hidden = message === "";
  notice.textContent = message;
}

function renderStatus(client) {
  const status = client.status;
  currentStatus = status;
  document.body.dataset.state = status.state;
  document.body.dataset.live = String(status.state === "connected");
  text("connection-state", statusLabel(status));
  // The RTT and its quality belong to the current connection (none while reconnecting).
  text("rtt", status.rttMs === null ? "–" : `${status.rttMs.toFixed(1)} ms`);
  text("quality", status.quality ?? "–");
  $("quality").dataset.quality = status.quality ?? "";
  text("connection-id", status.connectionId ?? "–");
  renderCountdown(client);
  renderNotice();
}

/** Show the panels of the topics this connection follows (the service's defaults). */
function renderPanels(client) {
  const followed = client.subscribedTopics;
  for (const topic of DRAWN) $(topic).hidden = !followed.includes(topic);
  document.body.dataset.topics = followed.filter((topic) => topic in RENDERERS).join(",");
}

function renderCountdown(client) {
  const status = client.status;
  const waitMs = client.nextAttemptInMs();
  let detail = "";
  if (waitMs !== null) {
    const what = status.state === "server_down" ? "next probe" : "next try";
    detail = `${what} in ${Math.ceil(waitMs / 1000)} s`;
  } else if (status.state === "reconnecting" || status.probing) {
    detail = "trying now";
  }
  if (status.planned) detail = `server restarting, ${detail}`;
  text("connection-detail", detail);
}

// ---- start -----------------------------------------------------------------------------

async function main() {
  const url = await websocketUrl(location.search);
  text("websocket-url", url);
  let client;
  try {
    client = new BroadcasterClient(url, optionsFromQuery(location.search));
  } catch (error) {
    // optionsFromQuery checked every value already; never leave the page without a client.
    console.warn("ignoring the query-string options:", error);
    client = new BroadcasterClient(url);
  }
  client.addEventListener("status", () => renderStatus(client));
  client.addEventListener("welcome", () => renderPanels(client));
  client.addEventListener("update", (event) => onUpdate(event.detail));
  client.addEventListener("error", (event) => onError(event.detail));
  setInterval(() => renderCountdown(client), 1000);
  window.__dashboard = { client };
  client.connect();
}

main();
