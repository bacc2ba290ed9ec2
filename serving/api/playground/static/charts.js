// Routing bars, the timing breakdown and the loss curve: hand-made HTML/SVG, no library.
import { el, fixed, millis, svg } from "./dom.js";

const visionRows = (card) => (card ? card.routing_rows.filter((row) => row.kind === "vision") : []);

// A record's vision routing as [[rowName, {expert: weight}], ...]: one row is {expert: weight}, several are
// {row: {expert: weight}} (see docs/record.md).
export function routingRows(routing, card) {
  const values = Object.values(routing || {});
  if (values.length && values.every((v) => typeof v === "number")) {
    const rows = visionRows(card);
    return [[rows.length === 1 ? rows[0].name : "routing", routing]];
  }
  return Object.entries(routing || {});
}

// The record's LM rows (lm_routing) in the same shape: [[rowName, before, after, caption], ...], each layer's
// listed (heaviest) experts.
function lmRows(record) {
  const lm = record.lm_routing;
  if (!lm) return [];
  const weights = (entries) => Object.fromEntries(entries.map((e) => [e.expert, e.weight]));
  return lm.layers.map((layer) => {
    const ran = layer.engine_experts ? `; the engine ran ${layer.engine_experts.join(", ")} on ${layer.engine_tokens} token(s)` : "";
    return [layer.row, weights(layer.base), weights(layer.routing),
      `LM layer ${layer.layer} at the answer position (${lm.applied ? "applied" : "not applied: the layer kept its router"}${ran})`];
  });
}

function bar(kind, expert, weight) {
  const width = Math.max(0, Math.min(1, weight || 0)) * 100;
  return el("div", { class: `bar-line ${kind}` }, [
    el("span", { class: "bar-kind", text: kind }),
    el("span", { class: "bar-track" }, el("span", {
      class: `bar ${kind}`, role: "img", style: { width: `${width}%` },
      "aria-label": `${expert} ${kind}: ${fixed(weight)}`,
    })),
    el("span", { class: "bar-value", text: fixed(weight) }),
  ]);
}

// One group per routing row, vision rows then LM rows; per expert a "before" (hatched) and an "after" (solid) bar.
export function routingChart(record, card) {
  const before = new Map(routingRows(record.base_routing, card));
  const vision = routingRows(record.routing, card);
  const lm = lmRows(record);
  const groups = [
    ...vision.map(([row, weights]) => [row, before.get(row) || {}, weights,
      vision.length > 1 || lm.length ? `vision row ${row}` : "experts"]),
    ...lm,
  ];
  return el("div", { class: "routing" }, groups.map(([row, base, weights, caption]) => {
    const declared = (card ? card.routing_rows.find((r) => r.name === row) : null) || { experts: [] };
    const listed = declared.experts.filter((e) => e in weights || e in base);
    const experts = listed.length ? listed : Object.keys(weights);
    return el("figure", { class: "routing-row" }, [
      el("figcaption", { text: caption }),
      ...experts.map((expert) => el("div", { class: "expert" }, [
        el("div", { class: "expert-name", text: expert }),
        bar("before", expert, base[expert]),
        bar("after", expert, weights[expert]),
      ])),
    ]);
  }));
}

const STAGES = ["encode", "embed", "search", "reroute", "generate"];

// Seconds per stage as a stacked bar plus a list; stages the strategy skipped are left out.
export function timingChart(timings) {
  const stages = STAGES.filter((s) => typeof (timings || {})[s] === "number" && timings[s] > 0);
  const sum = stages.reduce((acc, s) => acc + timings[s], 0) || 1;
  return el("div", { class: "timings" }, [
    el("div", { class: "stack", role: "img", "aria-label": stages.map((s) => `${s} ${millis(timings[s])}`).join(", ") },
      stages.map((s) => el("span", { class: `seg seg-${s}`, style: { width: `${(timings[s] / sum) * 100}%` }, title: s }))),
    el("dl", { class: "stage-list" }, [
      ...stages.flatMap((s) => [el("dt", {}, [el("span", { class: `key seg-${s}` }), s]), el("dd", { text: millis(timings[s]) })]),
      el("dt", { class: "total", text: "total" }), el("dd", { class: "total", text: millis((timings || {}).total) }),
    ]),
  ]);
}

// A per-step trace (NGD's loss, mean shift's distance moved) as a small SVG line chart with its extremes and
// step range written out. `first` is the step of the first value (NGD's trace starts before step 1, at 0).
const CHAR_PX = 6.5;  // width of one digit of the 10 px axis labels (style.css), so no label is clipped

export function lossChart(values, quantity, first = 0) {
  const width = 280, height = 120;
  const low = Math.min(...values), high = Math.max(...values);
  const span = high - low || 1;
  let digits = 3;  // significant digits: as few as make the two ends read differently
  while (digits < 8 && high.toPrecision(digits) === low.toPrecision(digits)) digits += 1;
  const tick = (v) => v.toPrecision(digits);
  const pad = { left: 8 + CHAR_PX * Math.max(tick(high).length, tick(low).length), right: 10, top: 10, bottom: 26 };
  const last = first + values.length - 1;
  const across = width - pad.left - pad.right;
  const x = (i) => pad.left + (values.length === 1 ? across / 2 : (i / (values.length - 1)) * across);
  const y = (v) => pad.top + (1 - (v - low) / span) * (height - pad.top - pad.bottom);
  const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const label = values.length === 1 ? `${quantity} at step ${first}: ${tick(values[0])}`
    : `${quantity} over steps ${first} to ${last}: from ${tick(values[0])} to ${tick(values[values.length - 1])}`;
  return svg("svg", { class: "loss", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label }, [
    svg("title", { text: label }),
    svg("line", { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right, y2: height - pad.bottom, class: "axis" }),
    svg("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: height - pad.bottom, class: "axis" }),
    svg("text", { x: pad.left - 4, y: pad.top + 8, "text-anchor": "end", text: tick(high) }),
    svg("text", { x: pad.left - 4, y: height - pad.bottom, "text-anchor": "end", text: tick(low) }),
    svg("text", { x: pad.left, y: height - 8, text: `step ${first}` }),
    values.length > 1 ? svg("text", { x: width - pad.right, y: height - 8, "text-anchor": "end", text: `step ${last}` }) : null,
    svg("polyline", { points, class: "line" }),
    ...values.map((v, i) => svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: "dot" })),
  ]);
}
