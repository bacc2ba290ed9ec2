// Wires the page: models, samples and image input, the four-strategy comparison, and the indexes panel.
import { ask, listModels, listSamples } from "./api.js";
import { el } from "./dom.js";
import { initFeedback } from "./feedback.js";
import { initIndexes, refreshIndexes, setRebuildModels } from "./indexes.js";
import { STRATEGIES, strategyCard } from "./results.js";

const $ = (id) => document.getElementById(id);
// cards: model id -> its /v1/models entry; states: strategy -> its card's state in the last run.
const state = { cards: new Map(), indexes: [], image: null, sample: null, states: {}, cardOfRun: null, expectedOfRun: null,
  indexOfRun: undefined };

function banner(message) {
  const box = $("banner");
  box.hidden = !message;
  box.replaceChildren(...(message ? [el("strong", { text: "Error: " }), message] : []));
}

window.addEventListener("error", (event) => banner(event.message));
window.addEventListener("unhandledrejection", (event) => banner(String(event.reason && event.reason.message || event.reason)));

const selectedCard = () => state.cards.get($("model").value);

function expectedAnswer() {
  const sample = state.sample;
  return sample && state.image === sample.image && $("question-text").value.trim() === sample.question ? sample.answer : null;
}

function renderResults() {
  $("results").replaceChildren(...STRATEGIES.map((s) => strategyCard(s, state.states[s] || { phase: "idle" }, state.cardOfRun,
    state.expectedOfRun, state.indexOfRun)));
}

function describeModel() {
  const card = selectedCard();
  if (!card) return;
  const describe = (row) => `${row.name} (${row.kind === "lm" ? `LM layer ${row.layer}, ` : ""}${row.experts.length} experts)`;
  $("model-info").textContent = `routing rows ${card.routing_rows.map(describe).join(", ")}; ` +
    `LM re-routing ${card.lm_routing ? "available" : "not available"}; default index ${card.default_index}`;
  $("opt-target").disabled = !card.lm_routing;
  if (!card.lm_routing) $("opt-target").value = "";
  const own = state.indexes.filter((i) => i.model === card.id && i.name !== card.default_index);
  const previous = $("opt-index").value;
  $("opt-index").replaceChildren(el("option", { value: "", text: `${card.default_index} (model default)` }),
    ...own.map((i) => el("option", { value: i.name, text: i.name })));
  if ([...$("opt-index").options].some((o) => o.value === previous)) $("opt-index").value = previous;
}

function setImage(url, name, sample = null) {
  state.image = url;
  state.sample = sample;
  const preview = $("preview");
  preview.src = url;
  preview.alt = `chosen image: ${name}`;
  preview.hidden = !url.startsWith("data:image/");  // anything else is still sent: the API says what is wrong
  $("image-name").textContent = `Image: ${name}`;
  if (sample) $("question-text").value = sample.question;
  showExpected();
}

function showExpected() {
  const expected = expectedAnswer();
  const reworded = expected && state.sample.reworded_from ? `; the question rewords “${state.sample.reworded_from}”` : "";
  $("expected").textContent = expected ? `Expected answer (easy-VQA label): ${expected}${reworded}` : "";
}

function readFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.addEventListener("load", () => setImage(reader.result, file.name));
  reader.addEventListener("error", () => banner(`could not read ${file.name}`));
  reader.readAsDataURL(file);
}

function options() {
  const r2t2 = {};
  const number = (id) => ($(id).value === "" ? undefined : Number($(id).value));
  r2t2.k = number("opt-k");
  r2t2.steps = number("opt-steps");
  r2t2.lr = number("opt-lr");
  r2t2.kernel = $("opt-kernel").value || undefined;
  r2t2.target = $("opt-target").value || undefined;
  if ($("opt-neighbourhood").value) {
    r2t2.neighbourhood = $("opt-neighbourhood").value;
    r2t2.epsilon = number("opt-epsilon");
  }
  r2t2.index = $("opt-index").value || undefined;
  return r2t2;
}

async function compare(event) {
  event.preventDefault();
  const question = $("question-text").value.trim();
  const missing = [!selectedCard() && "a model", !state.image && "an image", !question && "a question"].filter(Boolean);
  if (missing.length) {
    $("run-status").textContent = `Choose ${missing.join(", ")} first.`;
    return;
  }
  const model = $("model").value;
  const shared = options();
  state.cardOfRun = selectedCard();
  state.expectedOfRun = expectedAnswer();
  state.indexOfRun = shared.index;
  $("run").disabled = true;
  $("run-status").textContent = `Running ${STRATEGIES.length} requests on ${model}…`;
  const started = performance.now();
  STRATEGIES.forEach((s) => { state.states[s] = { phase: "running" }; });
  renderResults();
  await Promise.all(STRATEGIES.map(async (strategy) => {
    try {
      state.states[strategy] = { phase: "done", reply: await ask(model, question, state.image, { ...shared, strategy }) };
    } catch (err) {
      state.states[strategy] = { phase: "failed", message: err.message };
    }
    renderResults();
  }));
  const failed = STRATEGIES.filter((s) => state.states[s].phase === "failed").length;
  $("run-status").textContent = `Finished in ${((performance.now() - started) / 1000).toFixed(1)} s` +
    (failed ? `; ${failed} of ${STRATEGIES.length} failed.` : ".");
  $("run").disabled = false;
}

async function loadModels() {
  try {
    const { data } = await listModels();
    data.forEach((card) => state.cards.set(card.id, card));
    $("model").replaceChildren(...data.map((c) => el("option", { value: c.id, text: c.id })));
    setRebuildModels(data);
    describeModel();
  } catch (err) {
    banner(`the served models could not be listed: ${err.message}`);
  }
}

async function loadSamples() {
  try {
    const { data } = await listSamples();
    $("samples").replaceChildren(...data.map((sample) => el("button", {
      type: "button", class: "sample", title: sample.question, "aria-label": `Sample: ${sample.question}`,
      onclick: () => setImage(sample.image, `${sample.id}.png`, sample),
    }, [el("img", { src: sample.image, alt: "" }), el("span", { text: sample.question })])));
  } catch (err) {
    $("samples").replaceChildren(el("p", { class: "alert", role: "alert", text: `samples unavailable: ${err.message}` }));
  }
}

function wire() {
  $("ask-form").addEventListener("submit", compare);
  $("model").addEventListener("change", describeModel);
  $("question-text").addEventListener("input", showExpected);
  $("image-file").addEventListener("change", (event) => readFile(event.target.files[0]));
  $("opt-neighbourhood").addEventListener("change", () => { $("opt-epsilon").disabled = !$("opt-neighbourhood").value; });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    readFile(event.dataTransfer.files[0]);
  });
  initIndexes((indexes) => { state.indexes = indexes; describeModel(); });
  initFeedback();
}

async function main() {
  wire();
  renderResults();
  const [indexes] = await Promise.all([refreshIndexes(), loadSamples()]);
  state.indexes = indexes;
  await loadModels();
  document.body.dataset.ready = "true";
}

main();
