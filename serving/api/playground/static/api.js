// The public HTTP API, called exactly as any client calls it. URLs are relative to the page
// (…/playground/), so the page works under any route prefix.

export class ApiFailure extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiFailure";
    this.status = status;
  }
}

function url(path) {
  return new URL(`..${path}`, document.baseURI).href;
}

// JSON body of a reply, or an ApiFailure carrying the API's own error message.
export async function call(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let reply;
  try {
    reply = await fetch(url(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiFailure(`could not reach the server (${err.message})`, 0);
  }
  const text = await reply.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: reported below with the status.
  }
  if (!reply.ok) {
    const message = data && data.error && data.error.message ? data.error.message : `HTTP ${reply.status}: ${text.slice(0, 200)}`;
    throw new ApiFailure(message, reply.status);
  }
  if (data === null) throw new ApiFailure(`HTTP ${reply.status}: the reply is not JSON`, reply.status);
  return data;
}

export const listModels = () => call("GET", "/v1/models");
export const listIndexes = () => call("GET", "/v1/indexes");
export const describeIndex = (name) => call("GET", `/v1/indexes/${encodeURIComponent(name)}`);
export const getJob = (id) => call("GET", `/v1/jobs/${encodeURIComponent(id)}`);
export const startRebuild = (name, body, token) =>
  call("POST", `/v1/indexes/${encodeURIComponent(name)}/rebuild`, { body, token });
export const listSamples = () => call("GET", "/playground/samples");
export const sendReferences = (body, token) => call("POST", "/v1/references", { body, token });
export function listReferences(model, index, id, token) {
  const query = new URLSearchParams({ model, id, ...(index ? { index } : {}) });
  return call("GET", `/v1/references?${query}`, { token });
}

// Per index: the references it serves and how many of them verified answers added, from the two /metrics gauges
// (present for indexes that have taken verified answers).
export async function indexGrowth() {
  let reply;
  try {
    reply = await fetch(url("/metrics"));
  } catch (err) {
    throw new ApiFailure(`could not reach the server (${err.message})`, 0);
  }
  if (!reply.ok) throw new ApiFailure(`HTTP ${reply.status} from /metrics`, reply.status);
  const growth = new Map();
  const gauge = /^r2t2_(index|feedback)_references\{index="((?:[^"\\]|\\.)*)"\}\s+(\S+)/;
  for (const line of (await reply.text()).split("\n")) {
    const found = gauge.exec(line);
    if (!found) continue;
    const name = found[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    const entry = growth.get(name) || { references: null, verified: 0 };
    if (found[1] === "index") entry.references = Number(found[3]);
    else entry.verified = Number(found[3]);
    growth.set(name, entry);
  }
  return growth;
}

// One chat completion with the r2t2 extension: the image and the question in one user message.
export function ask(model, question, imageUrl, r2t2) {
  return call("POST", "/v1/chat/completions", {
    body: {
      model,
      temperature: 0,
      r2t2,
      messages: [{ role: "user", content: [
        { type: "text", text: question },
        { type: "image_url", image_url: { url: imageUrl } },
      ] }],
    },
  });
}
