// The dashboard's latency chart: one uPlot (vendored, static/vendor/uplot/, the global `uPlot`)
// drawing latency per region over the window of the latency-history topic.
//
// - One line per region, of one statistic at a time (mean or p95: with both, six regions make
//   twelve lines and a legend too long for a phone). Hovering moves uPlot's cursor; the legend
//   under the chart shows each region's value at that time.
// - Regions with a PoP in regression (the regressions topic) are drawn thicker and named
//   "<region> · regression" in the legend, whose row is marked (.regression, dashboard.css).
// - Colours come from dashboard.css's custom properties (--chart-1..10, --chart-axis,
//   --chart-grid), so dark mode (prefers-color-scheme) is one place; a change of the scheme
//   rebuilds the chart with the new colours.
// - The chart takes its container's width (a ResizeObserver) and a height to match, so it fits
//   a phone's screen.
//
// A new window of the same regions, statistic, highlight and colours only replaces the data
// (uPlot's setData, cheap: once per broadcast tick); anything else rebuilds the chart.

import { chartColumns, utcClock } from "./dashboard-history.js";

const PALETTE_SIZE = 10; // --chart-1 .. --chart-10 in dashboard.css
const MIN_HEIGHT_PX = 200;
const MAX_HEIGHT_PX = 360;
const NORMAL_WIDTH_PX = 1.5;
const HIGHLIGHT_WIDTH_PX = 3.5;

function cssColor(element, name, fallback) {
  return getComputedStyle(element).getPropertyValue(name).trim() || fallback;
}

function msLabel(value) {
  return Number.isFinite(value) ? `${value.toFixed(1)} ms` : "–";
}

export class LatencyChart {
  /**
   * @param {HTMLElement} container where the chart goes (it takes the container's width)
   * @param {typeof globalThis.uPlot} uPlot the vendored library
   */
  constructor(container, uPlot) {
    this._container = container;
    this._uPlot = uPlot;
    this._window = null;
    this._stat = "mean";
    this._highlighted = [];
    this._plot = null;
    this._shape = ""; // what the current plot was built for; a change rebuilds it
    this._columns = { regions: [], times: [], values: [] };
    this._colors = []; // the regions' line colours, as drawn
    this._dark = window.matchMedia("(prefers-color-scheme: dark)");
    this._dark.addEventListener("change", () => this._draw(true));
    this._resizer = new ResizeObserver(() => this._resize());
    this._resizer.observe(container);
  }

  /** The statistic drawn ("mean" or "p95"). */
  get stat() {
    return this._stat;
  }

  /** A window topic's data (the client's merged window): redraw. */
  setWindow(window) {
    this._window = window;
    this._draw(false);
  }

  /** The regions to highlight (in regression). */
  setHighlighted(regions) {
    this._highlighted = [...regions].sort();
    this._draw(false);
  }

  setStat(stat) {
    this._stat = stat;
    this._draw(false);
  }

  /** What is drawn, for tests and the console: regions, points per region, newest time. */
  describe() {
    const { regions, times, values } = this._columns;
    return {
      stat: this._stat,
      regions,
      highlighted: this._highlighted.filter((r) => regions.includes(r)),
      points: Object.fromEntries(
        regions.map((r, i) => [r, values[i].filter((v) => v !== null).length]),
      ),
      newestTime: times.length ? times[times.length - 1] : null,
      colors: this._colors,
      width: this._plot?.width ?? 0,
      height: this._plot?.height ?? 0,
    };
  }

  _size() {
    const width = Math.max(0, Math.floor(this._container.clientWidth));
    const height = Math.round(Math.min(MAX_HEIGHT_PX, Math.max(MIN_HEIGHT_PX, width * 0.45)));
    return { width, height };
  }

  _resize() {
    if (this._plot === null) return;
    const size = this._size();
    if (size.width !== this._plot.width || size.height !== this._plot.height) {
      this._plot.setSize(size);
    }
  }

  _draw(rebuild) {
    if (this._window === null) return; // nothing to draw before the first window
    this._columns = chartColumns(this._window, this._stat);
    const { regions, times, values } = this._columns;
    const shape = JSON.stringify([regions, this._stat, this._highlighted, this._dark.matches]);
    const data = [times, ...values];
    if (this._plot !== null && !rebuild && shape === this._shape) {
      this._plot.setData(data);
      return;
    }
    this._plot?.destroy();
    this._shape = shape;
    this._plot = new this._uPlot(this._options(regions), data, this._container);
    this._markLegend(regions);
  }

  _options(regions) {
    const root = document.documentElement;
    const axis = cssColor(root, "--chart-axis", "#667085");
    const grid = cssColor(root, "--chart-grid", "#e3e6ec");
    const axisStyle = { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    const uPlot = this._uPlot;
    this._colors = regions.map((_r, i) =>
      cssColor(root, `--chart-${(i % PALETTE_SIZE) + 1}`, "#3366cc"),
    );
    return {
      ...this._size(),
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { y: { range: (_u, _min, max) => [0, Number.isFinite(max) ? max * 1.1 : 1] } },
      cursor: { focus: { prox: 24 } },
      focus: { alpha: 0.35 },
      legend: { live: true },
      axes: [
        // Times as the rest of the page shows them: 24 h, UTC (the legend's time says "UTC").
        { ...axisStyle, values: (_u, ticks) => ticks.map((t) => utcClock(t * 1000).slice(0, 5)) },
        { ...axisStyle, size: 64, values: (_u, ticks) => ticks.map((t) => `${t} ms`) },
      ],
      series: [
        {
          label: "Time",
          value: (_u, ts) => (Number.isFinite(ts) ? utcClock(ts * 1000) : "–"),
        },
        ...regions.map((region, i) => {
          const hot = this._highlighted.includes(region);
          return {
            label: hot ? `${region} · regression` : region,
            stroke: this._colors[i],
            width: hot ? HIGHLIGHT_WIDTH_PX : NORMAL_WIDTH_PX,
            points: { show: false },
            value: (_u, v) => msLabel(v),
          };
        }),
      ],
    };
  }

  /** Mark the legend rows of the regions in regression (styled in dashboard.css). */
  _markLegend(regions) {
    const rows = this._plot.root.querySelectorAll(".u-legend .u-series");
    // Row 0 is the time; row i the series i (regions[i - 1]).
    rows.forEach((row, i) => {
      const region = i > 0 ? regions[i - 1] : null;
      row.classList.toggle("regression", region !== null && this._highlighted.includes(region));
      if (region !== null) row.dataset.region = region;
    });
  }
}
