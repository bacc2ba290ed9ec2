// The indexes panel: list, describe (versions, sizes, manifest), how far verified answers grew each index, and an
// admin rebuild whose job is polled.
import { describeIndex, getJob, indexGrowth, listIndexes, startRebuild } from "./api.js";
import { el, fixed } from "./dom.js";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
// The last list of indexes, and per index its references and those from verified answers (the /metrics gauges).
const shown = { indexes: [], growth: new Map() };
const count = (n) => Number(n).toLocaleString("en-US");

function showError(message) {
  const box = $("indexes-error");
  box.hidden = !message;
  box.replaceChildren(...(message ? [el("strong", { text: "Error: " }), message] : []));
}

function detail(index) {
  const versions = el("table", {}, [
    el("caption", { text: `${index.name}: versions` }),
    el("thead", {}, el("tr", {}, ["version", "size", "created", "dataset"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, index.version_details.map((v) => el("tr", {}, [
      el("td", { text: v.version === index.current_version ? `${v.version} (serving)` : v.version }),
      el("td", { class: "num", text: v.size }),
      el("td", { text: v.created_at }),
      el("td", { class: "mono", text: JSON.stringify(v.dataset) }),
    ]))),
  ]);
  return [
    el("h3", { text: `Index ${index.name}` }),
    el("div", { class: "table-wrap" }, versions),
    el("details", { open: true }, [el("summary", { text: "manifest of the serving version" }),
      el("pre", { class: "manifest", text: JSON.stringify(index.manifest, null, 2) })]),
  ];
}

async function show(name) {
  try {
    $("index-detail").replaceChildren(...detail(await describeIndex(name)));
    showError("");
  } catch (err) {
    showError(err.message);
  }
}

async function loadGrowth() {
  try {
    shown.growth = await indexGrowth();
  } catch {
    shown.growth = new Map();  // the counts are extra: the list stands without them
  }
}

// The references an index serves, verified answers included, where /metrics counts them; else its version's size.
function sizeCell(index) {
  const grown = shown.growth.get(index.name);
  if (!grown || grown.references === null) return el("td", { class: "num", text: index.size ?? "–" });
  return el("td", { class: "num growth", "data-references": grown.references, "data-verified": grown.verified }, [
    el("span", { class: "reference-count", text: `${count(grown.references)} references` }),
    el("span", { class: "verified-count", text: `(${count(grown.verified)} from verified answers)` }),
  ]);
}

function row(index) {
  return el("tr", { "data-index": index.name }, [
    el("th", { scope: "row", text: index.name }),
    el("td", { text: index.model ?? "–" }),
    el("td", { text: index.current_version === null ? "nothing" : `v${index.current_version}` }),
    el("td", { text: index.versions.join(", ") || "–" }),
    sizeCell(index),
    el("td", {}, el("button", { type: "button", onclick: () => show(index.name), text: "Details", "aria-label": `Details of ${index.name}` })),
  ]);
}

export async function refreshIndexes() {
  try {
    const [{ data, admin_enabled: admin }] = await Promise.all([listIndexes(), loadGrowth()]);
    shown.indexes = data;
    // The rebuild form only where the server accepts admin calls; otherwise how to turn them on.
    $("rebuild-form").hidden = !admin;
    $("rebuild-off").hidden = admin;
    $("indexes-table").tBodies[0].replaceChildren(...data.map(row));
    $("index-names").replaceChildren(...data.map((i) => el("option", { value: i.name })));
    showError("");
    return data;
  } catch (err) {
    showError(err.message);
    return [];
  }
}

// The counts again (after a verified answer was sent), in the rows already listed.
export async function refreshGrowth() {
  await loadGrowth();
  $("indexes-table").tBodies[0].replaceChildren(...shown.indexes.map(row));
}

function jobView(job) {
  const done = job.state === "succeeded" || job.state === "failed";
  return el("div", {}, [
    el("p", {}, [el("strong", { text: `Rebuild of ${job.index}: ` }), el("span", { class: "job-state", text: job.state }),
      job.version ? ` (version ${job.version})` : ""]),
    el("label", { for: "job-progress", text: `progress ${fixed(job.progress * 100, 0)} %` }),
    el("progress", { id: "job-progress", max: 1, value: job.progress }),
    job.error ? el("p", { class: "alert", role: "alert" }, [el("strong", { text: "Error: " }), job.error]) : null,
    done ? null : el("p", { class: "hint", text: `job ${job.id}` }),
  ]);
}

async function follow(job, onChange) {
  const view = $("rebuild-job");
  view.replaceChildren(jobView(job));
  while (job.state === "queued" || job.state === "running") {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    try {
      job = await getJob(job.id);
    } catch (err) {
      view.append(el("p", { class: "alert", role: "alert" }, [el("strong", { text: "Error: " }), err.message]));
      return;
    }
    view.replaceChildren(jobView(job));
  }
  onChange(await refreshIndexes());
}

async function rebuild(event, onChange) {
  event.preventDefault();
  const view = $("rebuild-job");
  const button = $("rebuild-start");
  let dataset;
  try {
    dataset = JSON.parse($("rebuild-dataset").value);
  } catch (err) {
    view.replaceChildren(el("p", { class: "alert", role: "alert" }, [el("strong", { text: "Error: " }), `the dataset spec is not valid JSON: ${err.message}`]));
    return;
  }
  const body = { dataset, model: $("rebuild-model").value || undefined };
  if ($("rebuild-cap").value) body.cap = Number($("rebuild-cap").value);
  button.disabled = true;
  try {
    await follow(await startRebuild($("rebuild-name").value.trim(), body, $("rebuild-token").value), onChange);
  } catch (err) {
    view.replaceChildren(el("p", { class: "alert", role: "alert" }, [el("strong", { text: "Error: " }), err.message]));
  } finally {
    button.disabled = false;
  }
}

export function setRebuildModels(cards) {
  $("rebuild-model").replaceChildren(...cards.map((c) => el("option", { value: c.id, text: c.id })));
}

// onChange(indexes) runs after every completed rebuild, so other panels can refresh their choices.
export function initIndexes(onChange) {
  $("indexes-refresh").addEventListener("click", async () => onChange(await refreshIndexes()));
  $("rebuild-form").addEventListener("submit", (event) => rebuild(event, onChange));
}
