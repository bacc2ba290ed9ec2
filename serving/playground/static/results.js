// One card per strategy: its answer, routing before/after, timings, neighbours and loss curve.
import { lossChart, routingChart, timingChart } from "./charts.js";
import { el, fixed } from "./dom.js";

export const STRATEGIES = ["none", "kernel", "meanshift", "ngd"];

const TITLES = {
  none: "the router's own weights",
  kernel: "kernel regression + line search",
  meanshift: "mode finding in routing space",
  ngd: "neighbourhood gradient descent",
};

function section(title, body) {
  return el("section", { class: "part" }, [el("h4", { text: title }), body]);
}

// One entry per neighbour, every number named in words (ids are long: they get a line of their own).
function neighbourList(neighbours) {
  if (!neighbours || !neighbours.length) return el("p", { class: "hint", text: "No neighbours used by this strategy." });
  return el("ol", { class: "neighbours" }, neighbours.map((n) => el("li", {}, [
    el("div", { class: "mono neighbour-id", text: n.id }),
    ...(n.question == null ? [] : [el("div", { class: "neighbour-question", text: `“${n.question}” (${n.task})` })]),
    el("div", { class: "neighbour-stats" }, [
      ...(n.answer == null ? [] : ["answer ", el("strong", { text: n.answer }), " · "]),
      n.similarity == null ? "" : `similarity ${fixed(n.similarity)} · `,
      `kernel weight ${fixed(n.weight)}`,
    ]),
  ])));
}

function verdict(answer, expected) {
  if (!expected) return null;
  const right = answer.trim().toLowerCase() === expected.trim().toLowerCase();
  return el("span", { class: `verdict ${right ? "right" : "wrong"}`, text: right ? "✓ matches expected" : `✗ expected ${expected}` });
}

function finished(reply, card, expected) {
  const record = reply.r2t2 || {};
  const answer = reply.choices[0].message.content;
  const extras = [];
  if (record.fallback) extras.push(el("p", { class: "note", text: `fallback: ${record.fallback}` }));
  if (typeof record.moved === "number") extras.push(el("p", { class: "hint", text: `moved ${fixed(record.moved)} of the routing weight` }));
  if (typeof record.toward_neighbours === "number") extras.push(el("p", { class: "hint", text: `line search went ${fixed(record.toward_neighbours)} of the way to the neighbours' routing` }));
  if (typeof record.changed_answer === "boolean") extras.push(el("p", { class: "hint", text: record.changed_answer ? "re-routing changed the answer" : "re-routing did not change the answer" }));
  if (record.index) extras.push(el("p", { class: "hint", text: `index ${record.index.name} v${record.index.version}` }));
  // Mean shift records the distance moved per step and neighbours from the routing pool; NGD a loss per step.
  const meanshift = record.neighbour_space === "routing";
  const trace = ((meanshift ? record.distance_moved : record.neighbour_loss) || []).filter((v) => typeof v === "number");
  const quantity = meanshift ? "distance moved" : "neighbour loss";
  return [
    el("p", { class: "answer" }, [el("span", { class: "answer-label", text: "answer" }), el("strong", { class: "answer-text", text: answer }), verdict(answer, expected)]),
    ...extras,
    section("routing before → after", routingChart(record, card)),
    section("timings", timingChart(record.timings)),
    section(meanshift ? "neighbours in routing space" : "neighbours", neighbourList(record.neighbours)),
    section(meanshift ? "distance moved per step" : "loss curve",
      trace.length > 1 ? lossChart(trace, quantity) : el("p", { class: "hint", text: "No per-step trace for this strategy." })),
  ];
}

// state: {phase: "idle" | "running" | "done" | "failed", reply?, message?}
export function strategyCard(strategy, state, card, expected) {
  let body;
  if (state.phase === "running") body = [el("p", { class: "hint", text: "running…" })];
  else if (state.phase === "failed") body = [el("p", { class: "alert error-message", role: "alert" }, [el("strong", { text: "Error: " }), state.message])];
  else if (state.phase === "done") body = finished(state.reply, card, expected);
  else body = [el("p", { class: "hint", text: "Not run yet." })];
  return el("article", { class: `card ${state.phase}`, "data-strategy": strategy, "aria-busy": state.phase === "running" ? "true" : "false" }, [
    el("h3", {}, [el("span", { class: "strategy-name", text: strategy }), " ", el("span", { class: "strategy-what", text: TITLES[strategy] })]),
    ...body,
  ]);
}
