// One card per strategy: its answer, routing before/after, timings, neighbours and loss curve.
import { lossChart, routingChart, timingChart } from "./charts.js";
import { el, fixed } from "./dom.js";
import { verifyControls } from "./feedback.js";

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

// One entry per question the neighbours ask: copies of one question (asked of several images) are one entry
// with their count and answers (the record's neighbour_questions); every number named in words.
function neighbourList(record) {
  const groups = record.neighbour_questions || [];
  if (!groups.length) return el("p", { class: "hint", text: "No neighbours used by this strategy." });
  const ids = (group) => (record.neighbours || []).filter((n) => n.question === group.question && n.task === group.task).map((n) => n.id);
  return el("ol", { class: "neighbours" }, groups.map((group) => el("li", { "data-count": group.count }, [
    el("div", { class: "neighbour-question", text: `“${group.question}” (${group.task})${group.count > 1 ? ` × ${group.count}` : ""}` }),
    el("div", { class: "neighbour-stats" }, [
      `answer${Object.keys(group.answers).length > 1 ? "s" : ""} `,
      ...Object.entries(group.answers).flatMap(([answer, count], i) => [i ? ", " : "", el("strong", { text: answer }), count > 1 ? ` ×${count}` : ""]),
      " · ",
      group.similarity == null ? "" : `similarity ${fixed(group.similarity)} · `,
      `kernel weight ${fixed(group.weight)}`,
    ]),
    el("div", { class: "mono neighbour-id", text: ids(group).join(", ") }),
  ])));
}

function verdict(answer, expected) {
  if (!expected) return null;
  const right = answer.trim().toLowerCase() === expected.trim().toLowerCase();
  return el("span", { class: `verdict ${right ? "right" : "wrong"}`, text: right ? "✓ matches expected" : `✗ expected ${expected}` });
}

function finished(strategy, reply, card, expected, runIndex) {
  const record = reply.r2t2 || {};
  const answer = reply.choices[0].message.content;
  const extras = [];
  if (typeof record.changed_answer === "boolean") extras.push(el("p", { class: "hint", text: record.changed_answer ? "re-routing changed the answer" : "re-routing did not change the answer" }));
  if (record.index) extras.push(el("p", { class: "hint", text: `index ${record.index.name} v${record.index.version}` }));
  // NGD records the neighbours' loss before each step and after the last (step 0 on); mean shift the distance
  // each update moved (update 1 on), and finds its neighbours among reference routings.
  const meanshift = record.neighbour_space === "routing";
  const trace = ((meanshift ? record.distance_moved : record.neighbour_loss) || []).filter((v) => typeof v === "number");
  const quantity = meanshift ? "distance moved" : "neighbour loss";
  return [
    el("p", { class: "answer" }, [el("span", { class: "answer-label", text: "answer" }), el("strong", { class: "answer-text", text: answer }), verdict(answer, expected)]),
    verifyControls(strategy, reply, answer, runIndex),
    el("p", { class: `why${record.guard && record.guard.fired || record.fallback ? " kept" : ""}`, text: record.explanation || "" }),
    ...extras,
    section("routing before → after", routingChart(record, card)),
    section("timings", timingChart(record.timings)),
    section(meanshift ? "neighbours in routing space" : "neighbours", neighbourList(record)),
    section(meanshift ? "distance moved per update" : "loss curve",
      trace.length ? lossChart(trace, quantity, meanshift ? 1 : 0) : el("p", { class: "hint", text: "No per-step trace for this strategy." })),
  ];
}

// state: {phase: "idle" | "running" | "done" | "failed", reply?, message?}; runIndex: the index the run asked for
// (undefined: the model's default), which a verified answer grows.
export function strategyCard(strategy, state, card, expected, runIndex) {
  let body;
  if (state.phase === "running") body = [el("p", { class: "hint", text: "running…" })];
  else if (state.phase === "failed") body = [el("p", { class: "alert error-message", role: "alert" }, [el("strong", { text: "Error: " }), state.message])];
  else if (state.phase === "done") body = finished(strategy, state.reply, card, expected, runIndex);
  else body = [el("p", { class: "hint", text: "Not run yet." })];
  return el("article", { class: `card ${state.phase}`, "data-strategy": strategy, "aria-busy": state.phase === "running" ? "true" : "false" }, [
    el("h3", {}, [el("span", { class: "strategy-name", text: strategy }), " ", el("span", { class: "strategy-what", text: TITLES[strategy] })]),
    ...body,
  ]);
}
