// Unit tests of broadcaster/static/dashboard-history.js, what the dashboard's chart and
// freshness line show:  node --test tests/js/dashboard-history.test.mjs

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  chartColumns,
  formatAge,
  freshness,
  regionsInRegression,
} from "../../broadcaster/static/dashboard-history.js";

const COLUMNS = ["time", "mean", "p95"];

function series(region, values) {
  return { name: "pop_metrics", tags: { region }, columns: COLUMNS, values };
}

const WINDOW = {
  window: "1h",
  resolution: "10s",
  from: 0,
  to: 40_000,
  asOf: "1970-01-01T00:00:30Z",
  series: [
    series("us-east", [
      [10_000, 20.5, 30],
      [30_000, 21, null],
    ]),
    series("eu-west", [
      [20_000, 10, 15],
      [30_000, 11, 16],
    ]),
  ],
};

test("regions sorted, one shared time axis in seconds, null where a region has no row", () => {
  assert.deepEqual(chartColumns(WINDOW, "mean"), {
    regions: ["eu-west", "us-east"],
    times: [10, 20, 30],
    values: [
      [null, 10, 11],
      [20.5, null, 21],
    ],
  });
});

test("the other statistic is its own column; a null value stays null", () => {
  assert.deepEqual(chartColumns(WINDOW, "p95").values, [
    [null, 15, 16],
    [30, null, null],
  ]);
});

test("no window, series without a region or the column, malformed rows: nothing drawn", () => {
  assert.deepEqual(chartColumns(null, "mean"), { regions: [], times: [], values: [] });
  const odd = {
    series: [
      { name: "m", tags: {}, columns: COLUMNS, values: [[1, 2, 3]] },
      { name: "m", tags: { region: "x" }, columns: ["time", "max"], values: [[1, 2]] },
      { name: "m", tags: { region: "y" }, columns: COLUMNS, values: ["bad", [null, 1, 2]] },
    ],
  };
  assert.deepEqual(chartColumns(odd, "mean"), { regions: ["y"], times: [], values: [[]] });
});

test("the regions in regression, once each, sorted", () => {
  const data = {
    regressions: [
      { pop: "sin1", region: "ap-southeast" },
      { pop: "syd1", region: "ap-southeast" },
      { pop: "gru1", region: "sa-east" },
      { pop: "bad" },
    ],
  };
  assert.deepEqual(regionsInRegression(data), ["ap-southeast", "sa-east"]);
  assert.deepEqual(regionsInRegression({}), []);
});

test("ages: tenths of seconds, then minutes, then hours", () => {
  assert.equal(formatAge(1234), "1.2 s");
  assert.equal(formatAge(-50), "0.0 s"); // a browser clock behind the service's
  assert.equal(formatAge(185_000), "3 min 05 s");
  assert.equal(formatAge(2 * 3_600_000 + 7 * 60_000), "2 h 07 min");
});

test("the freshness line warns once the data is older than two intervals", () => {
  const asOf = Date.parse("2026-01-01T13:14:50Z");
  assert.deepEqual(freshness(asOf, asOf + 1200, 1000), {
    text: "Data as of 13:14:50 UTC, 1.2 s ago",
    late: false,
    ageMs: 1200,
  });
  assert.equal(freshness(asOf, asOf + 2000, 1000).late, false);
  const late = freshness(asOf, asOf + 2100, 1000);
  assert.equal(late.late, true);
  assert.equal(late.text, "Data as of 13:14:50 UTC, 2.1 s ago (late: the service sends every 1.0 s)");
  assert.equal(freshness(asOf, asOf + 60_000, null).late, false); // no interval known yet
  assert.deepEqual(freshness(null, asOf, 1000), { text: "Waiting for data", late: false, ageMs: null });
});
