// Score charts drawn as inline SVG. Scores run from 0 to 100, so the y axis is fixed.

import { h, svg } from "./dom.js";

const GRADE_LINES = [
  [90, "A"],
  [75, "B"],
  [60, "C"],
  [40, "D"],
];

function describe(points) {
  if (!points.length) return "No runs yet";
  const scores = points.map((point) => point.score).join(", ");
  return `Scores of the last ${points.length} runs, oldest first: ${scores}`;
}

function xFor(index, count, left, width) {
  return count === 1 ? left + width / 2 : left + (index * width) / (count - 1);
}

// A small line of the last runs' scores, for a project card.
export function sparkline(points, { width = 160, height = 36 } = {}) {
  const pad = 3;
  const y = (score) => pad + ((100 - score) * (height - 2 * pad)) / 100;
  const coords = points.map((point, index) => [
    xFor(index, points.length, pad, width - 2 * pad),
    y(point.score),
  ]);
  const last = points.at(-1);
  return svg(
    "svg",
    {
      class: "sparkline",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": describe(points),
    },
    svg("line", { x1: 0, x2: width, y1: y(75), y2: y(75), class: "guide" }),
    coords.length > 1 && svg("polyline", { points: coords.map((c) => c.join(",")).join(" "), class: "line" }),
    last &&
      svg("circle", { cx: coords.at(-1)[0], cy: coords.at(-1)[1], r: 3, class: `dot dot-${last.grade}` }),
  );
}

// The project trend: one dot per run, coloured by grade, each a link to its run.
export function trendChart(points, { width = 720, height = 220 } = {}) {
  const left = 34;
  const right = 12;
  const top = 10;
  const bottom = 22;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const y = (score) => top + ((100 - score) * plotHeight) / 100;
  const x = (index) => xFor(index, points.length, left, plotWidth);

  const guides = [100, ...GRADE_LINES.map(([floor]) => floor), 0].map((score) =>
    svg(
      "g",
      { class: "axis" },
      svg("line", { x1: left, x2: width - right, y1: y(score), y2: y(score), class: "guide" }),
      svg("text", { x: left - 6, y: y(score) + 4, "text-anchor": "end" }, String(score)),
    ),
  );
  const line =
    points.length > 1 &&
    svg("polyline", {
      class: "line",
      points: points.map((point, index) => `${x(index)},${y(point.score)}`).join(" "),
    });
  const dots = points.map((point, index) =>
    svg(
      "a",
      {
        href: `#/runs/${point.run_id}`,
        // Out of the tab order: the runs table below has the same links.
        tabindex: -1,
        "aria-label": `Run ${point.scenario}, ${point.status}: score ${point.score}, grade ${point.grade}`,
      },
      svg(
        "circle",
        // A hollow dot: the run is not finished, so its score is not a verdict.
        {
          cx: x(index),
          cy: y(point.score),
          r: 5,
          class: `dot dot-${point.grade}${point.status === "finished" ? "" : " dot-open"}`,
        },
        svg("title", {}, `${point.scenario} · ${point.status} · ${point.score} (${point.grade})`),
      ),
    ),
  );
  const chart = svg(
    "svg",
    { class: "trend", viewBox: `0 0 ${width} ${height}`, role: "group", "aria-label": describe(points) },
    guides,
    line,
    dots,
    svg("text", { x: left, y: height - 6, class: "caption" }, "oldest"),
    svg("text", { x: width - right, y: height - 6, class: "caption", "text-anchor": "end" }, "newest"),
  );
  return h("figure", { class: "chart" }, chart, h("figcaption", { class: "muted" }, describe(points)));
}
