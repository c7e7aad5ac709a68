// The live dashboard of index.html: one BroadcasterClient, the topics it can draw
// (`overview`, `regressions`, `latency-history`: RENDERERS) rendered as they arrive, and the
// connection status. No framework: every value goes into the page with textContent.
//
// Which topics to follow is the service's choice, not the page's: the client is made without
// a `topics` option, so it follows each connection's default subscriptions (the welcome's
// `subscribed`, i.e. the service's --default-topics). Of those, the page draws the ones it has
// a renderer for and hides the panels of the others. One exception: the chart's window topic,
// `latency-history` (CHART_TOPIC), is no default (only this page draws it), so the page
// subscribes to it itself whenever the service offers it (the welcome's `topics`).
//
// The chart (dashboard-chart.js, uPlot) draws the client's merged window of latency-history and
// highlights the regions that the regressions topic names. The freshness line says how old the
// page's data is (the oldest of its topics' last update times), every second, and warns once
// that is more than two broadcast intervals (the welcome's broadcastIntervalMs): the stale
// badges say the service cannot read the database; the freshness line also catches updates
// that stop arriving at all.
//
// Query-string overrides (for tests and experiments): ?ws=ws://host:port/ws and the numeric
// client options, e.g. ?baseDelayMs=200&maxAttempts=10&pingIntervalMs=1000. Values the client
// would refuse are ignored with a console warning (dashboard-options.js).
//
// Access tokens (a service with --auth-mode jwt): `/#token=<jwt>` hands the page a token
// (dashboard-token.js: taken out of the address bar, kept in sessionStorage for reloads). The
// client sends it as its first message on every connection. When the service refuses the
// connection (4001: no token, invalid or expired token) the page says why and asks for a token
// with a small form; a 4009 (a newer connection of the same identity replaced this one) is
// said plainly and not retried. /api/client-config may say `authRequired: true`; then a page
// without a token asks at once instead of waiting for the service's refusal.

import { BroadcasterClient, CloseCode, statusLabel } from "./broadcaster-client.js";
import { LatencyChart } from "./dashboard-chart.js";
import { freshness, regionsInRegression } from "./dashboard-history.js";
import { optionsFromQuery } from "./dashboard-options.js";
import { storeToken, takeFragmentToken, takeToken } from "./dashboard-token.js";

// Set once per page load: a test can check that the page was never reloaded.
window.__loadId ??= `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;

const CAUSES = {
  unavailable: "database unreachable",
  timeout: "database timed out",
  query_rejected: "query rejected by the database",
  bad_response: "unusable answer from the database",
};

/**
 * Where and how to connect: the WebSocket URL (?ws=..., else the service's
 * /api/client-config, else a guess) and whether the service needs a token.
 */
async function clientConfig(search) {
  let config = {};
  try {
    const response = await fetch("api/client-config", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch (error) {
    console.warn("no client config from the service", error);
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url =
    new URLSearchParams(search).get("ws") ||
    (typeof config.websocketUrl === "string" ? config.websocketUrl : null) ||
    `${scheme}://${location.hostname || "127.0.0.1"}:8765/ws`;
  return { url, authRequired: config.authRequired === true };
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
  const regions = regionsInRegression(data);
  chart?.setHighlighted(regions);
  const note = $("latency-history-regressions");
  note.hidden = regions.length === 0;
  note.textContent = regions.length ? `In regression (drawn thicker): ${regions.join(", ")}` : "";
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

function renderHistory(data) {
  chart?.setWindow(data);
}

const CHART_TOPIC = "latency-history";
const RENDERERS = {
  overview: renderOverview,
  regressions: renderRegressions,
  [CHART_TOPIC]: renderHistory,
};
const DRAWN = Object.keys(RENDERERS);

// The chart; null when the vendored uPlot did not load (the rest of the page still works).
const chart = globalThis.uPlot ? new LatencyChart($("latency-chart"), globalThis.uPlot) : null;
if (chart === null) console.warn("uPlot did not load: no chart");

function chooseStat(stat) {
  chart?.setStat(stat);
  for (const button of document.querySelectorAll(".stat-switch button")) {
    button.setAttribute("aria-pressed", String(button.dataset.stat === stat));
  }
}

// Per topic: the latest update, and why its query last failed (while it is stale).
const latest = {};
const failures = {};
let updatesReceived = 0;
let broadcastIntervalMs = null; // the welcome's

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
  renderDataAge();
}

/** The freshness line: the age of the oldest last update among the followed drawn topics. */
function renderDataAge() {
  const followed = client ? client.subscribedTopics : [];
  const times = DRAWN.filter((topic) => followed.includes(topic) && latest[topic])
    .map((topic) => Date.parse(latest[topic].timestamp))
    .filter(Number.isFinite);
  const line = freshness(times.length ? Math.min(...times) : null, Date.now(), broadcastIntervalMs);
  text("freshness", line.text);
  $("freshness").dataset.late = String(line.late);
}

function onError(error) {
  if (error.code === "influxdb_unavailable" && error.topic in RENDERERS) {
    failures[error.topic] = CAUSES[error.cause] ?? "database query failed";
  } else {
    console.warn("broadcaster error", error);
  }
}

let currentStatus = null;

/** What a page can say of a close that stopped the client (4001, 4009). */
function stoppedMessage(lastClose) {
  const reason = lastClose?.reason ? `: ${lastClose.reason}` : "";
  if (lastClose?.code === CloseCode.REPLACED) {
    return (
      `Disconnected: a newer connection with the same identity replaced this one${reason}. ` +
      "This page will not reconnect; reload it to take over again."
    );
  }
  return `Not authorized: the service refused the access token${reason}.`;
}

function renderNotice() {
  const notice = $("notice");
  const live = currentStatus?.state === "connected";
  const stale = DRAWN.filter((topic) => latest[topic]?.stale);
  let message = "";
  if (currentStatus?.state === "stopped") {
    message = stoppedMessage(currentStatus.lastClose);
  } else if (!live && Object.keys(latest).length) {
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

/** Show the panels of the topics this connection follows (the service's defaults, and the
 * chart's topic once confirmed). */
function renderPanels(client) {
  const followed = client.subscribedTopics;
  for (const topic of DRAWN) $(topic).hidden = !followed.includes(topic);
  document.body.dataset.topics = followed.filter((topic) => topic in RENDERERS).join(",");
}

const askedForChart = new WeakSet(); // the clients already asked to follow CHART_TOPIC

function onWelcome(client, welcome) {
  if (Number.isFinite(welcome.broadcastIntervalMs) && welcome.broadcastIntervalMs > 0) {
    broadcastIntervalMs = welcome.broadcastIntervalMs;
  }
  const offered = Array.isArray(welcome.topics) ? welcome.topics : [];
  if (chart !== null && offered.includes(CHART_TOPIC) && !askedForChart.has(client)) {
    askedForChart.add(client);
    client.subscribe([CHART_TOPIC]); // the client asks again by itself after every welcome
  }
  renderPanels(client);
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

// ---- the access token ------------------------------------------------------------------

function sessionStore() {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled
  }
}

// The page's token; the client's tokenProvider reads it, so a new one is used at once.
let token = takeToken(location, history, sessionStore());

function askForToken(why) {
  text("token-reason", why);
  $("token-form").hidden = false;
  $("token-input").focus();
}

function onStopped(detail) {
  if (detail.code !== CloseCode.AUTH_FAILED) return; // 4009: the notice says it; no retry
  storeToken(sessionStore(), null); // refused: do not offer it again on reload
  token = null;
  askForToken(stoppedMessage({ code: detail.code, reason: detail.reason }));
}

// ---- start -----------------------------------------------------------------------------

let client = null;

/** A client for `url`, with the page's token if it has one; replaces the previous one. */
function startClient(url) {
  client?.close();
  const auth = token === null ? {} : { tokenProvider: () => token };
  try {
    client = new BroadcasterClient(url, { ...optionsFromQuery(location.search), ...auth });
  } catch (error) {
    // optionsFromQuery checked every value already; never leave the page without a client.
    console.warn("ignoring the query-string options:", error);
    client = new BroadcasterClient(url, auth);
  }
  const current = client;
  current.addEventListener("status", () => renderStatus(current));
  current.addEventListener("welcome", (event) => onWelcome(current, event.detail));
  current.addEventListener("message", (event) => {
    // "message" comes before the client takes the confirmation in: render after it has.
    if (event.detail.type === "subscription_confirmed") queueMicrotask(() => renderPanels(current));
  });
  current.addEventListener("update", (event) => onUpdate(event.detail));
  current.addEventListener("error", (event) => onError(event.detail));
  current.addEventListener("stopped", (event) => onStopped(event.detail));
  window.__dashboard = { client: current, chart };
  current.connect();
}

async function main() {
  const { url, authRequired } = await clientConfig(location.search);
  text("websocket-url", url);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("token-input").value.trim();
    if (!given) return;
    $("token-input").value = "";
    $("token-form").hidden = true;
    token = given;
    storeToken(sessionStore(), token);
    startClient(url);
  });
  // A new #token= in the same tab changes only the fragment: no reload, so take it here.
  window.addEventListener("hashchange", () => {
    const given = takeFragmentToken(location, history, sessionStore());
    if (given === null) return;
    token = given;
    $("token-form").hidden = true;
    startClient(url);
  });
  for (const button of document.querySelectorAll(".stat-switch button")) {
    button.addEventListener("click", () => chooseStat(button.dataset.stat));
  }
  setInterval(() => {
    if (client) renderCountdown(client);
    renderDataAge();
  }, 1000);
  if (authRequired && token === null) {
    // Not even a first connection: it could only be refused.
    document.body.dataset.state = "stopped";
    text("connection-state", "Token needed");
    askForToken("This service needs an access token.");
    return;
  }
  startClient(url);
}

main();
