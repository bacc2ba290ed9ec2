// Verified answers: under each answer whose record says until when it can be verified, a "right" button and a typed
// answer, sent to /v1/references with the token typed once (kept in this tab's sessionStorage).
import { listReferences, sendReferences } from "./api.js";
import { el } from "./dom.js";
import { refreshGrowth } from "./indexes.js";

const TOKEN_KEY = "r2t2.verifyToken";
const WAIT_S = 10;  // the server waits this long for the answer to be fitted...
const POLL_MS = 2000;
const POLL_TRIES = 30;  // ...then the page asks again, for up to a minute
const $ = (id) => document.getElementById(id);
// completion id -> {typed, busy, status, text}: kept while the cards are drawn again as other strategies finish.
const sent = new Map();

function entry(id) {
  if (!sent.has(id)) sent.set(id, { typed: "", busy: false, status: "", text: "" });
  return sent.get(id);
}

function token() {
  return $("verify-token").value.trim();
}

export function initFeedback() {
  const field = $("verify-token");
  try {
    field.value = sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    // Storage off: the token is typed again after a reload.
  }
  field.addEventListener("input", () => {
    try {
      sessionStorage.setItem(TOKEN_KEY, field.value);
    } catch {
      // As above.
    }
  });
}

function describe(fate, index) {
  if (fate.status === "added") {
    const steps = fate.how && fate.how.steps;
    const how = typeof steps === "number" ? ` (routing fitted in ${steps} step${steps === 1 ? "" : "s"})` : "";
    return `added to ${index} as a reference${how}`;
  }
  if (fate.status === "duplicate") return `duplicate: verified before (${fate.id})`;
  if (fate.status === "refused") return `refused: ${fate.reason || "no reason given"}`;
  if (fate.status === "accepted") return `accepted by ${index}; its routing is still being fitted…`;
  return fate.status;
}

// The entry's outcome and busy state, shown in its card if the card is on the page.
function update(id, changes) {
  const state = Object.assign(entry(id), changes);
  const box = document.querySelector(`.verify[data-completion-id="${CSS.escape(id)}"]`);
  if (!box) return;
  const outcome = box.querySelector(".verify-outcome");
  outcome.textContent = state.text;
  outcome.dataset.status = state.status;
  outcome.className = `verify-outcome ${state.status}`;
  box.querySelectorAll("button").forEach((button) => { button.disabled = state.busy; });
}

async function send(id, target, answer) {
  if (!token()) {
    update(id, { status: "no-token", text: "Type the token for verified answers first (above the results)." });
    $("verify-token").focus();
    return;
  }
  if (!answer) {
    update(id, { status: "no-answer", text: "Type the right answer first." });
    return;
  }
  update(id, { busy: true, status: "sending", text: `sending “${answer}”…` });
  try {
    const body = { model: target.model, index: target.index, references: [{ completion_id: id, answer }],
      wait_s: WAIT_S };
    const reply = await sendReferences(body, token());
    let fate = reply.data[0];
    update(id, { status: fate.status, text: describe(fate, reply.index) });
    for (let i = 0; fate.status === "accepted" && fate.id && i < POLL_TRIES; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const found = await listReferences(target.model, reply.index, fate.id, token());
      if (found.data.length) fate = found.data[0];
      update(id, { status: fate.status, text: describe(fate, reply.index) });
    }
  } catch (err) {
    update(id, { status: "error", text: `Error: ${err.message}` });
  } finally {
    update(id, { busy: false });
    await refreshGrowth();
  }
}

// The controls under one strategy's answer, or null when its reply cannot be verified (no verify_until).
export function verifyControls(strategy, reply, answer, runIndex) {
  const record = reply.r2t2 || {};
  if (!record.verify_until || !reply.id) return null;
  const id = reply.id;
  const state = entry(id);
  const target = { model: reply.model, index: (record.index && record.index.name) || runIndex || undefined };
  const until = new Date(record.verify_until);
  const typed = el("input", {
    id: `verify-answer-${strategy}`, class: "verify-answer", type: "text", autocomplete: "off", value: state.typed,
    placeholder: "the right answer", "aria-label": `the right answer for ${strategy}`,
    oninput: (event) => { state.typed = event.target.value; },
  });
  return el("div", { class: "verify", "data-completion-id": id, "data-strategy": strategy }, [
    el("form", { class: "verify-form", novalidate: true,
      onsubmit: (event) => { event.preventDefault(); send(id, target, typed.value.trim()); } }, [
      el("button", { id: `verify-right-${strategy}`, class: "verify-right", type: "button", disabled: state.busy,
        title: `send “${answer}” as the verified answer`, onclick: () => send(id, target, answer.trim()), text: "right" }),
      el("button", { id: `verify-send-${strategy}`, class: "verify-send", type: "submit", disabled: state.busy,
        title: "send the answer typed here as the verified answer", text: "the right answer is …" }),
      typed,
    ]),
    el("p", { id: `verify-outcome-${strategy}`, class: `verify-outcome ${state.status}`, role: "status",
      "data-status": state.status, text: state.text }),
    el("p", { class: "hint", text: `can be verified until ${Number.isNaN(until.getTime()) ? record.verify_until
      : until.toLocaleTimeString()}` }),
  ]);
}
