// The playground: calls the service's public API exactly as any client does (the same routes,
// limits and errors, with the key typed in the bar) and shows what came back.
"use strict";

const MAX_SENTENCES = 16; // one /similarity call per row of the matrix
const MAX_LOGGED_CALLS = 30;
const byId = (id) => document.getElementById(id);
let paraphraseThreshold = null; // from the model card, once /info answered

/** An answer of the API that is not a success, told as the API told it. */
class ApiError extends Error {
  constructor(call, status, message) {
    super(`${call}: ${status ? `${status} ` : ""}${message}`);
    this.status = status;
  }
}

/** The message of an error body, in the native or the OpenAI shape. */
function errorMessage(body, fallback) {
  if (body && typeof body.error === "string") {
    return body.error;
  }
  if (body && body.error && typeof body.error.message === "string") {
    return body.error.message;
  }
  return fallback;
}

/** Call `route` of the API; its JSON body and headers, or an ApiError. Each call is logged. */
async function call(method, route, body) {
  const name = `${method} /${route}`;
  const headers = { ...GensenKey.headers() };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  const started = performance.now();
  let response;
  let data = null;
  try {
    response = await fetch(route, { method, headers, body: JSON.stringify(body) });
    const text = await response.text();
    data = text ? JSON.parse(text) : null;
  } catch (error) {
    logCall(name, response ? response.status : "failed", performance.now() - started);
    const what = response ? "the answer is not JSON" : "the service cannot be reached";
    throw new ApiError(name, 0, what);
  }
  logCall(name, response.status, performance.now() - started);
  if (!response.ok) {
    let message = errorMessage(data, response.statusText);
    if (response.status === 401) {
      message += ": type the service's API key in the bar above";
    }
    throw new ApiError(name, response.status, message);
  }
  return { data, headers: response.headers };
}

/** The values of `calls` once all have ended; else the first error, in the order of `calls`
 * (not the order they failed in, so that the same input always shows the same error). */
async function all(calls) {
  const ended = await Promise.allSettled(calls);
  const failed = ended.find((outcome) => outcome.status === "rejected");
  if (failed) {
    throw failed.reason;
  }
  return ended.map((outcome) => outcome.value);
}

/** Add a call to the table of calls, newest first. */
function logCall(name, status, milliseconds) {
  const log = byId("call-log");
  const row = document.createElement("tr");
  row.className = typeof status === "number" && status < 400 ? "ok" : "bad";
  for (const text of [name, String(status), `${milliseconds.toFixed(1)} ms`]) {
    row.appendChild(element("td", text));
  }
  log.prepend(row);
  while (log.children.length > MAX_LOGGED_CALLS) {
    log.lastElementChild.remove();
  }
}

/** A new element with `text`, and `className` if given. */
function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) {
    node.textContent = text;
  }
  if (className) {
    node.className = className;
  }
  return node;
}

function showError(error) {
  const box = byId("error");
  box.textContent = error.message;
  box.hidden = false;
}

function clearError() {
  byId("error").hidden = true;
}

/** Run `action` with `button` disabled; any error is shown above the sections. The form's
 * `data-state` says how the last action went: running, done or failed. */
async function busy(button, action) {
  const form = button.form;
  button.disabled = true;
  form.dataset.state = "running";
  clearError();
  try {
    await action();
    form.dataset.state = "done";
  } catch (error) {
    showError(error);
    form.dataset.state = "failed";
  } finally {
    button.disabled = false;
  }
}

// ---- the model card

async function loadModel() {
  const { data } = await call("GET", "info");
  const fields = {
    "model-name": data.model_id,
    "model-version": data.model_version,
    "model-dim": data.dim,
    "model-provider": data.provider,
    "model-max-tokens": data.max_tokens,
    "model-max-inputs": data.limits.max_inputs,
  };
  for (const [id, value] of Object.entries(fields)) {
    byId(id).textContent = String(value);
  }
  paraphraseThreshold = data.card.paraphrase_threshold ?? null;
}

// ---- similarity

function sentencesTyped() {
  const sentences = byId("sentences")
    .value.split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  if (sentences.length < 2 || sentences.length > MAX_SENTENCES) {
    throw new Error(`Type from 2 to ${MAX_SENTENCES} sentences, one a line.`);
  }
  return sentences;
}

async function compare() {
  const sentences = sentencesTyped();
  const rows = sentences.map((source) =>
    call("POST", "similarity", { inputs: { source_sentence: source, sentences } }),
  );
  const answers = await all([
    ...rows,
    call("POST", "tokenize", { inputs: sentences }),
    call("POST", "embed", { inputs: sentences }),
  ]);
  const [tokens, embedded] = answers.slice(sentences.length);
  const scores = answers.slice(0, sentences.length);
  drawHeatmap(sentences, scores.map((answer) => answer.data));
  drawTokens(sentences, tokens.data);
  const h = embedded.headers;
  byId("embedded").textContent =
    `POST /embed embedded ${h.get("x-embedded-tokens")} tokens in ` +
    `${h.get("x-embedded-windows")} windows (${h.get("x-truncated-inputs")} inputs truncated).`;
}

/** A blue (similar) to red (opposite) colour for a cosine in [-1, 1]. */
function cellColour(value) {
  const v = Math.max(-1, Math.min(1, value));
  const hue = v >= 0 ? 212 : 4;
  const lightness = 97 - 55 * Math.abs(v);
  return `hsl(${hue} 65% ${lightness}%)`;
}

function drawHeatmap(sentences, matrix) {
  const map = byId("heatmap");
  map.replaceChildren();
  map.style.setProperty("--columns", String(sentences.length));
  map.appendChild(element("div", "", "corner"));
  sentences.forEach((_, j) => map.appendChild(element("div", String(j + 1), "column")));
  sentences.forEach((sentence, i) => {
    const label = element("div", `${i + 1}. ${sentence}`, "row");
    label.title = sentence;
    map.appendChild(label);
    matrix[i].forEach((value, j) => {
      const cell = element("div", value.toFixed(2), "cell");
      cell.dataset.row = String(i);
      cell.dataset.column = String(j);
      cell.dataset.value = String(value);
      cell.title = `${i + 1} · ${j + 1}: ${value}`;
      cell.style.setProperty("background-color", cellColour(value));
      cell.classList.toggle("dark", Math.abs(value) > 0.55);
      map.appendChild(cell);
    });
  });
}

function drawTokens(sentences, tokens) {
  const list = byId("tokens");
  list.replaceChildren();
  sentences.forEach((sentence, i) => {
    const item = element("li");
    item.appendChild(element("span", `${tokens[i].length} tokens`, "count"));
    for (const token of tokens[i]) {
      item.appendChild(element("span", token.text, token.special ? "token special" : "token"));
    }
    item.title = sentence;
    list.appendChild(item);
  });
}

// ---- paraphrase and NLI

async function judge() {
  const premise = byId("premise").value.trim();
  const hypothesis = byId("hypothesis").value.trim();
  const [paraphrase, nli] = await all([
    call("POST", "paraphrase", { pairs: [[premise, hypothesis]] }),
    call("POST", "nli", { pairs: [{ premise, hypothesis }] }),
  ]);
  const verdict = paraphrase.data[0];
  byId("paraphrase-verdict").textContent = verdict.paraphrase ? "paraphrase" : "not a paraphrase";
  byId("paraphrase-threshold").textContent =
    paraphraseThreshold === null ? "" : `a paraphrase from a probability of ${paraphraseThreshold}`;
  const chosen = verdict.paraphrase ? "paraphrase" : null;
  drawBars(byId("paraphrase-bars"), { paraphrase: verdict.probability }, chosen);
  const inference = nli.data[0];
  byId("nli-label").textContent = inference.label;
  drawBars(byId("nli-bars"), inference.scores, inference.label);
}

/** One bar per named probability; the bar of `chosen` stands out. */
function drawBars(box, probabilities, chosen) {
  box.replaceChildren();
  for (const [name, probability] of Object.entries(probabilities)) {
    const bar = element("div", undefined, name === chosen ? "bar-row chosen" : "bar-row");
    bar.dataset.name = name;
    bar.appendChild(element("span", name, "bar-name"));
    const track = element("span", undefined, "bar-track");
    const fill = element("span", undefined, "bar-fill");
    fill.style.setProperty("width", `${(100 * probability).toFixed(1)}%`);
    track.appendChild(fill);
    bar.appendChild(track);
    bar.appendChild(element("span", probability.toFixed(3), "bar-value"));
    box.appendChild(bar);
  }
}

// ---- wiring

function start() {
  const load = () => loadModel().catch(showError);
  GensenKey.bind(byId("key"), () => {
    clearError();
    load();
  });
  byId("similarity-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy(byId("compare"), compare);
  });
  byId("pair-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy(byId("judge"), judge);
  });
  load();
}

start();
